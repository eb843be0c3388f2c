"""An AdminService client for the tests, with the identities callers really
have, and SQL access to the admin schema to check what was written.

Operators are fresh ids with ADMIN tokens signed by the suite's secret, the
way auth's AdminLogin signs them (with their role); the gateway's metadata
(client address, request id) is added as the gateway adds it.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from omnihub.admin.v1 import admin_pb2, admin_pb2_grpc
from sqlalchemy import text

from libs.config import Settings
from libs.db import create_engine, session_factory
from libs.errors import DomainError
from libs.grpc.identity import AUTHORIZATION_KEY, INTERNAL_TOKEN_KEY, REQUEST_ID_KEY
from libs.grpc.status import from_rpc_error
from libs.tokens import Audience, InternalTokenSource, TokenSigner
from services.admin.models import SCHEMA

Metadata = tuple[tuple[str, str], ...]

CLIENT_ADDRESS = "203.0.113.9"


@dataclass(frozen=True)
class Operator:
    id: str
    role: str
    metadata: Metadata
    request_id: str


class AdminApi:
    def __init__(self, settings: Settings) -> None:
        self.signer = TokenSigner(settings.signing_secret())
        self._internal = InternalTokenSource(self.signer, "tests", 300)
        self._channel = grpc.aio.insecure_channel(settings.admin_address)
        self.stub = admin_pb2_grpc.AdminServiceStub(self._channel)
        self._engine = create_engine(settings, SCHEMA)

    async def close(self) -> None:
        await self._channel.close()
        await self._engine.dispose()

    @property
    def service(self) -> Metadata:
        """Another OmniHub service calling (an internal token only)."""
        return ((INTERNAL_TOKEN_KEY, self._internal.token()),)

    def operator(self, role: str = "superadmin") -> Operator:
        """An operator signed in with `role`, calling through the gateway."""
        operator_id = str(uuid.uuid4())
        token = self.signer.issue(
            Audience.ADMIN, operator_id, 900, session_id=str(uuid.uuid4()), role=role
        )
        request_id = uuid.uuid4().hex
        metadata = (
            *self.service,
            (AUTHORIZATION_KEY, f"Bearer {token}"),
            ("x-client-address", CLIENT_ADDRESS),
            (REQUEST_ID_KEY, request_id),
        )
        return Operator(operator_id, role, metadata, request_id)

    def user(self, user_id: str | None = None) -> Metadata:
        """A signed-in user calling through the gateway."""
        return (*self.service, *self.user_alone(user_id))

    def user_alone(self, user_id: str | None = None) -> Metadata:
        """A signed-in user calling directly, with no service token."""
        token = self.signer.issue(
            Audience.USER, user_id or str(uuid.uuid4()), 900, session_id="s"
        )
        return ((AUTHORIZATION_KEY, f"Bearer {token}"),)

    async def settings(self) -> dict[str, Any]:
        """Every setting's value as GetSettings shows it."""
        reply = await self.stub.GetSettings(
            admin_pb2.GetSettingsRequest(), metadata=self.operator("viewer").metadata
        )
        return {s.key: json_format.MessageToDict(s.value) for s in reply.settings}

    async def update_settings(
        self, values: dict[str, Any], operator: Operator | None = None
    ) -> admin_pb2.UpdateSettingsResponse:
        struct = struct_pb2.Struct()
        struct.update(values)
        metadata = (operator or self.operator()).metadata
        reply: admin_pb2.UpdateSettingsResponse = await self.stub.UpdateSettings(
            admin_pb2.UpdateSettingsRequest(values=struct), metadata=metadata
        )
        return reply

    async def set_flag(self, key: str, enabled: bool) -> None:
        await self.stub.SetFeatureFlag(
            admin_pb2.SetFeatureFlagRequest(key=key, enabled=enabled),
            metadata=self.operator().metadata,
        )

    async def audit_rows(
        self, target_type: str, target_id: str
    ) -> list[dict[str, Any]]:
        """Audit entries of one target, oldest first."""
        async with session_factory(self._engine)() as db:
            rows = await db.execute(
                text(
                    "SELECT *, host(client_address) AS address FROM audit_log"
                    " WHERE target_type = :type AND target_id = :id ORDER BY id"
                ),
                {"type": target_type, "id": target_id},
            )
            return [dict(row) for row in rows.mappings()]

    async def sql(self, statement: str, **params: Any) -> list[dict[str, Any]]:
        async with session_factory(self._engine).begin() as db:
            result = await db.execute(text(statement), params)
            if not result.returns_rows:  # type: ignore[attr-defined]
                return []
            return [dict(row) for row in result.mappings()]


async def failure(call: Awaitable[object]) -> tuple[grpc.StatusCode, DomainError]:
    """The status and domain error of a call that must fail."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code(), from_rpc_error(error)
    raise AssertionError("the call succeeded")
