"""services/chat/models.py and migrations/: the hand-written migrations make
exactly the schema the models describe."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from libs.config import Settings
from libs.db import create_engine
from services.chat.main import ChatProcess
from services.chat.models import SCHEMA, Base


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection,
        opts={
            "include_schemas": True,
            "include_name": lambda name, kind, _: kind != "schema" or name == SCHEMA,
            "compare_server_default": True,
        },
    )
    return list(compare_metadata(context, Base.metadata))


async def test_migrations_match_the_models(
    settings: Settings, chat_service: ChatProcess
) -> None:
    # Looked at from outside the schema, so that it is compared by name.
    engine = create_engine(settings, "public")
    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(_differences)
    finally:
        await engine.dispose()

    # Alembic's own version table is the one thing the models do not list.
    assert [d for d in differences if "alembic_version" not in str(d)] == []
