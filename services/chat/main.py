"""The chat service process.

python -m services.chat.main migrate
python -m services.chat.main serve

Replies come from OpenRouter at OPENROUTER_BASE_URL with OPENROUTER_API_KEY;
without a key, `make run` points both at the local simulator
(deploy/simulators/openrouter.py). With neither, sending a message answers
that chat is not configured.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from omnihub.billing.v1 import billing_pb2_grpc
from omnihub.catalog.v1 import catalog_pb2_grpc
from omnihub.workspace.v1 import workspace_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.db import read_session_factory, session_factory
from libs.grpc.server import ServiceDefinition
from libs.logs import get_logger
from libs.process import ServiceProcess, main
from libs.runtime import Runtime
from services.chat import rpc
from services.chat.catalog import ModelCatalog
from services.chat.enhance import PromptEnhancer
from services.chat.ledger import Ledger
from services.chat.models import SCHEMA
from services.chat.openrouter import OpenRouterClient
from services.chat.replies import Replies, ReplySweeper
from services.chat.service import ConversationService
from services.chat.workspaces import Workspaces

log = get_logger(__name__)

SWEEP_INTERVAL_SECONDS = 60.0
# A reply lasts at most one call's deadline; one left unsettled this much
# longer than that was left by a process that is gone.
SWEEP_GRACE_SECONDS = 300.0


class ChatProcess(ServiceProcess):
    name = "chat"
    schema = SCHEMA
    migrations_dir = Path(__file__).parent / "migrations"

    def __init__(self) -> None:
        self.replies: Replies | None = None
        self.sweeper: ReplySweeper | None = None
        self._client: OpenRouterClient | None = None

    async def build(
        self, runtime: Runtime, engine: AsyncEngine | None
    ) -> list[ServiceDefinition]:
        assert engine is not None
        settings, upstreams = runtime.settings, runtime.upstreams
        sessions, reads = session_factory(engine), read_session_factory(engine)
        catalog = ModelCatalog(
            catalog_pb2_grpc.CatalogServiceStub(upstreams.channel("catalog")),
            upstreams,
        )
        workspaces = Workspaces(
            workspace_pb2_grpc.WorkspaceServiceStub(upstreams.channel("workspace")),
            upstreams,
        )
        ledger = Ledger(
            billing_pb2_grpc.BillingServiceStub(upstreams.channel("billing")),
            upstreams,
        )
        self._client = OpenRouterClient.from_settings(settings)
        configured = settings.openrouter_api_key is not None
        conversations = ConversationService(catalog, workspaces)
        self.replies = Replies(
            sessions,
            reads,
            conversations,
            catalog,
            workspaces,
            ledger,
            self._client,
            configured=configured,
        )
        self.sweeper = ReplySweeper(
            self.replies, reads, settings.rpc_max_timeout + SWEEP_GRACE_SECONDS
        )
        enhancer = PromptEnhancer(catalog, ledger, self._client, configured=configured)
        servicer = rpc.ChatServicer(
            conversations, self.replies, enhancer, sessions, reads
        )
        return [rpc.definition(servicer)]

    async def run_background(self) -> None:
        assert self.sweeper is not None
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_SECONDS)
            try:
                await self.sweeper.sweep()
            except Exception as exc:  # the next round tries again
                log.warning("chat.sweep_round_failed", error=type(exc).__name__)

    async def close(self) -> None:
        if self.replies is not None:
            await self.replies.close()
        if self._client is not None:
            await self._client.close()


if __name__ == "__main__":
    main(ChatProcess(), sys.argv[1:])
