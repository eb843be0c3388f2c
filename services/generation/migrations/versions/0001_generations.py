"""Jobs, generations, community posts, likes and share links.

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

ACTIVE_JOB_STATES = "state IN ('holding', 'queued', 'submitting', 'submitted')"


def _at(name: str, *, nullable: bool = True) -> sa.Column[object]:
    if nullable:
        return sa.Column(name, sa.DateTime(timezone=True))
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
    )


def _flag(name: str, default: str = "false") -> sa.Column[object]:
    return sa.Column(name, sa.Boolean, server_default=sa.text(default), nullable=False)


def upgrade() -> None:
    _create_jobs()
    _create_generations()
    _create_bookkeeping()
    _create_community()


def _create_jobs() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("user_id", UUID, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("model_id", sa.Text, nullable=False),
        sa.Column("endpoint", sa.Text, nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("state", sa.String(16), server_default="holding", nullable=False),
        sa.Column("request_id", sa.Text, unique=True),
        sa.Column("status_url", sa.Text),
        sa.Column("response_url", sa.Text),
        sa.Column("cancel_url", sa.Text),
        sa.Column("queue_position", sa.Integer),
        sa.Column("progress", sa.Text),
        _flag("simulated"),
        _flag("cancel_requested"),
        sa.Column("lease_owner", sa.Text),
        _at("lease_expires_at"),
        _at("due_at", nullable=False),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer, server_default="0", nullable=False),
        sa.Column("errors", sa.Integer, server_default="0", nullable=False),
        sa.Column("last_error", sa.Text),
        _at("created_at", nullable=False),
        _at("submitted_at"),
        _at("finished_at"),
        sa.CheckConstraint(
            "state IN ('holding', 'queued', 'submitting', 'submitted', 'finished')",
            name="job_state",
        ),
        sa.CheckConstraint("kind IN ('generate', 'upscale')", name="job_kind"),
    )
    op.create_index(
        "jobs_due", "jobs", ["due_at"], postgresql_where=sa.text(ACTIVE_JOB_STATES)
    )


def _create_generations() -> None:
    op.create_table(
        "generations",
        sa.Column("id", UUID, primary_key=True),
        sa.Column(
            "job_id",
            UUID,
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("user_id", UUID, nullable=False),
        sa.Column("workspace_id", UUID, nullable=False),
        _flag("shared_with_workspace"),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("model_id", sa.Text, nullable=False),
        sa.Column("model_name", sa.Text, nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("options", JSONB, nullable=False),
        sa.Column("image_index", sa.SmallInteger, server_default="0", nullable=False),
        sa.Column("credits_micros", sa.BigInteger, nullable=False),
        sa.Column("payer_type", sa.SmallInteger, nullable=False),
        sa.Column("payer_id", UUID, nullable=False),
        sa.Column("credit_source", sa.String(24), nullable=False),
        sa.Column("hold_id", sa.Text),
        sa.Column("status", sa.String(16), server_default="pending", nullable=False),
        sa.Column("result_url", sa.Text),
        sa.Column("thumbnail_url", sa.Text),
        sa.Column("provider_url", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("error_type", sa.String(32)),
        sa.Column("max_wait_seconds", sa.Integer, nullable=False),
        sa.Column("source_generation_id", UUID),
        _flag("simulated"),
        sa.Column("settlement", sa.String(16)),
        _at("settled_at"),
        _at("started_at", nullable=False),
        _at("queued_at"),
        _at("completed_at"),
        _at("cancelled_at"),
        _at("deleted_at"),
        sa.CheckConstraint(
            "status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')",
            name="generation_status",
        ),
        sa.CheckConstraint(
            "settlement IS NULL OR settlement IN ('capture', 'release')",
            name="generation_settlement",
        ),
        sa.CheckConstraint("credits_micros >= 0", name="generation_credits"),
    )
    op.create_index(
        "generations_by_owner",
        "generations",
        ["user_id", "workspace_id", sa.text("started_at DESC"), sa.text("id DESC")],
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_index(
        "generations_gallery",
        "generations",
        ["workspace_id", sa.text("completed_at DESC"), sa.text("id DESC")],
        postgresql_where=sa.text(
            "deleted_at IS NULL AND shared_with_workspace AND status = 'completed'"
        ),
    )
    op.create_index("generations_by_job", "generations", ["job_id"])
    op.create_index(
        "generations_unsettled",
        "generations",
        ["id"],
        postgresql_where=sa.text("settlement IS NOT NULL AND settled_at IS NULL"),
    )


def _create_bookkeeping() -> None:
    op.create_table(
        "generation_counts",
        sa.Column("user_id", UUID, primary_key=True),
        sa.Column("workspace_id", UUID, primary_key=True),
        sa.Column("type", sa.String(16), primary_key=True),
        sa.Column("count", sa.BigInteger, server_default="0", nullable=False),
    )
    op.create_table(
        "create_requests",
        sa.Column("user_id", UUID, primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("generation_ids", JSONB, nullable=False),
        _at("created_at", nullable=False),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("request_id", sa.Text, primary_key=True),
        _at("received_at", nullable=False),
    )


def _create_community() -> None:
    op.create_table(
        "community_posts",
        sa.Column("id", UUID, primary_key=True),
        sa.Column(
            "generation_id",
            UUID,
            sa.ForeignKey("generations.id", ondelete="CASCADE"),
            unique=True,
            nullable=False,
        ),
        sa.Column("user_id", UUID, nullable=False),
        sa.Column("nickname", sa.Text, nullable=False),
        sa.Column("title", sa.Text, server_default="", nullable=False),
        sa.Column("category", sa.String(32), server_default="other", nullable=False),
        sa.Column("media_type", sa.String(16), server_default="image", nullable=False),
        sa.Column("image_url", sa.Text, nullable=False),
        sa.Column("thumbnail_url", sa.Text),
        sa.Column("prompt", sa.Text, server_default="", nullable=False),
        sa.Column("model_name", sa.Text, server_default="", nullable=False),
        sa.Column("like_count", sa.BigInteger, server_default="0", nullable=False),
        sa.Column("view_count", sa.BigInteger, server_default="0", nullable=False),
        _flag("is_nsfw"),
        _at("published_at", nullable=False),
    )
    latest = [sa.text("published_at DESC")]
    op.create_index("posts_latest", "community_posts", [*latest, sa.text("id DESC")])
    op.create_index(
        "posts_popular", "community_posts", [sa.text("like_count DESC"), *latest]
    )
    op.create_index("posts_by_user", "community_posts", ["user_id", *latest])
    op.create_index("posts_by_category", "community_posts", ["category", *latest])
    op.create_table(
        "community_likes",
        sa.Column(
            "post_id",
            UUID,
            sa.ForeignKey("community_posts.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("user_id", UUID, primary_key=True),
        _at("created_at", nullable=False),
    )
    op.create_table(
        "shares",
        sa.Column("token", sa.String(64), primary_key=True),
        sa.Column(
            "generation_id",
            UUID,
            sa.ForeignKey("generations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("user_id", UUID, nullable=False),
        _flag("allow_download", "true"),
        sa.Column("view_count", sa.BigInteger, server_default="0", nullable=False),
        _at("created_at", nullable=False),
        _at("expires_at"),
        _at("revoked_at"),
    )
    op.create_index("shares_by_generation", "shares", ["generation_id"])


def downgrade() -> None:
    for table in (
        "shares",
        "community_likes",
        "community_posts",
        "webhook_deliveries",
        "create_requests",
        "generation_counts",
        "generations",
        "jobs",
    ):
        op.drop_table(table)
