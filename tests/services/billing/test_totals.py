"""services/billing/totals.py: the ledger totals read in one statement, and
the gauges set from them.

Each scenario runs in one REPEATABLE READ transaction that is rolled back:
the totals before and after see one snapshot plus this test's own money
movements, so the difference is exactly what the test did, whatever other
tests commit meanwhile, and nothing is left in the books.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.billing.service import AccountRef, BillingService
from services.billing.totals import LedgerTotals, publish_totals, read_totals
from tests.services.billing.factories import CREDIT, new_key


@pytest.fixture
async def db(
    billing_db: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    async with billing_db() as session:
        await session.connection(
            execution_options={"isolation_level": "REPEATABLE READ"}
        )
        yield session
        await session.rollback()


def _new_account() -> AccountRef:
    return AccountRef("user", str(uuid.uuid4()))


def _difference(after: LedgerTotals, before: LedgerTotals) -> LedgerTotals:
    return LedgerTotals(
        after.balance - before.balance,
        after.held - before.held,
        after.captured - before.captured,
        after.granted - before.granted,
    )


class TestReadTotals:
    async def test_grants_raise_the_balance_and_the_granted_total(
        self, db: AsyncSession
    ) -> None:
        before = await read_totals(db)

        await BillingService().grant(db, _new_account(), 5 * CREDIT, new_key(), "Gift")

        moved = _difference(await read_totals(db), before)
        assert moved == LedgerTotals(5 * CREDIT, 0, 0, 5 * CREDIT)

    async def test_open_and_captured_holds_are_told_apart(
        self, db: AsyncSession
    ) -> None:
        billing = BillingService()
        account = _new_account()
        await billing.grant(db, account, 5 * CREDIT, new_key(), "Gift")
        before = await read_totals(db)

        captured = await billing.hold(
            db, account, 2 * CREDIT, new_key(), "Generation", "g-1", {}
        )
        await billing.capture(db, captured.hold_id, CREDIT, new_key())
        await billing.hold(db, account, CREDIT, new_key(), "Generation", "g-2", {})

        moved = _difference(await read_totals(db), before)
        # 2 held, 1 of them charged and 1 returned; 1 more still held.
        assert moved == LedgerTotals(-2 * CREDIT, CREDIT, CREDIT, 0)


class TestPublishTotals:
    def test_gauges_show_the_totals_read(self) -> None:
        publish_totals(LedgerTotals(7, 3, 11, 21))

        assert REGISTRY.get_sample_value("omnihub_credits_balance_micros") == 7
        assert REGISTRY.get_sample_value("omnihub_credits_held_micros") == 3
        assert REGISTRY.get_sample_value("omnihub_credits_captured_micros") == 11
        assert REGISTRY.get_sample_value("omnihub_credits_granted_micros") == 21
