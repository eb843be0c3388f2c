"""libs/db.py against a real PostgreSQL: what the pool does when the server
goes away under one of its connections."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from libs.db import async_url, fetch_row


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    # One connection, so the next checkout is the one that was cut.
    engine = create_async_engine(async_url(database_url), pool_size=1, max_overflow=0)
    yield engine
    await engine.dispose()


async def _cut_pooled_connection(engine: AsyncEngine, database_url: str) -> None:
    """End the pooled connection's backend from another connection, as a
    database restart or a cut network would."""
    async with engine.connect() as connection:
        pid = await connection.scalar(text("SELECT pg_backend_pid()"))
    other = create_async_engine(async_url(database_url))
    try:
        async with other.connect() as connection:
            await connection.execute(
                text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}
            )
    finally:
        await other.dispose()


class TestFetchRow:
    async def test_reads_one_row(self, engine: AsyncEngine) -> None:
        async with engine.connect() as connection:
            row = await fetch_row(connection, "SELECT $1::int AS n", 7)

        assert row["n"] == 7

    async def test_a_lost_connection_is_a_connection_error(
        self, engine: AsyncEngine, database_url: str
    ) -> None:
        await _cut_pooled_connection(engine, database_url)

        with pytest.raises(ConnectionError):
            async with engine.connect() as connection:
                await fetch_row(connection, "SELECT 1 AS n")

    async def test_the_lost_connection_is_not_handed_out_again(
        self, engine: AsyncEngine, database_url: str
    ) -> None:
        await _cut_pooled_connection(engine, database_url)
        with pytest.raises(ConnectionError):
            async with engine.connect() as connection:
                await fetch_row(connection, "SELECT 1 AS n")

        async with engine.connect() as connection:
            row = await fetch_row(connection, "SELECT 1 AS n")

        assert row["n"] == 1
