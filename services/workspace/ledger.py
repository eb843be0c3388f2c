"""The workspace's credits, kept as accounts in the billing service.

A workspace's pool is the billing account of owner type `workspace` with the
workspace id; a member's allocation the account of owner type `member` with
the membership id; a user's own credits the account of owner type `user`.
Every movement is a billing Transfer: atomic, in the ledger, and idempotent
on its key.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TypeVar

from omnihub.billing.v1 import billing_pb2, billing_pb2_grpc

from libs.errors import InsufficientCredits, Unavailable
from libs.grpc.client import Upstreams
from libs.logs import get_logger

log = get_logger(__name__)

# Billing answers at most this many balances per call.
BALANCES_PER_CALL = 500
# A drain reads a balance and moves exactly that; work charged in between
# makes the move fail, and it is tried again with the new balance.
DRAIN_ATTEMPTS = 3

AccountRef = billing_pb2.AccountRef
RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")


def user_account(user_id: str) -> AccountRef:
    return AccountRef(owner_type=billing_pb2.OWNER_TYPE_USER, owner_id=user_id)


def pool_account(workspace_id: str) -> AccountRef:
    return AccountRef(
        owner_type=billing_pb2.OWNER_TYPE_WORKSPACE, owner_id=workspace_id
    )


def allocation_account(membership_id: str) -> AccountRef:
    return AccountRef(owner_type=billing_pb2.OWNER_TYPE_MEMBER, owner_id=membership_id)


@dataclass(frozen=True)
class Balance:
    balance: int
    held: int


@dataclass(frozen=True)
class Moved:
    source_after: int
    target_after: int


@dataclass(frozen=True)
class UsageGroup:
    member_id: str
    usage_type: str
    count: int
    captured: int


def _key(account: AccountRef) -> tuple[int, str]:
    return account.owner_type, account.owner_id


class Ledger:
    def __init__(
        self, stub: billing_pb2_grpc.BillingServiceAsyncStub, upstreams: Upstreams
    ) -> None:
        self._stub = stub
        self._upstreams = upstreams

    async def balances(
        self, accounts: list[AccountRef]
    ) -> dict[tuple[int, str], Balance]:
        """Balances by (owner type, owner id); accounts never used are zero."""
        found: dict[tuple[int, str], Balance] = {}
        for start in range(0, len(accounts), BALANCES_PER_CALL):
            chunk = accounts[start : start + BALANCES_PER_CALL]
            reply = await self._upstreams.call(
                self._stub.GetBalances,
                billing_pb2.GetBalancesRequest(accounts=chunk),
            )
            for item in reply.balances:
                found[_key(item.account)] = Balance(
                    item.balance_micros, item.held_micros
                )
        return found

    async def balance(self, account: AccountRef) -> Balance:
        return (await self.balances([account]))[_key(account)]

    async def transfer(
        self,
        source: AccountRef,
        target: AccountRef,
        amount: int,
        key: str,
        reason: str,
        tags: dict[str, str],
    ) -> Moved:
        reply = await self._upstreams.call(
            self._stub.Transfer,
            billing_pb2.TransferRequest(
                from_account=source,
                to_account=target,
                amount_micros=amount,
                idempotency_key=key,
                reason=reason,
                tags=tags,
            ),
        )
        return Moved(reply.from_balance_after_micros, reply.to_balance_after_micros)

    async def drain(
        self, source: AccountRef, target: AccountRef, reason: str, tags: dict[str, str]
    ) -> int:
        """Move all of `source`'s balance to `target`; returns the amount.

        Each attempt has a key of its own: it moves the balance it has just
        read, and a conditional debit cannot move more than is there, so a
        repeat after an unanswered attempt moves only what arrived since.
        """
        for _ in range(DRAIN_ATTEMPTS):
            amount = (await self.balance(source)).balance
            if amount == 0:
                return 0
            try:
                await self.transfer(
                    source,
                    target,
                    amount,
                    f"workspace:drain:{uuid.uuid4()}",
                    reason,
                    tags,
                )
            except InsufficientCredits:
                log.info("credits.drain_raced", source=source.owner_id)
                continue
            return amount
        raise Unavailable("Credits are being spent right now. Try again in a moment.")

    async def usage(self, workspace_id: str) -> list[UsageGroup]:
        reply = await self._upstreams.call(
            self._stub.SummarizeUsage,
            billing_pb2.SummarizeUsageRequest(
                tags={"workspace_id": workspace_id},
                group_by=["member_id", "usage_type"],
            ),
        )
        return [
            UsageGroup(
                member_id=group.values[0],
                usage_type=group.values[1],
                count=group.count,
                captured=group.captured_micros,
            )
            for group in reply.groups
        ]
