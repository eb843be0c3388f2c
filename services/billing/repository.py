"""All SQL of the billing service.

Balances change only through the statements here, each a single conditional
UPDATE (or upsert) that PostgreSQL evaluates under the row lock: no balance
is ever read into Python, changed and written back.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.billing.models import (
    Account,
    BillingSettings,
    Hold,
    LedgerEntry,
    Operation,
    Owner,
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


async def account_by_owner(db: AsyncSession, owner: Owner) -> AccountBalance | None:
    statement = select(Account.id, Account.balance, Account.held).where(
        Account.owner_type == owner.type, Account.owner_id == owner.id
    )
    row = (await db.execute(statement)).one_or_none()
    return AccountBalance(row.id, row.balance, row.held) if row else None


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


async def set_signup_credits(db: AsyncSession, micros: int) -> None:
    await db.execute(
        update(BillingSettings)
        .where(BillingSettings.id == 1)
        .values(signup_credits_micros=micros, updated_at=func.now())
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
