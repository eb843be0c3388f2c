"""Holds, captures and releases of chat replies, in the billing service.

Every call is idempotent on a key made from the id of the reply it pays for
(`chat:<message id>:hold`, `:capture`, `:release`), so a retry, or the sweeper
settling a reply a dead process left, never charges twice.
"""

from __future__ import annotations

from typing import TypeVar

from omnihub.billing.v1 import billing_pb2, billing_pb2_grpc

from libs.grpc.client import Upstreams

AccountRef = billing_pb2.AccountRef
RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")


def user_account(user_id: str) -> AccountRef:
    return AccountRef(owner_type=billing_pb2.OWNER_TYPE_USER, owner_id=user_id)


def hold_key(reference: str) -> str:
    return f"chat:{reference}:hold"


def capture_key(reference: str) -> str:
    return f"chat:{reference}:capture"


def release_key(reference: str) -> str:
    return f"chat:{reference}:release"


class Ledger:
    def __init__(
        self, stub: billing_pb2_grpc.BillingServiceAsyncStub, upstreams: Upstreams
    ) -> None:
        self._stub = stub
        self._upstreams = upstreams

    async def hold(
        self,
        account: AccountRef,
        amount: int,
        reference: str,
        reason: str,
        tags: dict[str, str],
    ) -> str:
        """Reserve `amount` for the work `reference` names; returns the hold id."""
        reply = await self._upstreams.call(
            self._stub.Hold,
            billing_pb2.HoldRequest(
                account=account,
                amount_micros=amount,
                idempotency_key=hold_key(reference),
                reason=reason,
                reference=reference,
                tags=tags,
            ),
        )
        return str(reply.hold_id)

    async def capture(self, hold_id: str, amount: int, reference: str) -> int:
        """Charge `amount` of the hold and return the rest; returns the
        paying account's balance after."""
        reply = await self._upstreams.call(
            self._stub.Capture,
            billing_pb2.CaptureRequest(
                hold_id=hold_id,
                amount_micros=amount,
                idempotency_key=capture_key(reference),
            ),
        )
        return int(reply.balance_after_micros)

    async def release(self, hold_id: str, reference: str) -> None:
        await self._upstreams.call(
            self._stub.Release,
            billing_pb2.ReleaseRequest(
                hold_id=hold_id, idempotency_key=release_key(reference)
            ),
        )

    async def balance(self, account: AccountRef) -> int:
        reply = await self._upstreams.call(
            self._stub.GetBalance, billing_pb2.GetBalanceRequest(account=account)
        )
        return int(reply.balance_micros)
