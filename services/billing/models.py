"""Tables of the billing service, all in the `billing` schema.

Amounts are integer micro-credits (1 credit = 1,000,000) in BIGINT columns.
An account's `balance` is what it may spend now; `held` is the sum of its
open holds, already taken out of `balance`. Both only change in the
transaction that appends the ledger entry explaining the change, so for
every account `balance = sum(ledger_entries.amount)` and
`held = sum(open holds)`; `services.billing.main reconcile` checks it.

Payments are Razorpay orders, in paise (1 rupee = 100 paise). A payment
grants its credits through the ledger like any other movement, keyed by its
order id, so it can be granted once however many callbacks and webhooks
report it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA = "billing"

# "member" is one member's allocation inside one workspace (the owner id is
# the membership's id in the workspace service).
OWNER_TYPES = ("user", "workspace", "member")
ENTRY_KINDS = (
    "grant",
    "purchase",
    "hold",
    "capture",
    "release",
    "refund",
    "transfer",
    "adjustment",
)
HOLD_STATUSES = ("held", "captured", "released")
PAYMENT_TYPES = ("subscription", "credits")
PAYMENT_STATUSES = ("pending", "completed", "failed")
BILLING_CYCLES = ("monthly", "yearly")
SUBSCRIPTION_STATUSES = ("active", "cancelled")


@dataclass(frozen=True)
class Owner:
    """Whose account: a user's own credits, a workspace's pool or one
    member's allocation in a workspace."""

    type: str
    id: uuid.UUID

    def __str__(self) -> str:
        return f"{self.type}:{self.id}"


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA)


def _now() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now())


class Account(Base):
    """The credits of one user or one workspace pool, created on first credit."""

    __tablename__ = "accounts"

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    owner_type: Mapped[str] = mapped_column(String(16))
    owner_id: Mapped[uuid.UUID] = mapped_column(UUID)
    balance: Mapped[int] = mapped_column(BigInteger, server_default="0")
    held: Mapped[int] = mapped_column(BigInteger, server_default="0")
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()

    __table_args__ = (
        UniqueConstraint("owner_type", "owner_id", name="accounts_owner"),
        CheckConstraint(_one_of("owner_type", OWNER_TYPES), name="accounts_owner_type"),
        # The last line of defence: no code path can overdraw an account.
        CheckConstraint("balance >= 0", name="accounts_balance_not_negative"),
        CheckConstraint("held >= 0", name="accounts_held_not_negative"),
    )


class Operation(Base):
    """One idempotent money movement, keyed by the caller's idempotency key.

    `fingerprint` is a SHA-256 of the canonical request, so a retry with the
    same key is told apart from a different request reusing the key; `result`
    is the first reply, returned again to every retry.
    """

    __tablename__ = "operations"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary(32))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _now()


class Hold(Base):
    """Credits reserved for work in progress, settled once: captured (all or
    part, the rest returned) or released (all returned)."""

    __tablename__ = "holds"

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    captured: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), server_default="held")
    reason: Mapped[str] = mapped_column(Text, server_default="")
    reference: Mapped[str] = mapped_column(Text, server_default="")
    tags: Mapped[dict[str, str]] = mapped_column(
        JSONB, server_default=text("'{}'::jsonb")
    )
    created_at: Mapped[datetime] = _now()
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("amount > 0", name="holds_amount_positive"),
        CheckConstraint(_one_of("status", HOLD_STATUSES), name="holds_status"),
        CheckConstraint(
            "(status = 'held') = (settled_at IS NULL)", name="holds_settled_at"
        ),
        CheckConstraint(
            "captured IS NULL OR captured BETWEEN 0 AND amount",
            name="holds_captured_within_amount",
        ),
        Index(
            "holds_open_by_account",
            "account_id",
            postgresql_where=text("status = 'held'"),
        ),
        # Usage reports select captured holds by tag containment (@>).
        Index(
            "holds_captured_tags",
            "tags",
            postgresql_using="gin",
            postgresql_ops={"tags": "jsonb_path_ops"},
            postgresql_where=text("status = 'captured'"),
        ),
        # Credits spent per day, for operators (migration 0004).
        Index(
            "holds_captured_by_time",
            "settled_at",
            postgresql_where=text("status = 'captured'"),
        ),
    )


class LedgerEntry(Base):
    """One signed change of an account's balance. Append-only: a trigger
    refuses UPDATE, DELETE and TRUNCATE; corrections are new entries."""

    __tablename__ = "ledger_entries"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"))
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(BigInteger)
    balance_after: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text, server_default="")
    reference: Mapped[str] = mapped_column(Text, server_default="")
    tags: Mapped[dict[str, str]] = mapped_column(
        JSONB, server_default=text("'{}'::jsonb")
    )
    hold_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("holds.id"))
    operation_key: Mapped[str] = mapped_column(ForeignKey("operations.key"))
    created_at: Mapped[datetime] = _now()

    __table_args__ = (
        CheckConstraint(_one_of("kind", ENTRY_KINDS), name="ledger_entries_kind"),
        CheckConstraint(
            "balance_after >= 0", name="ledger_entries_balance_after_not_negative"
        ),
        Index("ledger_entries_account_history", "account_id", text("id DESC")),
        # Credits brought in per day, for operators (migration 0004).
        Index(
            "ledger_entries_inflow_by_time",
            "created_at",
            postgresql_where=text(
                "kind IN ('purchase', 'grant', 'refund', 'adjustment')"
            ),
        ),
    )


class BillingSettings(Base):
    """The billing service's own settings: exactly one row."""

    __tablename__ = "settings"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, default=1)
    signup_credits_micros: Mapped[int] = mapped_column(BigInteger)
    # What one credit costs when bought on its own, in paise.
    credit_price_paise: Mapped[int] = mapped_column(BigInteger, server_default="100")
    updated_at: Mapped[datetime] = _now()

    __table_args__ = (
        CheckConstraint("id = 1", name="settings_single_row"),
        CheckConstraint(
            "signup_credits_micros >= 0", name="settings_signup_credits_not_negative"
        ),
        CheckConstraint(
            "credit_price_paise > 0", name="settings_credit_price_positive"
        ),
    )


class Plan(Base):
    """A subscription plan as sold: prices in whole rupees."""

    __tablename__ = "plans"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    price_monthly: Mapped[int] = mapped_column(Integer)
    price_yearly: Mapped[int] = mapped_column(Integer)
    credits_per_month: Mapped[int] = mapped_column(BigInteger)
    features: Mapped[list[str]] = mapped_column(
        JSONB, server_default=text("'[]'::jsonb")
    )
    is_popular: Mapped[bool] = mapped_column(server_default=text("false"))
    display_order: Mapped[int] = mapped_column(Integer, server_default="0")
    # Off sale: not listed publicly, no new orders (migration 0004).
    active: Mapped[bool] = mapped_column(server_default=text("true"))
    created_at: Mapped[datetime] = _now()

    __table_args__ = (
        CheckConstraint(
            "price_monthly > 0 AND price_yearly > 0", name="plans_prices_positive"
        ),
        CheckConstraint("credits_per_month > 0", name="plans_credits_positive"),
    )


class Payment(Base):
    """One Razorpay order for a plan or for credits, and what became of it.

    `amount_paise` and `credits_micros` are fixed when the order is made, so
    the grant is what was sold even if the plan changes before payment.
    """

    __tablename__ = "payments"

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(UUID)
    order_id: Mapped[str] = mapped_column(String(64), unique=True)
    payment_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    type: Mapped[str] = mapped_column(String(16))
    plan_id: Mapped[str | None] = mapped_column(ForeignKey("plans.id"))
    billing_cycle: Mapped[str | None] = mapped_column(String(16))
    amount_paise: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3), server_default="INR")
    credits_micros: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    # The subscription period this payment paid up to, once granted.
    period_end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint(_one_of("type", PAYMENT_TYPES), name="payments_type"),
        CheckConstraint(_one_of("status", PAYMENT_STATUSES), name="payments_status"),
        CheckConstraint(
            "(type = 'subscription') = (plan_id IS NOT NULL "
            "AND billing_cycle IS NOT NULL)",
            name="payments_plan_only_for_subscriptions",
        ),
        CheckConstraint(
            "billing_cycle IS NULL OR " + _one_of("billing_cycle", BILLING_CYCLES),
            name="payments_billing_cycle",
        ),
        CheckConstraint("amount_paise > 0", name="payments_amount_positive"),
        CheckConstraint("credits_micros > 0", name="payments_credits_positive"),
        CheckConstraint(
            "(status = 'completed') = (completed_at IS NOT NULL)",
            name="payments_completed_at",
        ),
        Index("payments_by_user", "user_id", text("created_at DESC"), text("id DESC")),
        # Operators' reports (migration 0004).
        Index(
            "payments_completed",
            "completed_at",
            postgresql_where=text("status = 'completed'"),
        ),
        Index("payments_newest_first", text("created_at DESC"), text("id DESC")),
    )


class Subscription(Base):
    """A user's plan and the period it is paid up to; one row per user."""

    __tablename__ = "subscriptions"

    user_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    plan_id: Mapped[str] = mapped_column(ForeignKey("plans.id"))
    billing_cycle: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), server_default="active")
    current_period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    current_period_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()

    __table_args__ = (
        CheckConstraint(
            _one_of("billing_cycle", BILLING_CYCLES), name="subscriptions_billing_cycle"
        ),
        CheckConstraint(
            _one_of("status", SUBSCRIPTION_STATUSES), name="subscriptions_status"
        ),
        CheckConstraint(
            "current_period_end > current_period_start",
            name="subscriptions_period_forwards",
        ),
        Index(
            "subscriptions_recently_changed",
            text("updated_at DESC"),
            text("user_id DESC"),
        ),
    )


class WebhookEvent(Base):
    """Every Razorpay webhook event handled, by Razorpay's event id, so a
    redelivered event is recognised and acknowledged without acting twice."""

    __tablename__ = "webhook_events"

    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    event: Mapped[str] = mapped_column(Text)
    order_id: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(32))
    received_at: Mapped[datetime] = _now()
