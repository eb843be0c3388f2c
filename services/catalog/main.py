"""The catalog service process: `python -m services.catalog.main serve`."""

from __future__ import annotations

import sys

from sqlalchemy.ext.asyncio import AsyncEngine

from libs.grpc.server import ServiceDefinition
from libs.process import ServiceProcess, main
from libs.runtime import Runtime
from services.catalog import rpc


class CatalogProcess(ServiceProcess):
    name = "catalog"

    async def build(
        self, runtime: Runtime, engine: AsyncEngine | None
    ) -> list[ServiceDefinition]:
        return [rpc.definition(rpc.CatalogServicer())]


if __name__ == "__main__":
    main(CatalogProcess(), sys.argv[1:])
