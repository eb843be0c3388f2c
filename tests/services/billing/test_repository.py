"""services/billing/repository.py and the guarantees the schema itself gives:
the ledger is append-only, no balance goes below zero, and reconciliation
finds any account whose totals disagree with its ledger or holds."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.billing import repository
from services.billing.models import Owner
from tests.services.billing.factories import (
    CREDIT,
    BillingClient,
    funded_account,
)

Sessions = async_sessionmaker[AsyncSession]


async def _account_id(sessions: Sessions, owner_id: str) -> uuid.UUID:
    async with sessions() as db:
        found = await repository.account_by_owner(
            db, Owner("user", uuid.UUID(owner_id))
        )
    assert found is not None
    return found.account_id


@pytest.fixture
async def account_id(billing: BillingClient, billing_db: Sessions) -> uuid.UUID:
    account = await funded_account(billing, 2 * CREDIT)
    return await _account_id(billing_db, account.owner_id)


@pytest.fixture
async def skewed(
    billing_db: Sessions, account_id: uuid.UUID
) -> AsyncIterator[uuid.UUID]:
    """An account whose balance was changed behind the ledger's back; put
    right afterwards so that the module's books still balance."""
    await _shift_balance(billing_db, account_id, CREDIT)
    yield account_id
    await _shift_balance(billing_db, account_id, -CREDIT)


async def _shift_balance(sessions: Sessions, account_id: uuid.UUID, by: int) -> None:
    async with sessions.begin() as db:
        await db.execute(
            text("UPDATE accounts SET balance = balance + :by WHERE id = :id"),
            {"by": by, "id": account_id},
        )


class TestLedgerIsAppendOnly:
    @pytest.mark.parametrize(
        "statement",
        [
            "UPDATE ledger_entries SET amount = amount * 2 WHERE account_id = :id",
            "DELETE FROM ledger_entries WHERE account_id = :id",
        ],
    )
    async def test_ledger_rows_cannot_be_changed(
        self, billing_db: Sessions, account_id: uuid.UUID, statement: str
    ) -> None:
        with pytest.raises(DBAPIError, match="append-only"):
            async with billing_db.begin() as db:
                await db.execute(text(statement), {"id": account_id})

    async def test_ledger_cannot_be_truncated(self, billing_db: Sessions) -> None:
        with pytest.raises(DBAPIError, match="append-only"):
            async with billing_db.begin() as db:
                await db.execute(text("TRUNCATE ledger_entries CASCADE"))


class TestAccounts:
    async def test_balance_below_zero_is_refused_by_the_database(
        self, billing_db: Sessions, account_id: uuid.UUID
    ) -> None:
        with pytest.raises(IntegrityError, match="accounts_balance_not_negative"):
            await _shift_balance(billing_db, account_id, -3 * CREDIT)

    async def test_debit_of_more_than_the_balance_changes_nothing(
        self, billing: BillingClient, billing_db: Sessions
    ) -> None:
        account = await funded_account(billing, CREDIT)
        owner = Owner("user", uuid.UUID(account.owner_id))

        async with billing_db.begin() as db:
            debited = await repository.debit(db, owner, CREDIT + 1)

        assert debited is None
        assert await billing.balance(account) == (CREDIT, 0)


class TestUnbalancedAccounts:
    async def test_balances_kept_by_the_service_reconcile(
        self, billing_db: Sessions, account_id: uuid.UUID
    ) -> None:
        async with billing_db() as db:
            unbalanced = await repository.unbalanced_accounts(db)

        assert account_id not in {account.account_id for account in unbalanced}

    async def test_balance_changed_outside_the_ledger_is_reported(
        self, billing_db: Sessions, skewed: uuid.UUID
    ) -> None:
        async with billing_db() as db:
            unbalanced = await repository.unbalanced_accounts(db)

        [found] = [account for account in unbalanced if account.account_id == skewed]
        assert (found.balance, found.ledger_total) == (3 * CREDIT, 2 * CREDIT)
        assert (found.held, found.open_holds) == (0, 0)

    async def test_held_without_an_open_hold_is_reported(
        self, billing_db: Sessions, account_id: uuid.UUID
    ) -> None:
        async with billing_db.begin() as db:
            await db.execute(
                text("UPDATE accounts SET held = held + 5 WHERE id = :id"),
                {"id": account_id},
            )
        try:
            async with billing_db() as db:
                unbalanced = await repository.unbalanced_accounts(db)
        finally:
            async with billing_db.begin() as db:
                await db.execute(
                    text("UPDATE accounts SET held = held - 5 WHERE id = :id"),
                    {"id": account_id},
                )

        [found] = [a for a in unbalanced if a.account_id == account_id]
        assert (found.held, found.open_holds) == (5, 0)
