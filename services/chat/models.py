"""Tables of the chat service, all in the `chat` schema.

Credits are not here: a reply's hold, capture and release are ledger entries
in the billing service. A message keeps the id of its hold and when it was
settled, so a reply whose process died before settling it is found and
settled later (services.chat.replies.ReplySweeper).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA = "chat"

ROLES = ("user", "assistant")
# streaming: the reply is being written; complete: it ended normally;
# cut_off: the reader left (or the call's deadline passed) before the end;
# failed: the provider failed, nothing was charged and nobody is shown it.
MESSAGE_STATUSES = ("streaming", "complete", "cut_off", "failed")
# Where the title came from: the default, the user, or written after the
# first exchange. Only a default title is ever replaced automatically.
TITLE_SOURCES = ("default", "user", "auto")
DEFAULT_TITLE = "New Chat"


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA)


def _now() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now())


def _count() -> Mapped[int]:
    return mapped_column(BigInteger, server_default="0")


class Conversation(Base):
    __tablename__ = "conversations"

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(UUID)
    # The workspace whose credits pay for it (ResolvePayer); None: the
    # user's own credits.
    workspace_id: Mapped[uuid.UUID | None] = mapped_column(UUID)
    shared_with_workspace: Mapped[bool] = mapped_column(Boolean, server_default=false())
    title: Mapped[str] = mapped_column(String(200), server_default=DEFAULT_TITLE)
    title_source: Mapped[str] = mapped_column(String(8), server_default="default")
    model_id: Mapped[str] = mapped_column(String(200))
    model_name: Mapped[str] = mapped_column(String(200), server_default="")
    system_prompt: Mapped[str] = mapped_column(Text, server_default="")
    # Each message takes the next number; a send claims two (its message and
    # the reply) under the row's lock, so concurrent sends never interleave.
    next_sequence: Mapped[int] = _count()
    message_count: Mapped[int] = mapped_column(Integer, server_default="0")
    total_input_tokens: Mapped[int] = _count()
    total_output_tokens: Mapped[int] = _count()
    total_credits_micros: Mapped[int] = _count()
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()

    __table_args__ = (
        CheckConstraint(
            _one_of("title_source", TITLE_SOURCES), name="conversations_title_source"
        ),
        CheckConstraint(
            "NOT shared_with_workspace OR workspace_id IS NOT NULL",
            name="conversations_shared_in_a_workspace",
        ),
        # Keyset pagination of a user's list, most recently active first.
        Index(
            "conversations_listing", "user_id", text("updated_at DESC"), text("id DESC")
        ),
        Index(
            "conversations_shared",
            "workspace_id",
            text("updated_at DESC"),
            text("id DESC"),
            postgresql_where=text("workspace_id IS NOT NULL"),
        ),
    )


class Message(Base):
    __tablename__ = "messages"

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE")
    )
    sequence: Mapped[int] = mapped_column(BigInteger)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text, server_default="")
    image_urls: Mapped[list[str]] = mapped_column(
        JSONB, server_default=text("'[]'::jsonb")
    )
    status: Mapped[str] = mapped_column(String(16), server_default="complete")
    input_tokens: Mapped[int] = _count()
    output_tokens: Mapped[int] = _count()
    credits_micros: Mapped[int] = _count()
    web_search_used: Mapped[bool] = mapped_column(Boolean, server_default=false())
    # The provider model that wrote a reply, and why it stopped.
    model: Mapped[str] = mapped_column(String(200), server_default="")
    finish_reason: Mapped[str] = mapped_column(String(32), server_default="")
    # The billing hold of a reply and when it was captured or released.
    hold_id: Mapped[uuid.UUID | None] = mapped_column(UUID)
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()

    __table_args__ = (
        # Also the index of every read of a conversation's messages.
        UniqueConstraint("conversation_id", "sequence", name="messages_in_order"),
        CheckConstraint(_one_of("role", ROLES), name="messages_role"),
        CheckConstraint(_one_of("status", MESSAGE_STATUSES), name="messages_status"),
        CheckConstraint(
            "role = 'assistant' OR status = 'complete'", name="messages_user_complete"
        ),
        Index(
            "messages_unsettled",
            "created_at",
            postgresql_where=text("hold_id IS NOT NULL AND settled_at IS NULL"),
        ),
    )
