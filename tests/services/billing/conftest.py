"""Fixtures of the billing tests: a real billing service on loopback gRPC,
a client with service and user identities, and direct access to the billing
schema. After every test module the books must balance: each account's
balance equals the sum of its ledger and its `held` the sum of its open
holds."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.config import Settings
from libs.db import create_engine, session_factory
from services.billing import repository
from services.billing.main import BillingProcess, describe
from services.billing.models import SCHEMA
from tests.services.billing.factories import BillingClient


@pytest.fixture(scope="session")
async def billing(
    settings: Settings, billing_service: BillingProcess
) -> AsyncIterator[BillingClient]:
    client = BillingClient(settings)
    yield client
    await client.close()


@pytest.fixture(scope="session")
async def billing_db(
    settings: Settings, billing_service: BillingProcess
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(settings, SCHEMA)
    yield session_factory(engine)
    await engine.dispose()


@pytest.fixture(scope="module", autouse=True)
async def books_balance(
    billing_db: async_sessionmaker[AsyncSession],
) -> AsyncIterator[None]:
    yield
    async with billing_db() as db:
        unbalanced = await repository.unbalanced_accounts(db)
    assert not unbalanced, "\n".join(describe(account) for account in unbalanced)
