"""Conversations and their messages.

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


def _at(name: str) -> sa.Column[object]:
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
    )


def _count(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.BigInteger, nullable=False, server_default="0")


def upgrade() -> None:
    _create_conversations()
    _create_messages()


def _create_conversations() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("user_id", UUID, nullable=False),
        sa.Column("workspace_id", UUID),
        sa.Column(
            "shared_with_workspace",
            sa.Boolean,
            nullable=False,
            server_default=sa.false(),
        ),
        sa.Column("title", sa.String(200), nullable=False, server_default="New Chat"),
        sa.Column(
            "title_source", sa.String(8), nullable=False, server_default="default"
        ),
        sa.Column("model_id", sa.String(200), nullable=False),
        sa.Column("model_name", sa.String(200), nullable=False, server_default=""),
        sa.Column("system_prompt", sa.Text, nullable=False, server_default=""),
        _count("next_sequence"),
        sa.Column("message_count", sa.Integer, nullable=False, server_default="0"),
        _count("total_input_tokens"),
        _count("total_output_tokens"),
        _count("total_credits_micros"),
        _at("created_at"),
        _at("updated_at"),
        sa.CheckConstraint(
            "title_source IN ('default', 'user', 'auto')",
            name="conversations_title_source",
        ),
        sa.CheckConstraint(
            "NOT shared_with_workspace OR workspace_id IS NOT NULL",
            name="conversations_shared_in_a_workspace",
        ),
    )
    op.create_index(
        "conversations_listing",
        "conversations",
        ["user_id", sa.text("updated_at DESC"), sa.text("id DESC")],
    )
    op.create_index(
        "conversations_shared",
        "conversations",
        ["workspace_id", sa.text("updated_at DESC"), sa.text("id DESC")],
        postgresql_where=sa.text("workspace_id IS NOT NULL"),
    )


def _create_messages() -> None:
    op.create_table(
        "messages",
        sa.Column("id", UUID, primary_key=True),
        sa.Column(
            "conversation_id",
            UUID,
            sa.ForeignKey("conversations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("sequence", sa.BigInteger, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text, nullable=False, server_default=""),
        sa.Column(
            "image_urls",
            JSONB,
            nullable=False,
            server_default=sa.text("'[]'::jsonb"),
        ),
        sa.Column("status", sa.String(16), nullable=False, server_default="complete"),
        _count("input_tokens"),
        _count("output_tokens"),
        _count("credits_micros"),
        sa.Column(
            "web_search_used", sa.Boolean, nullable=False, server_default=sa.false()
        ),
        sa.Column("model", sa.String(200), nullable=False, server_default=""),
        sa.Column("finish_reason", sa.String(32), nullable=False, server_default=""),
        sa.Column("hold_id", UUID),
        sa.Column("settled_at", sa.DateTime(timezone=True)),
        _at("created_at"),
        sa.UniqueConstraint("conversation_id", "sequence", name="messages_in_order"),
        sa.CheckConstraint("role IN ('user', 'assistant')", name="messages_role"),
        sa.CheckConstraint(
            "status IN ('streaming', 'complete', 'cut_off', 'failed')",
            name="messages_status",
        ),
        sa.CheckConstraint(
            "role = 'assistant' OR status = 'complete'",
            name="messages_user_complete",
        ),
    )
    op.create_index(
        "messages_unsettled",
        "messages",
        ["created_at"],
        postgresql_where=sa.text("hold_id IS NOT NULL AND settled_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_table("messages")
    op.drop_table("conversations")
