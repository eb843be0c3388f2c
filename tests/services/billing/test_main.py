"""services/billing/main.py: the `reconcile` command."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.config import Settings
from services.billing import repository
from services.billing.main import reconcile
from services.billing.models import Owner
from tests.services.billing.factories import CREDIT, BillingClient, funded_account

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
async def skewed_account(
    billing: BillingClient, billing_db: async_sessionmaker[AsyncSession]
) -> AsyncIterator[uuid.UUID]:
    """An account whose balance disagrees with its ledger for one test."""
    account = await funded_account(billing, CREDIT)
    async with billing_db.begin() as db:
        found = await repository.account_by_owner(
            db, Owner("user", uuid.UUID(account.owner_id))
        )
        assert found is not None
        await _shift(db, found.account_id, 7)
    yield found.account_id
    async with billing_db.begin() as db:
        await _shift(db, found.account_id, -7)


async def _shift(db: AsyncSession, account_id: uuid.UUID, by: int) -> None:
    await db.execute(
        text("UPDATE accounts SET balance = balance + :by WHERE id = :id"),
        {"by": by, "id": account_id},
    )


def _run_reconcile(settings: Settings) -> subprocess.CompletedProcess[str]:
    assert settings.database_url is not None
    environment = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'protos'}",
        "LOG_LEVEL": "WARNING",
    }
    return subprocess.run(
        [sys.executable, "-m", "services.billing.main", "reconcile"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class TestReconcile:
    async def test_balanced_books_exit_zero(
        self,
        billing: BillingClient,
        settings: Settings,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        await funded_account(billing, CREDIT)

        status = await reconcile(settings)

        assert status == 0
        assert "Every account reconciles" in capsys.readouterr().out

    async def test_unbalanced_account_is_printed_and_exits_non_zero(
        self, settings: Settings, skewed_account: uuid.UUID
    ) -> None:
        result = _run_reconcile(settings)

        assert result.returncode == 1, result.stderr
        [line] = [
            row for row in result.stdout.splitlines() if str(skewed_account) in row
        ]
        assert "balance 1.000007 vs ledger 1" in line
        assert "1 account(s) do not reconcile." in result.stdout
