"""The auth service process.

python -m services.auth.main migrate
python -m services.auth.main ensure-admin   # ADMIN_USERNAME/ADMIN_PASSWORD
python -m services.auth.main serve
"""

from __future__ import annotations

import asyncio
import secrets
import sys
from datetime import datetime
from pathlib import Path

from omnihub.billing.v1 import billing_pb2_grpc
from omnihub.workspace.v1 import workspace_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.config import Settings, get_settings
from libs.db import (
    autocommit_engine,
    create_engine,
    read_session_factory,
    session_factory,
)
from libs.grpc.server import ServiceDefinition
from libs.logs import configure_logging, get_logger
from libs.process import ServiceProcess, main
from libs.revocation import RevocationBatch, RevocationSource
from libs.runtime import Runtime
from services.auth import rpc, service
from services.auth.google import GoogleTokenVerifier
from services.auth.models import SCHEMA
from services.auth.operators import AccountOperations
from services.auth.outbox import OutboxRelay, signup_handlers
from services.auth.passwords import PasswordHashing
from services.auth.service import AuthService

log = get_logger(__name__)

MAINTENANCE_INTERVAL_SECONDS = 600


class AuthProcess(ServiceProcess):
    name = "auth"
    schema = SCHEMA
    migrations_dir = Path(__file__).parent / "migrations"

    def __init__(self) -> None:
        self.service: AuthService | None = None
        self._engine: AsyncEngine | None = None
        self._google: GoogleTokenVerifier | None = None
        self._outbox: OutboxRelay | None = None

    def revocation_source(self, engine: AsyncEngine | None) -> RevocationSource:
        """The auth service reads its own sessions table instead of calling itself."""
        assert engine is not None
        sessions = read_session_factory(engine)

        async def source(since: datetime | None) -> RevocationBatch:
            assert self.service is not None
            async with sessions() as db:
                ids, as_of = await self.service.revoked_since(db, since)
            return RevocationBatch([str(i) for i in ids], as_of)

        return source

    async def build(
        self, runtime: Runtime, engine: AsyncEngine | None
    ) -> list[ServiceDefinition]:
        assert engine is not None
        settings = runtime.settings
        self._engine = engine
        self._google = GoogleTokenVerifier(
            settings.google_client_id, settings.google_certs_url
        )
        self.service = AuthService(
            settings,
            runtime.signer,
            PasswordHashing(),
            self._google,
            runtime.revocations,
        )
        sessions = session_factory(engine)
        billing = billing_pb2_grpc.BillingServiceStub(
            runtime.upstreams.channel("billing")
        )
        workspace = workspace_pb2_grpc.WorkspaceServiceStub(
            runtime.upstreams.channel("workspace")
        )
        self._outbox = OutboxRelay(
            sessions, signup_handlers(billing, workspace, runtime.upstreams)
        )
        servicer = rpc.AuthServicer(
            self.service,
            sessions,
            read_session_factory(engine),
            autocommit_engine(engine),
            self._outbox,
            AccountOperations(PasswordHashing(), runtime.revocations),
        )
        return [rpc.definition(servicer)]

    async def run_background(self) -> None:
        assert self._outbox is not None
        await asyncio.gather(self._outbox.run(), self._purge_ended_sessions())

    async def _purge_ended_sessions(self) -> None:
        assert self._engine is not None
        assert self.service is not None
        sessions = session_factory(self._engine)
        while True:
            await asyncio.sleep(MAINTENANCE_INTERVAL_SECONDS)
            try:
                async with sessions.begin() as db:
                    purged = await self.service.purge_ended_sessions(db)
                log.info("sessions.purged", count=purged)
            except Exception:
                log.exception("sessions.purge_failed")

    async def close(self) -> None:
        if self._google is not None:
            await self._google.close()


async def ensure_admin(settings: Settings) -> None:
    """Create the first operator account.

    With ADMIN_USERNAME and ADMIN_PASSWORD set, that account is created if it
    does not exist. Without them, and only while no operator exists, an
    `admin` account with a generated password is created and the password is
    printed once. There is never a built-in default password.
    """
    engine = create_engine(settings, SCHEMA)
    passwords = PasswordHashing()
    try:
        async with session_factory(engine).begin() as db:
            if settings.admin_username and settings.admin_password:
                created = await service.ensure_admin(
                    db,
                    passwords,
                    settings.admin_username,
                    settings.admin_password.get_secret_value(),
                )
                log.info(
                    "admin.ensured", username=settings.admin_username, created=created
                )
            elif await service.admin_count(db) == 0:
                if settings.is_production:
                    raise RuntimeError(
                        "set ADMIN_USERNAME and ADMIN_PASSWORD in production"
                    )
                password = secrets.token_urlsafe(18)
                await service.ensure_admin(db, passwords, "admin", password)
                print(
                    f"Created operator account 'admin' with password: {password}\n"
                    "It is not stored anywhere else; set ADMIN_USERNAME and "
                    "ADMIN_PASSWORD to choose your own.",
                    flush=True,
                )
    finally:
        await engine.dispose()


def cli(argv: list[str]) -> None:
    if argv[:1] == ["ensure-admin"]:
        settings = get_settings()
        configure_logging(settings, "auth")
        asyncio.run(ensure_admin(settings))
        return
    main(AuthProcess(), argv)


if __name__ == "__main__":
    cli(sys.argv[1:])
