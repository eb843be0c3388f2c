"""Reports for operators, through the admin service: the money and credits
of a period (SummarizeRevenue), every user's payments and the
subscriptions, each listed newest first with filters and a cursor.

Revenue is what completed payments brought, by completion time, in the
currency's smallest unit. Credits are micro-credits: what purchases,
grants, refunds and operators' corrections put into accounts (ledger
entries), and what work spent (captured holds, by their usage_type tag).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.periods import Period
from services.billing import repository
from services.billing.models import (
    PAYMENT_STATUSES,
    PAYMENT_TYPES,
    SUBSCRIPTION_STATUSES,
    Payment,
    Subscription,
)
from services.billing.repository import (
    PaymentFilter,
    RevenueRow,
    SpendRow,
    SubscriptionFilter,
)
from services.billing.service import Checks

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
MAX_PLAN_ID_LENGTH = 64
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class CreditFlow:
    start: datetime
    purchased: int = 0
    granted: int = 0
    refunded: int = 0
    adjusted: int = 0


@dataclass(frozen=True)
class RevenueSummary:
    revenue: list[RevenueRow]
    credit_flow: list[CreditFlow]
    spend: list[SpendRow]
    lifetime_revenue: list[RevenueRow]
    lifetime_spend: list[SpendRow]
    in_circulation: int
    active_subscriptions: int
    monthly_recurring_paise: int


RowT = TypeVar("RowT")


@dataclass(frozen=True)
class Page(Generic[RowT]):
    rows: list[RowT]
    next_page_token: str


async def summarize_revenue(
    reads: async_sessionmaker[AsyncSession], period: Period
) -> RevenueSummary:
    """The summary: the period's figures and the standing ones are read at
    once, on two connections."""

    async def in_period() -> tuple[
        list[RevenueRow], list[repository.InflowRow], list[SpendRow]
    ]:
        async with reads() as db:
            return (
                await repository.revenue_by_bucket(db, period),
                await repository.inflow_by_bucket(db, period),
                await repository.spend_by_bucket(db, period),
            )

    async def standing() -> tuple[
        list[RevenueRow], list[SpendRow], int, tuple[int, int]
    ]:
        async with reads() as db:
            return (
                await repository.lifetime_revenue(db),
                await repository.lifetime_spend(db),
                await repository.credits_in_circulation(db),
                await repository.recurring_revenue(db),
            )

    (revenue, inflow, spend), (lifetime, spent, held, recurring) = await asyncio.gather(
        in_period(), standing()
    )
    return RevenueSummary(
        revenue=revenue,
        credit_flow=_credit_flow(inflow),
        spend=spend,
        lifetime_revenue=lifetime,
        lifetime_spend=spent,
        in_circulation=held,
        active_subscriptions=recurring[0],
        monthly_recurring_paise=recurring[1],
    )


def _credit_flow(rows: list[repository.InflowRow]) -> list[CreditFlow]:
    """One line per bucket with a column per ledger kind."""
    flows: dict[datetime, dict[str, int]] = {}
    for row in rows:
        flows.setdefault(row.start, {})[_FLOW_FIELDS[row.kind]] = row.amount
    return [CreditFlow(start, **amounts) for start, amounts in sorted(flows.items())]


_FLOW_FIELDS = {
    "purchase": "purchased",
    "grant": "granted",
    "refund": "refunded",
    "adjustment": "adjusted",
}


# Listings


async def all_payments(
    db: AsyncSession,
    page_size: int,
    page_token: str,
    *,
    user_id: str = "",
    status: str = "",
    kind: str = "",
) -> Page[Payment]:
    checks = Checks()
    size = _page_size(checks, page_size)
    after = _position(checks, page_token)
    found = PaymentFilter(
        user_id=checks.uuid("user_id", user_id) if user_id else None,
        status=_one_of(checks, "status", status, PAYMENT_STATUSES),
        type=_one_of(checks, "type", kind, PAYMENT_TYPES),
    )
    checks.done()
    rows = await repository.all_payments_page(db, found, after, size + 1)
    more = len(rows) > size
    last = rows[size - 1] if more else None
    token = _token(last.created_at, last.id) if last is not None else ""
    return Page(rows[:size], token)


async def subscriptions(
    db: AsyncSession,
    page_size: int,
    page_token: str,
    *,
    user_id: str = "",
    status: str = "",
    plan_id: str = "",
) -> tuple[Page[tuple[Subscription, str]], dict[str, int]]:
    """A page of subscriptions with their plans' names, and how many
    subscriptions there are per status."""
    checks = Checks()
    size = _page_size(checks, page_size)
    after = _position(checks, page_token)
    found = SubscriptionFilter(
        user_id=checks.uuid("user_id", user_id) if user_id else None,
        status=_one_of(checks, "status", status, SUBSCRIPTION_STATUSES),
        plan_id=checks.text("plan_id", plan_id, MAX_PLAN_ID_LENGTH) or None,
    )
    checks.done()
    rows = await repository.subscriptions_page(db, found, after, size + 1)
    more = len(rows) > size
    last = rows[size - 1][0] if more else None
    token = _token(last.updated_at, last.user_id) if last is not None else ""
    counts = await repository.subscriptions_by_status(db)
    return Page(rows[:size], token), counts


def _page_size(checks: Checks, requested: int) -> int:
    if not 0 <= requested <= MAX_PAGE_SIZE:
        checks.fail("page_size", f"page_size is 1 to {MAX_PAGE_SIZE}.")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _one_of(
    checks: Checks, field: str, value: str, allowed: tuple[str, ...]
) -> str | None:
    if value and value not in allowed:
        checks.fail(field, f"{field} is one of {', '.join(allowed)}.")
    return value or None


def _token(moment: datetime, key: uuid.UUID) -> str:
    """Where a page ended: a moment in microseconds and the row's id."""
    micros = (moment - _EPOCH) // timedelta(microseconds=1)
    return f"{micros}.{key}"


def _position(checks: Checks, token: str) -> tuple[datetime, uuid.UUID] | None:
    if not token:
        return None
    micros, _, key = token.partition(".")
    try:
        if not micros.isdigit() or len(micros) > 19:
            raise ValueError(micros)
        return _EPOCH + timedelta(microseconds=int(micros)), uuid.UUID(key)
    except (ValueError, OverflowError):
        checks.fail("page_token", "page_token is not one this service issued.")
        return None
