"""The generation service process.

python -m services.generation.main migrate
python -m services.generation.main serve

It serves GenerationService and CommunityService; the jobs themselves are
run by workers (`python -m services.generation.worker`), which scale apart.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from libs.db import read_session_factory, session_factory
from libs.flags import FeatureFlags
from libs.grpc.server import ServiceDefinition
from libs.process import ServiceProcess, main
from libs.runtime import Runtime
from services.generation import rpc
from services.generation.community import rpc as community_rpc
from services.generation.events import EventHub
from services.generation.fal import WebhookVerifier
from services.generation.lifecycle import Lifecycle
from services.generation.models import SCHEMA
from services.generation.service import GenerationService
from services.generation.storage import LocalMediaStore, MediaStore
from services.generation.upstream import Platform


class GenerationProcess(ServiceProcess):
    name = "generation"
    schema = SCHEMA
    migrations_dir = Path(__file__).parent / "migrations"

    def __init__(self) -> None:
        self._events: EventHub | None = None
        self._verifier: WebhookVerifier | None = None
        self._store: MediaStore | None = None
        self._flags: FeatureFlags | None = None

    async def build(
        self, runtime: Runtime, engine: AsyncEngine | None
    ) -> list[ServiceDefinition]:
        assert engine is not None
        settings = runtime.settings
        sessions = session_factory(engine)
        platform = Platform(runtime.upstreams)
        self._store = LocalMediaStore.from_settings(settings)
        self._events = EventHub(engine)
        self._events.start()
        self._verifier = WebhookVerifier.from_settings(settings)
        self._flags = FeatureFlags(runtime.upstreams, settings.admin_poll_interval)
        self._flags.start()
        service = GenerationService(
            sessions,
            platform,
            Lifecycle(sessions, platform, self._store),
            self._store,
            self._flags,
        )
        servicer = rpc.GenerationServicer(
            service, self._events, self._verifier, read_session_factory(engine)
        )
        return [
            rpc.definition(servicer),
            community_rpc.build(runtime, engine, self._flags),
        ]

    async def close(self) -> None:
        if self._flags is not None:
            await self._flags.stop()
        if self._events is not None:
            await self._events.close()
        if self._verifier is not None:
            await self._verifier.close()
        if self._store is not None:
            await self._store.close()


if __name__ == "__main__":
    main(GenerationProcess(), sys.argv[1:])
