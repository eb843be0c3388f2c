"""The workspace service process.

python -m services.workspace.main migrate
python -m services.workspace.main serve
"""

from __future__ import annotations

import sys
from pathlib import Path

from omnihub.billing.v1 import billing_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.db import read_session_factory, session_factory
from libs.grpc.server import ServiceDefinition
from libs.process import ServiceProcess, main
from libs.runtime import Runtime
from services.workspace import rpc
from services.workspace.directory import UserDirectory
from services.workspace.ledger import Ledger
from services.workspace.models import SCHEMA
from services.workspace.service import WorkspaceService


class WorkspaceProcess(ServiceProcess):
    name = "workspace"
    schema = SCHEMA
    migrations_dir = Path(__file__).parent / "migrations"

    async def build(
        self, runtime: Runtime, engine: AsyncEngine | None
    ) -> list[ServiceDefinition]:
        assert engine is not None
        upstreams = runtime.upstreams
        billing = billing_pb2_grpc.BillingServiceStub(upstreams.channel("billing"))
        service = WorkspaceService(
            Ledger(billing, upstreams), UserDirectory(runtime.auth_stub(), upstreams)
        )
        servicer = rpc.WorkspaceServicer(
            service, session_factory(engine), read_session_factory(engine)
        )
        return [rpc.definition(servicer)]


if __name__ == "__main__":
    main(WorkspaceProcess(), sys.argv[1:])
