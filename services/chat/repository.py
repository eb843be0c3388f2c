"""All SQL of the chat service.

Order within a conversation comes from its row: a send claims the next two
sequence numbers (its message and the reply) with one UPDATE, which holds
the row's lock until the claiming transaction ends, so concurrent sends get
consecutive, non-overlapping pairs.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, exists, func, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.chat.models import Conversation, Message

# Messages anyone is shown, and a reply reads as history.
SHOWN_STATUSES = ("complete", "cut_off")


@dataclass(frozen=True)
class ConversationFilter:
    """Whose conversations a listing shows."""

    user_id: uuid.UUID
    # Only this workspace's; None: every conversation of the user's.
    workspace_id: uuid.UUID | None = None
    # With a workspace: also the ones others share in it.
    others_shared: bool = False
    # Case-insensitive text to find in the title or a shown message.
    query: str = ""


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _whose(filter_: ConversationFilter) -> Any:
    own = Conversation.user_id == filter_.user_id
    if filter_.workspace_id is None:
        return own
    in_workspace = Conversation.workspace_id == filter_.workspace_id
    if filter_.others_shared:
        return and_(in_workspace, or_(own, Conversation.shared_with_workspace))
    return and_(in_workspace, own)


def _matching(query: str) -> Any:
    pattern = _like_pattern(query)
    in_messages = exists().where(
        Message.conversation_id == Conversation.id,
        Message.status.in_(SHOWN_STATUSES),
        Message.content.ilike(pattern, escape="\\"),
    )
    return or_(Conversation.title.ilike(pattern, escape="\\"), in_messages)


async def list_conversations(
    db: AsyncSession,
    filter_: ConversationFilter,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Conversation]:
    """Most recently active first; `after` is the last row of the page before."""
    statement = select(Conversation).where(_whose(filter_))
    if filter_.query:
        statement = statement.where(_matching(filter_.query))
    if after is not None:
        statement = statement.where(
            tuple_(Conversation.updated_at, Conversation.id) < tuple_(*after)
        )
    statement = statement.order_by(
        Conversation.updated_at.desc(), Conversation.id.desc()
    ).limit(limit)
    return list((await db.scalars(statement)).all())


async def conversation(
    db: AsyncSession, conversation_id: uuid.UUID
) -> Conversation | None:
    return await db.get(Conversation, conversation_id)


async def lock_conversation(db: AsyncSession, conversation_id: uuid.UUID) -> None:
    """Hold the row's lock to the end of the transaction: a send waits to
    claim its turn until then (and finds the row gone after a deletion)."""
    await db.execute(
        select(Conversation.id)
        .where(Conversation.id == conversation_id)
        .with_for_update()
    )


async def insert_conversation(db: AsyncSession, values: dict[str, Any]) -> Conversation:
    row = Conversation(id=uuid.uuid4(), **values)
    db.add(row)
    await db.flush()
    await db.refresh(row)
    return row


async def update_conversation(
    db: AsyncSession, conversation_id: uuid.UUID, values: dict[str, Any]
) -> Conversation | None:
    statement = (
        update(Conversation)
        .where(Conversation.id == conversation_id)
        .values(**values, updated_at=func.now())
        .returning(Conversation)
        .execution_options(populate_existing=True)
    )
    return (await db.scalars(statement)).one_or_none()


async def delete_conversation(db: AsyncSession, conversation_id: uuid.UUID) -> None:
    await db.execute(delete(Conversation).where(Conversation.id == conversation_id))


async def lock_conversations_of(
    db: AsyncSession, user_id: uuid.UUID
) -> list[uuid.UUID]:
    """Lock every conversation of the user (as `lock_conversation` does)."""
    statement = (
        select(Conversation.id)
        .where(Conversation.user_id == user_id)
        .order_by(Conversation.id)
        .with_for_update()
    )
    return list((await db.scalars(statement)).all())


async def delete_conversations(
    db: AsyncSession, conversation_ids: Sequence[uuid.UUID]
) -> int:
    """Delete the conversations with their messages; returns the messages."""
    messages = await db.scalar(
        select(func.count()).where(Message.conversation_id.in_(conversation_ids))
    )
    await db.execute(delete(Conversation).where(Conversation.id.in_(conversation_ids)))
    return int(messages or 0)


async def has_reply_in_progress(db: AsyncSession, conversation_id: uuid.UUID) -> bool:
    """Whether a reply of the conversation is still to be charged or released."""
    statement = select(
        exists().where(
            Message.conversation_id == conversation_id,
            Message.hold_id.is_not(None),
            Message.settled_at.is_(None),
        )
    )
    return bool(await db.scalar(statement))


# Messages


async def claim_turn(db: AsyncSession, conversation_id: uuid.UUID) -> int | None:
    """The sequence number of a new message; its reply takes the next one.
    None when the conversation is gone."""
    statement = (
        update(Conversation)
        .where(Conversation.id == conversation_id)
        .values(
            next_sequence=Conversation.next_sequence + 2,
            message_count=Conversation.message_count + 1,
            updated_at=func.now(),
        )
        .returning(Conversation.next_sequence)
    )
    claimed = await db.scalar(statement)
    return None if claimed is None else int(claimed) - 2


async def insert_messages(db: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    db.add_all(Message(**row) for row in rows)
    await db.flush()


async def recent_messages(
    db: AsyncSession, conversation_id: uuid.UUID, before: int, limit: int
) -> list[Message]:
    """The last `limit` messages before sequence `before`, in any state,
    newest first."""
    statement = (
        select(Message)
        .where(Message.conversation_id == conversation_id, Message.sequence < before)
        .order_by(Message.sequence.desc())
        .limit(limit)
    )
    return list((await db.scalars(statement)).all())


async def shown_messages(
    db: AsyncSession, conversation_id: uuid.UUID, before: int | None, limit: int
) -> list[Message]:
    """Shown messages before sequence `before` (all when None), newest first."""
    statement = select(Message).where(
        Message.conversation_id == conversation_id,
        Message.status.in_(SHOWN_STATUSES),
    )
    if before is not None:
        statement = statement.where(Message.sequence < before)
    statement = statement.order_by(Message.sequence.desc()).limit(limit)
    return list((await db.scalars(statement)).all())


async def finish_reply(
    db: AsyncSession, message_id: uuid.UUID, values: dict[str, Any]
) -> Message | None:
    """Write a reply's outcome, once: None if it was already written."""
    statement = (
        update(Message)
        .where(Message.id == message_id, Message.status == "streaming")
        .values(**values)
        .returning(Message)
    )
    return (await db.scalars(statement)).one_or_none()


async def add_reply_to_conversation(
    db: AsyncSession,
    conversation_id: uuid.UUID,
    input_tokens: int,
    output_tokens: int,
    credits: int,
) -> None:
    await db.execute(
        update(Conversation)
        .where(Conversation.id == conversation_id)
        .values(
            message_count=Conversation.message_count + 1,
            total_input_tokens=Conversation.total_input_tokens + input_tokens,
            total_output_tokens=Conversation.total_output_tokens + output_tokens,
            total_credits_micros=Conversation.total_credits_micros + credits,
            updated_at=func.now(),
        )
    )


async def set_automatic_title(
    db: AsyncSession, conversation_id: uuid.UUID, title: str
) -> str | None:
    """Title the conversation unless someone already did; returns its title."""
    await db.execute(
        update(Conversation)
        .where(
            Conversation.id == conversation_id,
            Conversation.title_source == "default",
        )
        .values(title=title, title_source="auto")
    )
    current = await db.scalar(
        select(Conversation.title).where(Conversation.id == conversation_id)
    )
    return None if current is None else str(current)


async def mark_settled(db: AsyncSession, message_id: uuid.UUID) -> None:
    await db.execute(
        update(Message)
        .where(Message.id == message_id, Message.settled_at.is_(None))
        .values(settled_at=func.now())
    )


async def unsettled_replies(
    db: AsyncSession, started_before: datetime, limit: int
) -> list[Message]:
    """Replies whose hold is still open although they started long ago."""
    statement = (
        select(Message)
        .where(
            Message.hold_id.is_not(None),
            Message.settled_at.is_(None),
            Message.created_at < started_before,
        )
        .order_by(Message.created_at)
        .limit(limit)
    )
    return list((await db.scalars(statement)).all())


async def fail_abandoned_reply(db: AsyncSession, message_id: uuid.UUID) -> None:
    """A reply still marked as being written by a process that is gone."""
    await db.execute(
        update(Message)
        .where(Message.id == message_id, Message.status == "streaming")
        .values(status="failed")
    )
