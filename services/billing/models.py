"""Tables of the billing service, all in the `billing` schema.

Amounts are integer micro-credits (1 credit = 1,000,000) in BIGINT columns.
An account's `balance` is what it may spend now; `held` is the sum of its
open holds, already taken out of `balance`. Both only change in the
transaction that appends the ledger entry explaining the change, so for
every account `balance = sum(ledger_entries.amount)` and
`held = sum(open holds)`; `services.billing.main reconcile` checks it.
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

OWNER_TYPES = ("user", "workspace")
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


@dataclass(frozen=True)
class Owner:
    """Whose account: a user's own credits or a workspace's pool."""

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
    )


class BillingSettings(Base):
    """The billing service's own settings: exactly one row."""

    __tablename__ = "settings"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, default=1)
    signup_credits_micros: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = _now()

    __table_args__ = (
        CheckConstraint("id = 1", name="settings_single_row"),
        CheckConstraint(
            "signup_credits_micros >= 0", name="settings_signup_credits_not_negative"
        ),
    )
