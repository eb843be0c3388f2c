"""The generation service process: `python -m services.generation.main serve`."""

from __future__ import annotations

import sys

from sqlalchemy.ext.asyncio import AsyncEngine

from libs.grpc.server import ServiceDefinition
from libs.process import ServiceProcess, main
from libs.runtime import Runtime
from services.generation import rpc


class GenerationProcess(ServiceProcess):
    name = "generation"

    async def build(
        self, runtime: Runtime, engine: AsyncEngine | None
    ) -> list[ServiceDefinition]:
        return [rpc.definition(rpc.GenerationServicer())]


if __name__ == "__main__":
    main(GenerationProcess(), sys.argv[1:])
