"""Fixtures of the chat tests: the real chat service on loopback gRPC (with
auth, billing, catalog, workspace and the local LLM behind it), a client
for it, and SQL access to the chat schema. After every test module no chat
hold may be left open and the billing books must balance."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.config import Settings
from libs.db import create_engine, session_factory
from services.billing import repository as billing_repository
from services.billing.main import describe
from services.billing.models import SCHEMA as BILLING_SCHEMA
from services.chat.main import ChatProcess
from services.chat.models import SCHEMA
from tests.services.chat.factories import ChatApi


@pytest.fixture(scope="session")
async def api(settings: Settings, chat_service: ChatProcess) -> AsyncIterator[ChatApi]:
    client = ChatApi(settings)
    yield client
    await client.close()


@pytest.fixture(scope="session")
async def chat_db(
    settings: Settings, chat_service: ChatProcess
) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings, SCHEMA)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module", autouse=True)
async def books_balance(
    settings: Settings, chat_service: ChatProcess
) -> AsyncIterator[None]:
    yield
    engine = create_engine(settings, BILLING_SCHEMA)
    try:
        async with session_factory(engine)() as db:
            unbalanced = await billing_repository.unbalanced_accounts(db)
            open_holds = await db.scalar(
                text(
                    "SELECT count(*) FROM holds WHERE status = 'held' AND "
                    "(reason LIKE 'Chat reply%' OR reason = 'Prompt enhancement')"
                )
            )
    finally:
        await engine.dispose()
    assert not unbalanced, "\n".join(describe(account) for account in unbalanced)
    assert open_holds == 0, f"{open_holds} chat holds were left open"
