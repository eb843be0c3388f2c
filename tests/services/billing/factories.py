"""A billing client for the tests, with the identities callers really have.

Every helper makes fresh owner ids and idempotency keys, so tests share one
database and one billing service without seeing each other's accounts.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable

import grpc
from omnihub.billing.v1 import billing_pb2, billing_pb2_grpc

from libs.config import Settings
from libs.errors import DomainError
from libs.grpc.identity import AUTHORIZATION_KEY, INTERNAL_TOKEN_KEY
from libs.grpc.status import from_rpc_error
from libs.tokens import Audience, InternalTokenSource, TokenSigner

Metadata = tuple[tuple[str, str], ...]

CREDIT = 1_000_000


class BillingClient:
    """The billing stub plus call metadata for a service or a user."""

    def __init__(self, settings: Settings, address: str | None = None) -> None:
        self.signer = TokenSigner(settings.signing_secret())
        self._internal = InternalTokenSource(self.signer, "tests", 300)
        self.channel = grpc.aio.insecure_channel(address or settings.billing_address)
        self.stub = billing_pb2_grpc.BillingServiceStub(self.channel)

    @property
    def service(self) -> Metadata:
        """Another OmniHub service calling (an internal token only)."""
        return ((INTERNAL_TOKEN_KEY, self._internal.token()),)

    def user(self, user_id: str) -> Metadata:
        """A signed-in user calling directly (a user token only)."""
        return ((AUTHORIZATION_KEY, f"Bearer {self.user_token(user_id)}"),)

    def user_token(self, user_id: str) -> str:
        return self.signer.issue(
            Audience.USER, user_id, 900, session_id=str(uuid.uuid4())
        )

    async def close(self) -> None:
        await self.channel.close()

    async def balance(self, account: billing_pb2.AccountRef) -> tuple[int, int]:
        reply = await self.stub.GetBalance(
            billing_pb2.GetBalanceRequest(account=account), metadata=self.service
        )
        return reply.balance_micros, reply.held_micros

    async def grant(
        self, account: billing_pb2.AccountRef, amount: int, reason: str = ""
    ) -> billing_pb2.GrantResponse:
        return await self.stub.Grant(
            billing_pb2.GrantRequest(
                account=account,
                amount_micros=amount,
                idempotency_key=new_key("grant"),
                reason=reason,
            ),
            metadata=self.service,
        )

    async def hold(
        self, account: billing_pb2.AccountRef, amount: int, **fields: object
    ) -> billing_pb2.HoldResponse:
        return await self.stub.Hold(
            billing_pb2.HoldRequest(
                account=account,
                amount_micros=amount,
                idempotency_key=new_key("hold"),
                **fields,  # type: ignore[arg-type]
            ),
            metadata=self.service,
        )

    async def entries(
        self, account: billing_pb2.AccountRef, page_size: int = 100
    ) -> list[billing_pb2.LedgerEntry]:
        reply = await self.stub.ListTransactions(
            billing_pb2.ListTransactionsRequest(account=account, page_size=page_size),
            metadata=self.service,
        )
        return list(reply.entries)


def user_account(user_id: str | None = None) -> billing_pb2.AccountRef:
    return billing_pb2.AccountRef(
        owner_type=billing_pb2.OWNER_TYPE_USER, owner_id=user_id or str(uuid.uuid4())
    )


def workspace_account() -> billing_pb2.AccountRef:
    return billing_pb2.AccountRef(
        owner_type=billing_pb2.OWNER_TYPE_WORKSPACE, owner_id=str(uuid.uuid4())
    )


def new_key(label: str = "op") -> str:
    return f"test:{label}:{uuid.uuid4()}"


async def funded_account(billing: BillingClient, micros: int) -> billing_pb2.AccountRef:
    account = user_account()
    await billing.grant(account, micros, reason="Test funds")
    return account


async def failure(call: Awaitable[object]) -> tuple[grpc.StatusCode, DomainError]:
    """The status and domain error of a call that must fail."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code(), from_rpc_error(error)
    raise AssertionError("the call succeeded")


def fields_of(error: DomainError) -> set[str]:
    return {violation.field for violation in error.violations}
