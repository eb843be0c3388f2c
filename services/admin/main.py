"""The admin service process: `python -m services.admin.main serve`."""

from __future__ import annotations

import sys

from sqlalchemy.ext.asyncio import AsyncEngine

from libs.grpc.server import ServiceDefinition
from libs.process import ServiceProcess, main
from libs.runtime import Runtime
from services.admin import rpc


class AdminProcess(ServiceProcess):
    name = "admin"

    async def build(
        self, runtime: Runtime, engine: AsyncEngine | None
    ) -> list[ServiceDefinition]:
        return [rpc.definition(rpc.AdminServicer())]


if __name__ == "__main__":
    main(AdminProcess(), sys.argv[1:])
