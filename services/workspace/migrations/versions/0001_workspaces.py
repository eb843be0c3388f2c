"""Workspaces, their members and invites.

Revision ID: 0001
Revises:
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision: str = "0001"
down_revision: str | None = None
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

ROLE_RANK_SQL = "CASE role WHEN 'owner' THEN 0 WHEN 'admin' THEN 1 ELSE 2 END"


def _at(name: str, *, nullable: bool = False) -> sa.Column[object]:
    if nullable:
        return sa.Column(name, sa.DateTime(timezone=True))
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
    )


def upgrade() -> None:
    _create_workspaces()
    _create_members()
    _create_invites()


def _create_workspaces() -> None:
    op.create_table(
        "workspaces",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("owner_id", UUID, nullable=False),
        sa.Column("is_personal", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column(
            "credit_mode", sa.String(16), nullable=False, server_default="shared"
        ),
        sa.Column("privacy_settings", JSONB, nullable=False),
        sa.Column("has_pool", sa.Boolean, nullable=False, server_default=sa.false()),
        _at("created_at"),
        _at("updated_at"),
        sa.CheckConstraint(
            "credit_mode IN ('user', 'shared', 'individual')",
            name="workspaces_credit_mode",
        ),
        sa.CheckConstraint(
            "(credit_mode = 'user') = is_personal", name="workspaces_personal_mode"
        ),
    )
    op.create_index(
        "workspaces_one_personal_per_owner",
        "workspaces",
        ["owner_id"],
        unique=True,
        postgresql_where=sa.text("is_personal"),
    )


def _create_members() -> None:
    op.create_table(
        "members",
        sa.Column("id", UUID, primary_key=True),
        sa.Column(
            "workspace_id",
            UUID,
            sa.ForeignKey("workspaces.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("user_id", UUID, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column(
            "role_rank",
            sa.SmallInteger,
            sa.Computed(ROLE_RANK_SQL, persisted=True),
            nullable=False,
        ),
        sa.Column(
            "has_allocation", sa.Boolean, nullable=False, server_default=sa.false()
        ),
        _at("joined_at"),
        sa.UniqueConstraint("workspace_id", "user_id", name="members_once"),
        sa.CheckConstraint("role IN ('owner', 'admin', 'member')", name="members_role"),
    )
    op.create_index(
        "members_one_owner",
        "members",
        ["workspace_id"],
        unique=True,
        postgresql_where=sa.text("role = 'owner'"),
    )
    op.create_index("members_by_user", "members", ["user_id"])
    op.create_index(
        "members_listing",
        "members",
        ["workspace_id", "role_rank", "joined_at", "id"],
    )


def _create_invites() -> None:
    op.create_table(
        "invites",
        sa.Column("id", UUID, primary_key=True),
        sa.Column(
            "workspace_id",
            UUID,
            sa.ForeignKey("workspaces.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("token_hash", sa.LargeBinary(32), nullable=False, unique=True),
        sa.Column("email", sa.String(254)),
        sa.Column("invited_by", UUID, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        _at("created_at"),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accepted_by", UUID),
        _at("settled_at", nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'accepted', 'revoked', 'expired')",
            name="invites_status",
        ),
        sa.CheckConstraint(
            "(status = 'accepted') = (accepted_by IS NOT NULL)",
            name="invites_accepted_by",
        ),
    )
    op.create_index(
        "invites_pending_per_email",
        "invites",
        ["workspace_id", "email"],
        unique=True,
        postgresql_where=sa.text("status = 'pending' AND email IS NOT NULL"),
    )
    op.create_index(
        "invites_pending",
        "invites",
        ["workspace_id", "created_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_table("invites")
    op.drop_table("members")
    op.drop_table("workspaces")
