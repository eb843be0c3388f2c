"""/api/credits: the signed-in user's balance and credit history."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated

from fastapi import APIRouter, Query, Response
from omnihub.billing.v1 import billing_pb2

from gateway.deps import UpstreamDep, UserDep
from gateway.schemas.billing import (
    CreditBalanceOut,
    CreditHistoryOut,
    CreditTransactionOut,
    credits,
)

router = APIRouter(prefix="/api/credits", tags=["credits"])

_KINDS = {
    value: name.removeprefix("ENTRY_KIND_").lower()
    for name, value in billing_pb2.EntryKind.items()
}


def own_account(user_id: str) -> billing_pb2.AccountRef:
    return billing_pb2.AccountRef(
        owner_type=billing_pb2.OWNER_TYPE_USER, owner_id=user_id
    )


def _transaction(entry: billing_pb2.LedgerEntry) -> CreditTransactionOut:
    return CreditTransactionOut(
        id=entry.id,
        type=_KINDS[entry.kind],
        amount=credits(entry.amount_micros),
        balance_after=credits(entry.balance_after_micros),
        description=entry.reason,
        reference=entry.reference or None,
        created_at=entry.created_at.ToDatetime(tzinfo=UTC),
    )


@router.get("/balance")
async def balance(
    user: UserDep, upstream: UpstreamDep, response: Response
) -> CreditBalanceOut:
    """The caller's spendable credits and the credits held for running work."""
    reply = await upstream.call(
        upstream.billing.GetBalance,
        billing_pb2.GetBalanceRequest(account=own_account(user.id)),
        user.authorization,
    )
    response.headers["Cache-Control"] = "no-store"
    return CreditBalanceOut(
        credits=credits(reply.balance_micros), held=credits(reply.held_micros)
    )


@router.get("/history")
async def history(
    user: UserDep,
    upstream: UpstreamDep,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> CreditHistoryOut:
    """The caller's ledger, newest first; follow `nextCursor` for older entries."""
    reply = await upstream.call(
        upstream.billing.ListTransactions,
        billing_pb2.ListTransactionsRequest(
            account=own_account(user.id), page_size=limit, page_token=cursor or ""
        ),
        user.authorization,
    )
    response.headers["Cache-Control"] = "no-store"
    return CreditHistoryOut(
        transactions=[_transaction(entry) for entry in reply.entries],
        next_cursor=reply.next_page_token or None,
    )
