"""Accounts, operator accounts, sessions with refresh-token chains, and
rate-limit buckets.

Revision ID: 0001
Revises:
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision: str = "0001"
down_revision: str | None = None
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def _timestamps() -> list[sa.Column[object]]:
    return [
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
    ]


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("email", sa.String(254), nullable=False, unique=True),
        sa.Column("password_hash", sa.Text),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("nickname", sa.String(40), nullable=False, unique=True),
        sa.Column("avatar_url", sa.Text),
        sa.Column("google_id", sa.String(255), unique=True),
        sa.Column(
            "auth_provider", sa.String(16), nullable=False, server_default="email"
        ),
        sa.Column("status", sa.String(16), nullable=False, server_default="active"),
        *_timestamps(),
        sa.CheckConstraint(
            "status IN ('active', 'suspended', 'banned')", name="users_status"
        ),
        sa.CheckConstraint("email = lower(email)", name="users_email_lower"),
    )
    op.create_table(
        "admins",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("role", sa.String(16), nullable=False, server_default="superadmin"),
        *_timestamps(),
        sa.CheckConstraint(
            "role IN ('superadmin', 'support', 'viewer')", name="admins_role"
        ),
    )
    op.create_table(
        "sessions",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("user_id", UUID, sa.ForeignKey("users.id", ondelete="CASCADE")),
        sa.Column("admin_id", UUID, sa.ForeignKey("admins.id", ondelete="CASCADE")),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "last_used_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.Column("revoke_reason", sa.String(32)),
        sa.Column("user_agent", sa.String(512)),
        sa.Column("ip_address", sa.String(64)),
        sa.CheckConstraint(
            "num_nonnulls(user_id, admin_id) = 1", name="sessions_one_owner"
        ),
    )
    op.create_index(
        "sessions_user_active",
        "sessions",
        ["user_id"],
        postgresql_where=sa.text("revoked_at IS NULL"),
    )
    op.create_index(
        "sessions_revoked_at",
        "sessions",
        ["revoked_at"],
        postgresql_where=sa.text("revoked_at IS NOT NULL"),
    )
    op.create_table(
        "refresh_tokens",
        sa.Column("id", UUID, primary_key=True),
        sa.Column(
            "session_id",
            UUID,
            sa.ForeignKey("sessions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("parent_id", UUID),
        sa.Column("token_hash", sa.LargeBinary(32), nullable=False, unique=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.Column("used_at", sa.DateTime(timezone=True)),
    )
    op.create_index("refresh_tokens_session_id", "refresh_tokens", ["session_id"])
    op.create_index("refresh_tokens_parent_id", "refresh_tokens", ["parent_id"])
    op.create_table(
        "rate_limit_buckets",
        sa.Column("key", sa.String(320), primary_key=True),
        sa.Column("allowed_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rate_limit_buckets")
    op.drop_table("refresh_tokens")
    op.drop_table("sessions")
    op.drop_table("admins")
    op.drop_table("users")
