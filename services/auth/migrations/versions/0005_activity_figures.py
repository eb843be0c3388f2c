"""Operators' figures: an index of sessions by last use, so counting the
users active in the last day, week or month reads the index alone.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "sessions_user_activity",
        "sessions",
        ["last_used_at", "user_id"],
        postgresql_where=sa.text("user_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("sessions_user_activity", table_name="sessions")
