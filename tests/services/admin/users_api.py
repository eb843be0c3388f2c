"""A client for the users area (AdminUsersService) with the identities
callers really have, stubs of the services that hold a user's data (to set
up a user's life and look at what is left of it), and SQL access to every
schema a deletion touches.

Users are real accounts made through auth's Register, so that sign-up
credits, the personal workspace and a nickname exist as they would.
Operators are fresh ids with ADMIN tokens of a given role, as auth's
AdminLogin signs them; the gateway's metadata (client address, request
id) is added as the gateway adds it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import grpc
from omnihub.admin.v1 import users_pb2, users_pb2_grpc
from omnihub.auth.v1 import auth_pb2, auth_pb2_grpc
from omnihub.billing.v1 import billing_pb2, billing_pb2_grpc
from omnihub.chat.v1 import chat_pb2_grpc
from omnihub.generation.v1 import community_pb2_grpc, generation_pb2_grpc
from omnihub.workspace.v1 import workspace_pb2_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.config import Settings
from libs.db import create_engine
from libs.errors import DomainError
from libs.grpc.identity import AUTHORIZATION_KEY, INTERNAL_TOKEN_KEY, REQUEST_ID_KEY
from libs.grpc.status import from_rpc_error
from libs.tokens import Audience, InternalTokenSource, TokenSigner

Metadata = tuple[tuple[str, str], ...]

CLIENT_ADDRESS = "198.51.100.23"
PASSWORD = "a-good-password"
CREDIT = 1_000_000
SCHEMAS = ("admin", "auth", "billing", "chat", "generation", "workspace")


@dataclass(frozen=True)
class Operator:
    id: str
    role: str
    metadata: Metadata
    request_id: str


@dataclass(frozen=True)
class Member:
    """A signed-up user and the tokens of their first session."""

    id: str
    email: str
    access_token: str
    refresh_token: str


class UsersApi:
    def __init__(self, settings: Settings) -> None:
        self.signer = TokenSigner(settings.signing_secret())
        self._internal = InternalTokenSource(self.signer, "tests", 300)
        self._channels: list[grpc.aio.Channel] = []
        self.stub = users_pb2_grpc.AdminUsersServiceStub(
            self._channel(settings.admin_address)
        )
        self.auth = auth_pb2_grpc.AuthServiceStub(self._channel(settings.auth_address))
        self.billing = billing_pb2_grpc.BillingServiceStub(
            self._channel(settings.billing_address)
        )
        generation = self._channel(settings.generation_address)
        self.generation = generation_pb2_grpc.GenerationServiceStub(generation)
        self.community = community_pb2_grpc.CommunityServiceStub(generation)
        self.workspace = workspace_pb2_grpc.WorkspaceServiceStub(
            self._channel(settings.workspace_address)
        )
        self.chat = chat_pb2_grpc.ChatServiceStub(self._channel(settings.chat_address))
        self._engines = {schema: create_engine(settings, schema) for schema in SCHEMAS}

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(address)
        self._channels.append(channel)
        return channel

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()
        for engine in self._engines.values():
            await engine.dispose()

    # Identities

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

    def user(self, access_token: str) -> Metadata:
        return (*self.service, (AUTHORIZATION_KEY, f"Bearer {access_token}"))

    # Users

    async def member(self, label: str = "member") -> Member:
        """A user signed up through auth, once their sign-up credits landed."""
        email = f"{label}-{uuid.uuid4().hex[:12]}@example.com"
        reply = await self.auth.Register(
            auth_pb2.RegisterRequest(
                email=email, password=PASSWORD, name="Ann Example"
            ),
            metadata=self.service,
        )
        member = Member(
            reply.user.id, email, reply.tokens.access_token, reply.tokens.refresh_token
        )
        await self._signup_credits(member.id)
        return member

    async def _signup_credits(self, user_id: str) -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if (await self.balance(user_id))[0] > 0:
                return
            await asyncio.sleep(0.05)

    async def balance(self, user_id: str) -> tuple[int, int]:
        reply = await self.billing.GetBalances(
            billing_pb2.GetBalancesRequest(accounts=[account(user_id)]),
            metadata=self.service,
        )
        item = reply.balances[0]
        return item.balance_micros, item.held_micros

    async def grant(self, user_id: str, micros: int) -> None:
        await self.billing.Grant(
            billing_pb2.GrantRequest(
                account=account(user_id),
                amount_micros=micros,
                idempotency_key=f"test:{uuid.uuid4()}",
                reason="test",
            ),
            metadata=self.service,
        )

    async def ledger(self, user_id: str) -> list[billing_pb2.LedgerEntry]:
        reply = await self.billing.ListTransactions(
            billing_pb2.ListTransactionsRequest(
                account=account(user_id), page_size=100
            ),
            metadata=self.service,
        )
        return list(reply.entries)

    # The users area

    async def set_status(
        self, operator: Operator, user_id: str, status: str, reason: str = ""
    ) -> users_pb2.UpdateUserStatusResponse:
        reply: users_pb2.UpdateUserStatusResponse = await self.stub.UpdateUserStatus(
            users_pb2.UpdateUserStatusRequest(
                user_id=user_id, status=status, reason=reason
            ),
            metadata=operator.metadata,
        )
        return reply

    async def adjust(
        self, operator: Operator, user_id: str, delta: int, reason: str = "goodwill"
    ) -> users_pb2.AdjustUserCreditsResponse:
        reply: users_pb2.AdjustUserCreditsResponse = await self.stub.AdjustUserCredits(
            users_pb2.AdjustUserCreditsRequest(
                user_id=user_id, delta_micros=delta, reason=reason
            ),
            metadata=operator.metadata,
        )
        return reply

    async def delete(
        self, operator: Operator, user_id: str
    ) -> users_pb2.DeleteUserResponse:
        reply: users_pb2.DeleteUserResponse = await self.stub.DeleteUser(
            users_pb2.DeleteUserRequest(user_id=user_id),
            metadata=operator.metadata,
            timeout=60,
        )
        return reply

    async def export(self, operator: Operator, **fields: Any) -> bytes:
        chunks = [
            reply.chunk
            async for reply in self.stub.ExportUsersCsv(
                users_pb2.ExportUsersCsvRequest(**fields), metadata=operator.metadata
            )
        ]
        return b"".join(chunks)

    # Looking at what was written

    async def audit_rows(self, target_id: str) -> list[dict[str, Any]]:
        """Audit entries about one target, oldest first."""
        return await self.sql(
            "admin",
            "SELECT *, host(client_address) AS address FROM audit_log"
            " WHERE target_id = :id ORDER BY id",
            id=target_id,
        )

    async def sql(
        self, schema: str, statement: str, **params: Any
    ) -> list[dict[str, Any]]:
        engine: AsyncEngine = self._engines[schema]
        async with engine.begin() as db:
            result = await db.execute(text(statement), params)
            if not result.returns_rows:
                return []
            return [dict(row) for row in result.mappings()]

    async def count(self, schema: str, statement: str, **params: Any) -> int:
        rows = await self.sql(schema, statement, **params)
        return int(next(iter(rows[0].values())))


def account(user_id: str) -> billing_pb2.AccountRef:
    return billing_pb2.AccountRef(
        owner_type=billing_pb2.OWNER_TYPE_USER, owner_id=user_id
    )


async def failure(call: Awaitable[object]) -> tuple[grpc.StatusCode, DomainError]:
    """The status and domain error of a call that must fail."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code(), from_rpc_error(error)
    raise AssertionError("the call succeeded")
