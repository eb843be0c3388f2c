"""The admin service process.

python -m services.admin.main migrate
python -m services.admin.main serve

It serves the operators' areas, each its own gRPC service in
protos/omnihub/admin/v1/: settings, flags, announcements, the audit trail
and the error log (AdminService, services/admin/rpc.py), and the areas
listed in AREAS. Admin tasks (changes other services make for an operator)
are retried in the background until they are confirmed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from libs.db import session_factory
from libs.grpc.server import ServiceDefinition
from libs.process import ServiceProcess, main
from libs.runtime import Runtime
from services.admin import rpc
from services.admin.insights import rpc as insights_rpc
from services.admin.models import SCHEMA
from services.admin.tasks import AdminTasks
from services.admin.users import rpc as users_rpc

# Each builds one area's servicer: (runtime, engine, tasks) -> definition.
Area = Callable[[Runtime, AsyncEngine, AdminTasks], ServiceDefinition]
AREAS: tuple[Area, ...] = (rpc.build, users_rpc.build, insights_rpc.build)


class AdminProcess(ServiceProcess):
    name = "admin"
    schema = SCHEMA
    migrations_dir = Path(__file__).parent / "migrations"

    def __init__(self) -> None:
        self._tasks: AdminTasks | None = None

    async def build(
        self, runtime: Runtime, engine: AsyncEngine | None
    ) -> list[ServiceDefinition]:
        assert engine is not None
        self._tasks = AdminTasks(session_factory(engine))
        return [area(runtime, engine, self._tasks) for area in AREAS]

    async def run_background(self) -> None:
        if self._tasks is not None:
            await self._tasks.run_forever()


if __name__ == "__main__":
    main(AdminProcess(), sys.argv[1:])
