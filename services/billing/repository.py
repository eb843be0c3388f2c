"""All SQL of the billing service.

Balances change only through the statements here, each a single conditional
UPDATE (or upsert) that PostgreSQL evaluates under the row lock: no balance
is ever read into Python, changed and written back.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    String,
    any_,
    bindparam,
    case,
    cast,
    func,
    insert,
    literal,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, INTERVAL, UUID
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from libs.db import Executor, fetch_row
from libs.periods import Period
from services.billing.models import (
    Account,
    BillingSettings,
    Hold,
    LedgerEntry,
    Operation,
    Owner,
    Payment,
    Plan,
    Subscription,
    WebhookEvent,
)


@dataclass(frozen=True)
class AccountBalance:
    account_id: uuid.UUID
    balance: int
    held: int


@dataclass(frozen=True)
class StoredOperation:
    kind: str
    fingerprint: bytes
    result: dict[str, Any]


@dataclass(frozen=True)
class Unbalanced:
    """An account whose totals disagree with its ledger or its open holds."""

    account_id: uuid.UUID
    owner: Owner
    balance: int
    ledger_total: int
    held: int
    open_holds: int


# Operations (idempotency keys)


async def claim_operation(
    db: AsyncSession, key: str, kind: str, fingerprint: bytes
) -> bool:
    """Insert the operation row; False when the key already exists.

    A concurrent transaction holding the same key makes this statement wait
    on the primary key until that transaction ends, so duplicates serialise.
    """
    statement = (
        pg_insert(Operation)
        .values(key=key, kind=kind, fingerprint=fingerprint)
        .on_conflict_do_nothing(index_elements=[Operation.key])
        .returning(Operation.key)
    )
    return (await db.execute(statement)).scalar_one_or_none() is not None


async def stored_operation(db: AsyncSession, key: str) -> StoredOperation:
    statement = select(Operation.kind, Operation.fingerprint, Operation.result).where(
        Operation.key == key
    )
    row = (await db.execute(statement)).one()
    return StoredOperation(row.kind, bytes(row.fingerprint), row.result or {})


async def record_result(db: AsyncSession, key: str, result: dict[str, Any]) -> None:
    await db.execute(
        update(Operation).where(Operation.key == key).values(result=result)
    )


# Accounts


_ACCOUNT_BY_OWNER = (
    "SELECT id, balance, held FROM accounts WHERE owner_type = $1 AND owner_id = $2"
)


async def account_by_owner(db: Executor, owner: Owner) -> AccountBalance | None:
    # Behind every page view (GetBalance): a prepared statement on the driver.
    row = await fetch_row(db, _ACCOUNT_BY_OWNER, owner.type, owner.id)
    return AccountBalance(row["id"], row["balance"], row["held"]) if row else None


async def balances_of(
    db: AsyncSession, owners: list[Owner]
) -> dict[Owner, AccountBalance]:
    """The accounts of `owners` that exist, in one query.

    Two array parameters instead of a list of (type, id) pairs: the
    statement stays the same whatever the number of owners, so it is
    prepared once. The few extra rows the two arrays can match (an id of
    one type asked under another) are dropped here.
    """
    if not owners:
        return {}
    wanted = set(owners)
    statement = select(
        Account.id, Account.owner_type, Account.owner_id, Account.balance, Account.held
    ).where(
        Account.owner_type
        == any_(bindparam("types", sorted({o.type for o in owners}), ARRAY(String))),
        Account.owner_id == any_(bindparam("ids", [o.id for o in owners], ARRAY(UUID))),
    )
    found: dict[Owner, AccountBalance] = {}
    for row in await db.execute(statement):
        owner = Owner(row.owner_type, row.owner_id)
        if owner in wanted:
            found[owner] = AccountBalance(row.id, row.balance, row.held)
    return found


async def credit(db: AsyncSession, owner: Owner, amount: int) -> AccountBalance:
    """Add to an account, creating it on first use."""
    statement = (
        pg_insert(Account)
        .values(
            id=uuid.uuid4(), owner_type=owner.type, owner_id=owner.id, balance=amount
        )
        .on_conflict_do_update(
            index_elements=[Account.owner_type, Account.owner_id],
            set_={
                "balance": Account.balance + amount,
                "updated_at": func.now(),
            },
        )
        .returning(Account.id, Account.balance, Account.held)
    )
    row = (await db.execute(statement)).one()
    return AccountBalance(row.id, row.balance, row.held)


async def debit(
    db: AsyncSession, owner: Owner, amount: int, *, hold: bool = False
) -> AccountBalance | None:
    """Take `amount` out of the balance if it is there (and into `held` for a
    hold); None when the account is missing or short."""
    values: dict[str, Any] = {
        "balance": Account.balance - amount,
        "updated_at": func.now(),
    }
    if hold:
        values["held"] = Account.held + amount
    statement = (
        update(Account)
        .where(
            Account.owner_type == owner.type,
            Account.owner_id == owner.id,
            Account.balance >= amount,
        )
        .values(values)
        .returning(Account.id, Account.balance, Account.held)
    )
    row = (await db.execute(statement)).one_or_none()
    return AccountBalance(row.id, row.balance, row.held) if row else None


async def settle_held(
    db: AsyncSession, account_id: uuid.UUID, hold_amount: int, returned: int
) -> AccountBalance:
    """Close a hold on its account: `held` loses the whole hold, `balance`
    gets back the part that was not captured."""
    statement = (
        update(Account)
        .where(Account.id == account_id)
        .values(
            balance=Account.balance + returned,
            held=Account.held - hold_amount,
            updated_at=func.now(),
        )
        .returning(Account.id, Account.balance, Account.held)
    )
    row = (await db.execute(statement)).one()
    return AccountBalance(row.id, row.balance, row.held)


# Holds


async def insert_hold(
    db: AsyncSession,
    account_id: uuid.UUID,
    amount: int,
    reason: str,
    reference: str,
    tags: dict[str, str],
) -> uuid.UUID:
    hold_id = uuid.uuid4()
    await db.execute(
        insert(Hold).values(
            id=hold_id,
            account_id=account_id,
            amount=amount,
            reason=reason,
            reference=reference,
            tags=tags,
        )
    )
    return hold_id


async def capture_hold(
    db: AsyncSession, hold_id: uuid.UUID, amount: int
) -> Hold | None:
    """Settle an open hold by charging `amount` of it; None if the hold is
    missing, already settled or smaller than `amount`."""
    statement = (
        update(Hold)
        .where(Hold.id == hold_id, Hold.status == "held", Hold.amount >= amount)
        .values(status="captured", captured=amount, settled_at=func.now())
        .returning(Hold)
    )
    return (await db.execute(statement)).scalar_one_or_none()


async def release_hold(db: AsyncSession, hold_id: uuid.UUID) -> Hold | None:
    """Settle an open hold by returning all of it; None unless it was open."""
    statement = (
        update(Hold)
        .where(Hold.id == hold_id, Hold.status == "held")
        .values(status="released", settled_at=func.now())
        .returning(Hold)
    )
    return (await db.execute(statement)).scalar_one_or_none()


async def hold_by_id(db: AsyncSession, hold_id: uuid.UUID) -> Hold | None:
    return (
        await db.execute(select(Hold).where(Hold.id == hold_id))
    ).scalar_one_or_none()


async def open_hold_ids(db: AsyncSession, account_id: uuid.UUID) -> list[uuid.UUID]:
    statement = (
        select(Hold.id)
        .where(Hold.account_id == account_id, Hold.status == "held")
        .order_by(Hold.created_at)
    )
    return list((await db.execute(statement)).scalars())


@dataclass(frozen=True)
class UsageTotal:
    values: tuple[str, ...]
    count: int
    captured: int


async def captured_usage(
    db: AsyncSession, tags: dict[str, str], group_by: list[str]
) -> list[UsageTotal]:
    """Captured holds whose tags contain `tags`, counted and summed per value
    of each `group_by` tag ('' where a hold lacks one); biggest first."""
    groups = [func.coalesce(Hold.tags[name].astext, "") for name in group_by]
    statement = (
        select(
            *groups,
            func.count().label("hold_count"),
            func.sum(Hold.captured).label("captured"),
        )
        # A literal, not a parameter, so the planner can use the partial
        # index on captured holds.
        .where(text("status = 'captured'"), Hold.tags.contains(tags))
        .group_by(*groups)
        .order_by(func.sum(Hold.captured).desc())
    )
    return [
        UsageTotal(
            tuple(str(value) for value in row[: len(groups)]),
            int(row.hold_count),
            int(row.captured or 0),
        )
        for row in await db.execute(statement)
    ]


# Ledger


async def append_entry(
    db: AsyncSession,
    *,
    account_id: uuid.UUID,
    kind: str,
    amount: int,
    balance_after: int,
    operation_key: str,
    reason: str = "",
    reference: str = "",
    tags: dict[str, str] | None = None,
    hold_id: uuid.UUID | None = None,
) -> LedgerEntry:
    statement = (
        insert(LedgerEntry)
        .values(
            account_id=account_id,
            kind=kind,
            amount=amount,
            balance_after=balance_after,
            reason=reason,
            reference=reference,
            tags=tags or {},
            hold_id=hold_id,
            operation_key=operation_key,
        )
        .returning(LedgerEntry)
    )
    return (await db.execute(statement)).scalar_one()


async def entries_page(
    db: AsyncSession, account_id: uuid.UUID, before_id: int | None, limit: int
) -> list[LedgerEntry]:
    """Up to `limit` entries of an account, newest first, older than
    `before_id` when given (keyset pagination on the history index)."""
    statement = select(LedgerEntry).where(LedgerEntry.account_id == account_id)
    if before_id is not None:
        statement = statement.where(LedgerEntry.id < before_id)
    statement = statement.order_by(LedgerEntry.id.desc()).limit(limit)
    return list((await db.execute(statement)).scalars())


# Settings


async def signup_credits(db: AsyncSession) -> int:
    statement = select(BillingSettings.signup_credits_micros).where(
        BillingSettings.id == 1
    )
    return int((await db.execute(statement)).scalar_one())


@dataclass(frozen=True)
class SettingsRow:
    signup_credits_micros: int
    credit_price_paise: int


async def public_settings(db: AsyncSession) -> SettingsRow:
    statement = select(
        BillingSettings.signup_credits_micros, BillingSettings.credit_price_paise
    ).where(BillingSettings.id == 1)
    row = (await db.execute(statement)).one()
    return SettingsRow(row.signup_credits_micros, row.credit_price_paise)


async def credit_price_paise(db: AsyncSession) -> int:
    statement = select(BillingSettings.credit_price_paise).where(
        BillingSettings.id == 1
    )
    return int((await db.execute(statement)).scalar_one())


async def update_settings(db: AsyncSession, values: dict[str, int]) -> None:
    """Set the named columns of the one settings row (already checked)."""
    await db.execute(
        update(BillingSettings)
        .where(BillingSettings.id == 1)
        .values(**values, updated_at=func.now())
    )


async def set_signup_credits(db: AsyncSession, micros: int) -> None:
    await db.execute(
        update(BillingSettings)
        .where(BillingSettings.id == 1)
        .values(signup_credits_micros=micros, updated_at=func.now())
    )


# Plans


async def plans(db: AsyncSession, *, include_inactive: bool = False) -> list[Plan]:
    statement = select(Plan).order_by(Plan.display_order, Plan.id)
    if not include_inactive:
        statement = statement.where(Plan.active.is_(True))
    return list((await db.execute(statement)).scalars())


async def plan_by_id(db: AsyncSession, plan_id: str) -> Plan | None:
    return (
        await db.execute(select(Plan).where(Plan.id == plan_id))
    ).scalar_one_or_none()


# Payments


async def insert_payment(
    db: AsyncSession,
    *,
    payment_id: uuid.UUID,
    user_id: uuid.UUID,
    order_id: str,
    type: str,
    plan_id: str | None,
    billing_cycle: str | None,
    amount_paise: int,
    currency: str,
    credits_micros: int,
) -> None:
    await db.execute(
        insert(Payment).values(
            id=payment_id,
            user_id=user_id,
            order_id=order_id,
            type=type,
            plan_id=plan_id,
            billing_cycle=billing_cycle,
            amount_paise=amount_paise,
            currency=currency,
            credits_micros=credits_micros,
        )
    )


async def payment_of_user(
    db: AsyncSession, user_id: uuid.UUID, order_id: str
) -> Payment | None:
    statement = select(Payment).where(
        Payment.order_id == order_id, Payment.user_id == user_id
    )
    return (await db.execute(statement)).scalar_one_or_none()


async def payment_by_order(db: AsyncSession, order_id: str) -> Payment | None:
    statement = select(Payment).where(Payment.order_id == order_id)
    return (await db.execute(statement)).scalar_one_or_none()


async def complete_payment(
    db: AsyncSession, payment_id: uuid.UUID, razorpay_payment_id: str | None
) -> bool:
    """Mark a payment completed unless it already is; True if this call did.

    A payment another transaction is completing makes this statement wait
    for it on the row lock and then find it completed, so of every callback
    and webhook reporting one payment exactly one gets True. A failed
    payment may still complete: Razorpay lets an order be paid again after
    a declined attempt.
    """
    statement = (
        update(Payment)
        .where(Payment.id == payment_id, Payment.status.in_(("pending", "failed")))
        .values(
            status="completed",
            payment_id=func.coalesce(razorpay_payment_id, Payment.payment_id),
            completed_at=func.now(),
        )
        .returning(Payment.id)
    )
    return (await db.execute(statement)).scalar_one_or_none() is not None


async def fail_payment(
    db: AsyncSession, payment_id: uuid.UUID, razorpay_payment_id: str | None
) -> bool:
    """Mark a pending payment failed; False if it was not pending."""
    statement = (
        update(Payment)
        .where(Payment.id == payment_id, Payment.status == "pending")
        .values(
            status="failed",
            payment_id=func.coalesce(razorpay_payment_id, Payment.payment_id),
        )
        .returning(Payment.id)
    )
    return (await db.execute(statement)).scalar_one_or_none() is not None


async def set_period_end(
    db: AsyncSession, payment_id: uuid.UUID, period_end: datetime
) -> None:
    await db.execute(
        update(Payment).where(Payment.id == payment_id).values(period_end=period_end)
    )


async def period_end_of(db: AsyncSession, payment_id: uuid.UUID) -> datetime | None:
    statement = select(Payment.period_end).where(Payment.id == payment_id)
    return (await db.execute(statement)).scalar_one()


async def payments_page(
    db: AsyncSession,
    user_id: uuid.UUID,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Payment]:
    """Up to `limit` of a user's payments, newest first, older than `after`
    (a created_at and id) when given."""
    statement = select(Payment).where(Payment.user_id == user_id)
    if after is not None:
        statement = statement.where(
            tuple_(Payment.created_at, Payment.id) < tuple_(*after)
        )
    statement = statement.order_by(Payment.created_at.desc(), Payment.id.desc())
    return list((await db.execute(statement.limit(limit))).scalars())


# Subscriptions

PERIODS = {"monthly": "1 month", "yearly": "1 year"}


async def active_plan(db: AsyncSession, user_id: uuid.UUID) -> str | None:
    """The plan of the user's subscription if it is active and paid up."""
    statement = select(Subscription.plan_id).where(
        Subscription.user_id == user_id,
        Subscription.status == "active",
        Subscription.current_period_end > func.now(),
    )
    return (await db.execute(statement)).scalar_one_or_none()


async def extend_subscription(
    db: AsyncSession, user_id: uuid.UUID, plan_id: str, billing_cycle: str
) -> datetime:
    """Start a user's subscription, or move it to this plan and add one
    period to it; returns the new end of the period.

    A subscription still running is extended from its end, so paying early
    loses nothing; a lapsed one starts again now. PostgreSQL adds the month
    or year, so 31 January plus a month is the end of February.
    """
    period = cast(literal(PERIODS[billing_cycle]), INTERVAL)
    now = func.now()
    running = (Subscription.status == "active") & (
        Subscription.current_period_end > now
    )
    statement = (
        pg_insert(Subscription)
        .values(
            user_id=user_id,
            plan_id=plan_id,
            billing_cycle=billing_cycle,
            status="active",
            current_period_start=now,
            current_period_end=now + period,
        )
        .on_conflict_do_update(
            index_elements=[Subscription.user_id],
            set_={
                "plan_id": plan_id,
                "billing_cycle": billing_cycle,
                "status": "active",
                "current_period_start": case(
                    (running, Subscription.current_period_start), else_=now
                ),
                "current_period_end": func.greatest(
                    Subscription.current_period_end, now
                )
                + period,
                "updated_at": now,
            },
        )
        .returning(Subscription.current_period_end)
    )
    return (await db.execute(statement)).scalar_one()


# Webhook events


async def claim_webhook_event(
    db: AsyncSession, event_id: str, event: str, order_id: str | None
) -> bool:
    """Record an event as received; False if it was seen before. A concurrent
    delivery of the same event waits here until the first one commits."""
    statement = (
        pg_insert(WebhookEvent)
        .values(event_id=event_id, event=event, order_id=order_id, outcome="received")
        .on_conflict_do_nothing(index_elements=[WebhookEvent.event_id])
        .returning(WebhookEvent.event_id)
    )
    return (await db.execute(statement)).scalar_one_or_none() is not None


async def set_webhook_outcome(db: AsyncSession, event_id: str, outcome: str) -> None:
    await db.execute(
        update(WebhookEvent)
        .where(WebhookEvent.event_id == event_id)
        .values(outcome=outcome)
    )


# Reconciliation


async def unbalanced_accounts(db: AsyncSession) -> list[Unbalanced]:
    """Accounts whose balance is not the sum of their ledger, or whose `held`
    is not the sum of their open holds. Empty when the books are right."""
    ledger = (
        select(
            LedgerEntry.account_id,
            func.sum(LedgerEntry.amount).label("total"),
        )
        .group_by(LedgerEntry.account_id)
        .subquery()
    )
    open_holds = (
        select(Hold.account_id, func.sum(Hold.amount).label("total"))
        .where(Hold.status == "held")
        .group_by(Hold.account_id)
        .subquery()
    )
    ledger_total = func.coalesce(ledger.c.total, 0)
    open_total = func.coalesce(open_holds.c.total, 0)
    statement = (
        select(
            Account.id,
            Account.owner_type,
            Account.owner_id,
            Account.balance,
            Account.held,
            ledger_total.label("ledger_total"),
            open_total.label("open_holds"),
        )
        .outerjoin(ledger, ledger.c.account_id == Account.id)
        .outerjoin(open_holds, open_holds.c.account_id == Account.id)
        .where((Account.balance != ledger_total) | (Account.held != open_total))
        .order_by(Account.created_at)
    )
    return [
        Unbalanced(
            account_id=row.id,
            owner=Owner(row.owner_type, row.owner_id),
            balance=row.balance,
            ledger_total=int(row.ledger_total),
            held=row.held,
            open_holds=int(row.open_holds),
        )
        for row in await db.execute(statement)
    ]


# Operators' reports (SummarizeRevenue, ListAllPayments, ListSubscriptions).
# Status conditions are literals, so the planner can match the partial
# indexes of migration 0004 whatever plan it caches.

_COMPLETED = text("payments.status = 'completed'")
_CAPTURED = text("holds.status = 'captured'")
_INFLOW = text("ledger_entries.kind IN ('purchase', 'grant', 'refund', 'adjustment')")


@dataclass(frozen=True)
class RevenueRow:
    start: datetime | None
    currency: str
    amount: int
    payments: int


@dataclass(frozen=True)
class InflowRow:
    start: datetime
    kind: str
    amount: int


@dataclass(frozen=True)
class SpendRow:
    start: datetime | None
    usage_type: str
    count: int
    spent: int


async def revenue_by_bucket(db: AsyncSession, period: Period) -> list[RevenueRow]:
    """Completed payments of the period per bucket and currency."""
    bucket = period.bucket_of(Payment.completed_at)
    statement = (
        select(bucket, Payment.currency, func.sum(Payment.amount_paise), func.count())
        .where(
            _COMPLETED,
            Payment.completed_at >= period.start,
            Payment.completed_at < period.end,
        )
        .group_by(bucket, Payment.currency)
        .order_by(bucket, Payment.currency)
    )
    return [
        RevenueRow(start, currency, int(amount), int(count))
        for start, currency, amount, count in await db.execute(statement)
    ]


async def lifetime_revenue(db: AsyncSession) -> list[RevenueRow]:
    statement = (
        select(Payment.currency, func.sum(Payment.amount_paise), func.count())
        .where(_COMPLETED)
        .group_by(Payment.currency)
        .order_by(Payment.currency)
    )
    return [
        RevenueRow(None, currency, int(amount), int(count))
        for currency, amount, count in await db.execute(statement)
    ]


async def inflow_by_bucket(db: AsyncSession, period: Period) -> list[InflowRow]:
    """Credits brought in per bucket and ledger kind (purchase, grant,
    refund, adjustment), signed."""
    bucket = period.bucket_of(LedgerEntry.created_at)
    statement = (
        select(bucket, LedgerEntry.kind, func.sum(LedgerEntry.amount))
        .where(
            _INFLOW,
            LedgerEntry.created_at >= period.start,
            LedgerEntry.created_at < period.end,
        )
        .group_by(bucket, LedgerEntry.kind)
        .order_by(bucket)
    )
    return [
        InflowRow(start, kind, int(amount))
        for start, kind, amount in await db.execute(statement)
    ]


def _usage_type() -> Any:
    return func.coalesce(Hold.tags["usage_type"].astext, "")


async def spend_by_bucket(db: AsyncSession, period: Period) -> list[SpendRow]:
    """What captured holds charged, per bucket of their capture and usage
    type."""
    bucket = period.bucket_of(Hold.settled_at)
    usage = _usage_type()
    statement = (
        select(bucket, usage, func.count(), func.sum(Hold.captured))
        .where(_CAPTURED, Hold.settled_at >= period.start, Hold.settled_at < period.end)
        .group_by(bucket, usage)
        .order_by(bucket)
    )
    return [
        SpendRow(start, kind, int(count), int(spent or 0))
        for start, kind, count, spent in await db.execute(statement)
    ]


async def lifetime_spend(db: AsyncSession) -> list[SpendRow]:
    usage = _usage_type()
    statement = (
        select(usage, func.count(), func.sum(Hold.captured))
        .where(_CAPTURED)
        .group_by(usage)
        .order_by(usage)
    )
    return [
        SpendRow(None, kind, int(count), int(spent or 0))
        for kind, count, spent in await db.execute(statement)
    ]


async def credits_in_circulation(db: AsyncSession) -> int:
    statement = select(func.coalesce(func.sum(Account.balance + Account.held), 0))
    return int((await db.execute(statement)).scalar_one())


async def recurring_revenue(db: AsyncSession) -> tuple[int, int]:
    """Subscriptions active and paid up now, and what they bring a month in
    paise: the monthly price, or a twelfth of the yearly one."""
    monthly = case(
        (Subscription.billing_cycle == "yearly", Plan.price_yearly * 100 // 12),
        else_=Plan.price_monthly * 100,
    )
    statement = (
        select(func.count(), func.coalesce(func.sum(monthly), 0))
        .select_from(Subscription)
        .join(Plan, Plan.id == Subscription.plan_id)
        .where(
            Subscription.status == "active",
            Subscription.current_period_end > func.now(),
        )
    )
    count, paise = (await db.execute(statement)).one()
    return int(count), int(paise)


@dataclass(frozen=True)
class PaymentFilter:
    user_id: uuid.UUID | None = None
    status: str | None = None
    type: str | None = None


async def all_payments_page(
    db: AsyncSession,
    found: PaymentFilter,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Payment]:
    """Payments matching `found`, newest first, older than `after` (a
    created_at and id) when given."""
    statement = select(Payment)
    if found.user_id is not None:
        statement = statement.where(Payment.user_id == found.user_id)
    if found.status is not None:
        statement = statement.where(Payment.status == found.status)
    if found.type is not None:
        statement = statement.where(Payment.type == found.type)
    if after is not None:
        statement = statement.where(
            tuple_(Payment.created_at, Payment.id) < tuple_(*after)
        )
    statement = statement.order_by(Payment.created_at.desc(), Payment.id.desc())
    return list((await db.execute(statement.limit(limit))).scalars())


@dataclass(frozen=True)
class SubscriptionFilter:
    user_id: uuid.UUID | None = None
    status: str | None = None
    plan_id: str | None = None


async def subscriptions_page(
    db: AsyncSession,
    found: SubscriptionFilter,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[tuple[Subscription, str]]:
    """Subscriptions matching `found` with their plan's name, most recently
    changed first, after `after` (an updated_at and user id) when given."""
    statement = select(Subscription, Plan.name).join(
        Plan, Plan.id == Subscription.plan_id
    )
    if found.user_id is not None:
        statement = statement.where(Subscription.user_id == found.user_id)
    if found.status is not None:
        statement = statement.where(Subscription.status == found.status)
    if found.plan_id is not None:
        statement = statement.where(Subscription.plan_id == found.plan_id)
    if after is not None:
        statement = statement.where(
            tuple_(Subscription.updated_at, Subscription.user_id) < tuple_(*after)
        )
    statement = statement.order_by(
        Subscription.updated_at.desc(), Subscription.user_id.desc()
    ).limit(limit)
    return [(row[0], row[1]) for row in await db.execute(statement)]


async def subscriptions_by_status(db: AsyncSession) -> dict[str, int]:
    statement = select(Subscription.status, func.count()).group_by(Subscription.status)
    return {status: int(count) for status, count in await db.execute(statement)}


# Plans, as operators edit them


async def update_plan(
    db: AsyncSession, plan_id: str, values: dict[str, Any]
) -> Plan | None:
    statement = (
        update(Plan)
        .where(Plan.id == plan_id)
        .values(**values)
        .returning(Plan)
        .execution_options(populate_existing=True)
    )
    return (await db.execute(statement)).scalar_one_or_none()
