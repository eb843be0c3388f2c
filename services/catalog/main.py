"""The catalog service process.

python -m services.catalog.main migrate   # schema up to date, then seed models
python -m services.catalog.main serve
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from libs.db import session_factory
from libs.grpc.server import ServiceDefinition
from libs.logs import get_logger
from libs.process import ServiceProcess, main
from libs.runtime import Runtime
from services.catalog import rpc, seed
from services.catalog.models import SCHEMA
from services.catalog.service import CatalogService

log = get_logger(__name__)

# How often each replica asks whether the catalog changed (one tiny query).
VERSION_POLL_SECONDS = 1.0


class CatalogProcess(ServiceProcess):
    name = "catalog"
    schema = SCHEMA
    migrations_dir = Path(__file__).parent / "migrations"

    def __init__(self, poll_interval: float = VERSION_POLL_SECONDS) -> None:
        self.service = CatalogService()
        self._poll_interval = poll_interval
        self._sessions: async_sessionmaker[AsyncSession] | None = None

    async def build(
        self, runtime: Runtime, engine: AsyncEngine | None
    ) -> list[ServiceDefinition]:
        assert engine is not None
        self._sessions = session_factory(engine)
        async with self._sessions() as db:
            await self.service.refresh(db)
        servicer = rpc.CatalogServicer(self.service, self._sessions)
        return [rpc.definition(servicer)]

    async def run_background(self) -> None:
        assert self._sessions is not None
        while True:
            await asyncio.sleep(self._poll_interval)
            try:
                async with self._sessions() as db:
                    await self.service.refresh(db)
            except Exception:
                # Keep serving the copy we have; the next poll tries again.
                log.exception("catalog.refresh_failed")

    async def after_migrate(self, engine: AsyncEngine) -> None:
        """Seed the models that are missing once the schema is current."""
        async with session_factory(engine).begin() as db:
            inserted = await seed.seed_catalog(db)
        log.info("catalog.seed_checked", inserted=len(inserted))


if __name__ == "__main__":
    main(CatalogProcess(), sys.argv[1:])
