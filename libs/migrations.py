"""The body of every service's Alembic env.py.

Migrations run online on the connection `libs.db.migrate` hands over, with
the version table inside the service's own schema.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import MetaData


def run(metadata: MetaData) -> None:
    config = context.config
    schema: str = config.attributes["schema"]
    connection = config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table_schema=schema,
        include_schemas=False,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()
