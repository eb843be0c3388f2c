"""Projects and their assets.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def _at(name: str) -> sa.Column[object]:
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
    )


def upgrade() -> None:
    _create_projects()
    _create_project_assets()


def _create_projects() -> None:
    op.create_table(
        "projects",
        sa.Column("id", UUID, primary_key=True),
        sa.Column(
            "workspace_id",
            UUID,
            sa.ForeignKey("workspaces.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("owner_id", UUID, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.String(2000), nullable=False, server_default=""),
        sa.Column("color", sa.String(7), nullable=False, server_default="#8b5cf6"),
        sa.Column(
            "shared_with_workspace",
            sa.Boolean,
            nullable=False,
            server_default=sa.false(),
        ),
        _at("created_at"),
        _at("updated_at"),
        sa.CheckConstraint("length(name) >= 1", name="projects_name"),
        sa.CheckConstraint("color ~ '^#[0-9a-f]{6}$'", name="projects_color"),
    )
    op.create_index(
        "projects_by_owner",
        "projects",
        ["owner_id", sa.text("created_at DESC")],
    )
    op.create_index(
        "projects_shared",
        "projects",
        ["workspace_id", sa.text("created_at DESC")],
        postgresql_where=sa.text("shared_with_workspace"),
    )


def _create_project_assets() -> None:
    op.create_table(
        "project_assets",
        sa.Column("id", UUID, primary_key=True),
        sa.Column(
            "project_id",
            UUID,
            sa.ForeignKey("projects.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("added_by", UUID, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("url", sa.String(2048)),
        sa.Column("generation_id", UUID),
        sa.Column("title", sa.String(200), nullable=False, server_default=""),
        sa.Column(
            "metadata", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")
        ),
        _at("created_at"),
        sa.CheckConstraint(
            "kind IN ('image', 'video', 'text', 'generation')",
            name="project_assets_kind",
        ),
        sa.CheckConstraint(
            "url IS NOT NULL OR generation_id IS NOT NULL",
            name="project_assets_points_somewhere",
        ),
        sa.CheckConstraint(
            "octet_length(metadata::text) <= 4096", name="project_assets_metadata"
        ),
    )
    op.create_index(
        "project_assets_once_per_generation",
        "project_assets",
        ["project_id", "generation_id"],
        unique=True,
        postgresql_where=sa.text("generation_id IS NOT NULL"),
    )
    op.create_index(
        "project_assets_listing",
        "project_assets",
        ["project_id", sa.text("created_at DESC")],
    )


def downgrade() -> None:
    op.drop_table("project_assets")
    op.drop_table("projects")
