"""What operators need: a reason and time for a user's status, a `deleted`
status for anonymised accounts, disabled operator accounts, idempotency
records of operator requests, and an index for the newest-first user list.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint("users_status", "users", type_="check")
    op.create_check_constraint(
        "users_status",
        "users",
        "status IN ('active', 'suspended', 'banned', 'deleted')",
    )
    op.add_column("users", sa.Column("status_reason", sa.String(500)))
    op.add_column("users", sa.Column("status_changed_at", sa.DateTime(timezone=True)))
    op.create_index(
        "users_newest_first",
        "users",
        [sa.text("created_at DESC"), sa.text("id DESC")],
    )
    op.add_column(
        "admins",
        sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "operator_requests",
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("fingerprint", sa.LargeBinary(32), nullable=False),
        sa.Column("result", JSONB, nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
    )


def downgrade() -> None:
    op.drop_table("operator_requests")
    op.drop_column("admins", "disabled")
    op.drop_index("users_newest_first", table_name="users")
    op.drop_column("users", "status_changed_at")
    op.drop_column("users", "status_reason")
    op.drop_constraint("users_status", "users", type_="check")
    op.create_check_constraint(
        "users_status", "users", "status IN ('active', 'suspended', 'banned')"
    )
