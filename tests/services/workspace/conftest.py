"""Fixtures of the workspace tests: the real workspace service on loopback
gRPC (with auth and billing behind it), a client for it, and SQL access to
the workspace schema. After every test module the billing books must
balance: credits moved for workspaces are ledger entries like any other."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.config import Settings
from libs.db import create_engine, session_factory
from services.billing import repository as billing_repository
from services.billing.main import describe
from services.billing.models import SCHEMA as BILLING_SCHEMA
from services.workspace.main import WorkspaceProcess
from services.workspace.models import SCHEMA
from tests.services.workspace.factories import WorkspaceApi


@pytest.fixture(scope="session")
async def api(
    settings: Settings, workspace_service: WorkspaceProcess
) -> AsyncIterator[WorkspaceApi]:
    client = WorkspaceApi(settings)
    yield client
    await client.close()


@pytest.fixture(scope="session")
async def workspace_db(
    settings: Settings, workspace_service: WorkspaceProcess
) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings, SCHEMA)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module", autouse=True)
async def books_balance(
    settings: Settings, workspace_service: WorkspaceProcess
) -> AsyncIterator[None]:
    yield
    engine = create_engine(settings, BILLING_SCHEMA)
    try:
        async with session_factory(engine)() as db:
            unbalanced = await billing_repository.unbalanced_accounts(db)
    finally:
        await engine.dispose()
    assert not unbalanced, "\n".join(describe(account) for account in unbalanced)
