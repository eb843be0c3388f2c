"""The chat service process: `python -m services.chat.main serve`."""

from __future__ import annotations

import sys

from sqlalchemy.ext.asyncio import AsyncEngine

from libs.grpc.server import ServiceDefinition
from libs.process import ServiceProcess, main
from libs.runtime import Runtime
from services.chat import rpc


class ChatProcess(ServiceProcess):
    name = "chat"

    async def build(
        self, runtime: Runtime, engine: AsyncEngine | None
    ) -> list[ServiceDefinition]:
        return [rpc.definition(rpc.ChatServicer())]


if __name__ == "__main__":
    main(ChatProcess(), sys.argv[1:])
