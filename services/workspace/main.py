"""The workspace service process: `python -m services.workspace.main serve`."""

from __future__ import annotations

import sys

from sqlalchemy.ext.asyncio import AsyncEngine

from libs.grpc.server import ServiceDefinition
from libs.process import ServiceProcess, main
from libs.runtime import Runtime
from services.workspace import rpc


class WorkspaceProcess(ServiceProcess):
    name = "workspace"

    async def build(
        self, runtime: Runtime, engine: AsyncEngine | None
    ) -> list[ServiceDefinition]:
        return [rpc.definition(rpc.WorkspaceServicer())]


if __name__ == "__main__":
    main(WorkspaceProcess(), sys.argv[1:])
