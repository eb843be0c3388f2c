"""Operators' figures: generations by the moment they were started, so a
report on a day or a month reads that range and not the whole table.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("generations_by_start", "generations", ["started_at"])


def downgrade() -> None:
    op.drop_index("generations_by_start", table_name="generations")
