"""The services the users area asks: auth (accounts and operators), billing
(balances, the ledger), generation, workspace and chat (a user's data).

Calls carry this service's internal token; only ChangeAdminPassword also
carries the operator's own token, because auth changes the caller's own
password. Failed calls come back as the DomainError the service raised.
"""

from __future__ import annotations

import time
from typing import TypeVar

import grpc
from omnihub.auth.v1 import auth_pb2, auth_pb2_grpc
from omnihub.billing.v1 import billing_pb2, billing_pb2_grpc
from omnihub.chat.v1 import chat_pb2_grpc
from omnihub.generation.v1 import generation_pb2_grpc
from omnihub.workspace.v1 import workspace_pb2_grpc

from libs.errors import DeadlineExceeded, Unavailable
from libs.grpc.client import Upstreams
from libs.grpc.status import from_rpc_error

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")

# Billing answers at most this many balances per call.
BALANCES_PER_CALL = 500
# Operators' usernames for the audit trail, re-read at most this often.
OPERATOR_NAMES_SECONDS = 60.0


def user_account(user_id: str) -> billing_pb2.AccountRef:
    return billing_pb2.AccountRef(
        owner_type=billing_pb2.OWNER_TYPE_USER, owner_id=user_id
    )


class Platform:
    """Stubs of the services behind the users area, and one way to call them."""

    def __init__(self, upstreams: Upstreams) -> None:
        self._upstreams = upstreams
        self.auth = auth_pb2_grpc.AuthServiceStub(upstreams.channel("auth"))
        self.billing = billing_pb2_grpc.BillingServiceStub(upstreams.channel("billing"))
        self.generation = generation_pb2_grpc.GenerationServiceStub(
            upstreams.channel("generation")
        )
        self.workspace = workspace_pb2_grpc.WorkspaceServiceStub(
            upstreams.channel("workspace")
        )
        self.chat = chat_pb2_grpc.ChatServiceStub(upstreams.channel("chat"))
        self._operator_names: dict[str, str] = {}
        self._names_read_at = 0.0

    async def call(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[RequestT, ResponseT],
        message: RequestT,
        *,
        authorization: str | None = None,
        seconds: float | None = None,
    ) -> ResponseT:
        """`method(message)` with a deadline (`seconds`, else the default
        capped by the call being served) and this service's identity."""
        try:
            return await method(
                message,
                timeout=seconds or self._upstreams.timeout(),
                metadata=self._upstreams.metadata(authorization=authorization),
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    async def balances(self, user_ids: list[str]) -> dict[str, tuple[int, int]]:
        """(balance, held) of each user's own account; never-used ones are 0."""
        found: dict[str, tuple[int, int]] = {}
        for start in range(0, len(user_ids), BALANCES_PER_CALL):
            chunk = user_ids[start : start + BALANCES_PER_CALL]
            reply = await self.call(
                self.billing.GetBalances,
                billing_pb2.GetBalancesRequest(
                    accounts=[user_account(user_id) for user_id in chunk]
                ),
            )
            for item in reply.balances:
                found[item.account.owner_id] = (item.balance_micros, item.held_micros)
        return found

    async def operator_name(self, admin_id: str) -> str:
        """An operator's username, from a list kept for a minute."""
        stale = time.monotonic() - self._names_read_at > OPERATOR_NAMES_SECONDS
        if stale or admin_id not in self._operator_names:
            try:
                reply = await self.call(
                    self.auth.ListAdmins, auth_pb2.ListAdminsRequest()
                )
            except (Unavailable, DeadlineExceeded):
                # The trail still has the operator's id; the name is a nicety.
                return self._operator_names.get(admin_id, "")
            self._operator_names = {a.id: a.username for a in reply.admins}
            self._names_read_at = time.monotonic()
        return self._operator_names.get(admin_id, "")
