"""All SQL of the users area: notes about users, and the state of a user
deletion's admin tasks."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from services.admin.models import AdminTask, UserNote


@dataclass(frozen=True)
class StepState:
    kind: str
    state: str
    error: str | None
    result: Any


async def insert_note(
    db: AsyncSession,
    user_id: uuid.UUID,
    author_id: str,
    author_name: str,
    body: str,
) -> UserNote:
    statement = (
        insert(UserNote)
        .values(
            id=uuid.uuid4(),
            user_id=user_id,
            author_id=author_id,
            author_name=author_name,
            body=body,
        )
        .returning(UserNote)
    )
    return (await db.execute(statement)).scalar_one()


async def notes_page(
    db: AsyncSession,
    user_id: uuid.UUID,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[UserNote]:
    """Notes about a user, newest first, after the (created_at, id) `after`."""
    statement = select(UserNote).where(UserNote.user_id == user_id)
    if after is not None:
        statement = statement.where(
            tuple_(UserNote.created_at, UserNote.id) < tuple_(*after)
        )
    statement = statement.order_by(
        UserNote.created_at.desc(), UserNote.id.desc()
    ).limit(limit)
    return list((await db.execute(statement)).scalars())


async def deletion_steps(db: AsyncSession, audit_id: int) -> list[StepState]:
    """The admin tasks of one user deletion (named by its audit entry)."""
    statement = (
        select(AdminTask.kind, AdminTask.state, AdminTask.last_error, AdminTask.result)
        .where(AdminTask.payload["deletion"].astext == str(audit_id))
        .order_by(AdminTask.created_at, AdminTask.kind)
    )
    return [StepState(*row) for row in await db.execute(statement)]
