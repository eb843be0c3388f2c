"""All SQL of the auth service."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypedDict

from sqlalchemy import and_, delete, exists, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from libs.db import Executor, fetch_row
from services.auth.models import (
    Admin,
    OutboxEvent,
    RateLimitBucket,
    RefreshToken,
    Session,
    User,
)


@dataclass(frozen=True)
class ClaimedToken:
    token_id: uuid.UUID
    session_id: uuid.UUID


@dataclass(frozen=True)
class SpentToken:
    token_id: uuid.UUID
    session_id: uuid.UUID
    used_at: datetime
    successor_used: bool


# Users


async def insert_user(
    db: AsyncSession,
    *,
    email: str,
    name: str,
    nickname: str,
    password_hash: str | None,
    google_id: str | None = None,
    avatar_url: str | None = None,
    auth_provider: str = "email",
) -> User | None:
    """Insert a user; None when the e-mail, nickname or Google id is taken."""
    statement = (
        pg_insert(User)
        .values(
            id=uuid.uuid4(),
            email=email,
            name=name,
            nickname=nickname,
            password_hash=password_hash,
            google_id=google_id,
            avatar_url=avatar_url,
            auth_provider=auth_provider,
        )
        .on_conflict_do_nothing()
        .returning(User)
    )
    return (await db.execute(statement)).scalar_one_or_none()


async def user_by_id(db: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await db.get(User, user_id)


@dataclass(frozen=True)
class UserRecord:
    """A user read with Core, without building an ORM object (for GetMe)."""

    id: uuid.UUID
    email: str
    name: str
    nickname: str
    avatar_url: str | None
    auth_provider: str
    status: str
    created_at: datetime


_USER_RECORD = (
    "SELECT id, email, name, nickname, avatar_url, auth_provider, status, created_at"
    " FROM users WHERE id = $1"
)


async def user_record(db: Executor, user_id: uuid.UUID) -> UserRecord | None:
    row = await fetch_row(db, _USER_RECORD, user_id)
    return UserRecord(*row) if row else None


async def user_by_email(db: AsyncSession, email: str) -> User | None:
    return (
        await db.execute(select(User).where(User.email == email))
    ).scalar_one_or_none()


async def user_by_google_id(db: AsyncSession, google_id: str) -> User | None:
    statement = select(User).where(User.google_id == google_id)
    return (await db.execute(statement)).scalar_one_or_none()


async def users_by_ids(db: AsyncSession, user_ids: list[uuid.UUID]) -> list[User]:
    statement = select(User).where(User.id.in_(user_ids))
    return list((await db.execute(statement)).scalars())


async def email_exists(db: AsyncSession, email: str) -> bool:
    return bool(await db.scalar(select(exists().where(User.email == email))))


async def set_password_hash(
    db: AsyncSession, user_id: uuid.UUID, password_hash: str
) -> None:
    await db.execute(
        update(User)
        .where(User.id == user_id)
        .values(password_hash=password_hash, updated_at=func.now())
    )


async def link_google(
    db: AsyncSession, user_id: uuid.UUID, google_id: str, picture: str | None
) -> User:
    statement = (
        update(User)
        .where(User.id == user_id)
        .values(
            google_id=google_id,
            avatar_url=func.coalesce(User.avatar_url, picture),
            updated_at=func.now(),
        )
        .returning(User)
    )
    return (await db.execute(statement)).scalar_one()


# Profiles

NICKNAME_CONSTRAINTS = frozenset({"users_nickname_key", "users_nickname_lower"})


class ProfileColumns(TypedDict, total=False):
    """The columns a user may change about themselves, and nothing else."""

    name: str
    nickname: str
    bio: str | None
    avatar_url: str | None
    is_public_profile: bool


async def update_profile(
    db: AsyncSession, user_id: uuid.UUID, changes: ProfileColumns
) -> User | None:
    """Write profile columns; None when the nickname is held by another
    account in any letter case.

    The update runs in a savepoint, so a refused nickname leaves the
    transaction usable for another attempt.
    """
    statement = (
        update(User)
        .where(User.id == user_id)
        .values(**changes, updated_at=func.now())
        .returning(User)
        .execution_options(populate_existing=True)
    )
    try:
        async with db.begin_nested():
            return (await db.execute(statement)).scalar_one()
    except IntegrityError as error:
        if _violated_constraint(error) not in NICKNAME_CONSTRAINTS:
            raise
        return None


def _violated_constraint(error: IntegrityError) -> str | None:
    driver_error = error.orig.__cause__ if error.orig is not None else None
    name = getattr(driver_error, "constraint_name", None)
    return name if isinstance(name, str) else None


# Admins


async def admin_by_username(db: AsyncSession, username: str) -> Admin | None:
    statement = select(Admin).where(Admin.username == username)
    return (await db.execute(statement)).scalar_one_or_none()


async def admin_count(db: AsyncSession) -> int:
    return int(await db.scalar(select(func.count()).select_from(Admin)) or 0)


async def insert_admin(
    db: AsyncSession, username: str, password_hash: str, role: str
) -> bool:
    statement = (
        pg_insert(Admin)
        .values(
            id=uuid.uuid4(), username=username, password_hash=password_hash, role=role
        )
        .on_conflict_do_nothing(index_elements=[Admin.username])
        .returning(Admin.id)
    )
    return (await db.execute(statement)).scalar_one_or_none() is not None


async def set_admin_password_hash(
    db: AsyncSession, admin_id: uuid.UUID, password_hash: str
) -> None:
    await db.execute(
        update(Admin)
        .where(Admin.id == admin_id)
        .values(password_hash=password_hash, updated_at=func.now())
    )


# Sessions and refresh tokens


async def insert_session(
    db: AsyncSession,
    *,
    lifetime: timedelta,
    user_id: uuid.UUID | None = None,
    admin_id: uuid.UUID | None = None,
    user_agent: str | None,
    ip_address: str | None,
) -> Session:
    statement = (
        insert(Session)
        .values(
            id=uuid.uuid4(),
            user_id=user_id,
            admin_id=admin_id,
            expires_at=func.now() + lifetime,
            user_agent=user_agent,
            ip_address=ip_address,
        )
        .returning(Session)
    )
    return (await db.execute(statement)).scalar_one()


async def insert_refresh_token(
    db: AsyncSession,
    session_id: uuid.UUID,
    token_hash: bytes,
    parent_id: uuid.UUID | None = None,
) -> None:
    await db.execute(
        insert(RefreshToken).values(
            id=uuid.uuid4(),
            session_id=session_id,
            parent_id=parent_id,
            token_hash=token_hash,
        )
    )


async def claim_refresh_token(
    db: AsyncSession, token_hash: bytes
) -> ClaimedToken | None:
    """Mark an unused token used. Of concurrent claims exactly one wins."""
    statement = (
        update(RefreshToken)
        .where(RefreshToken.token_hash == token_hash, RefreshToken.used_at.is_(None))
        .values(used_at=func.now())
        .returning(RefreshToken.id, RefreshToken.session_id)
    )
    row = (await db.execute(statement)).one_or_none()
    return ClaimedToken(row.id, row.session_id) if row else None


async def spent_refresh_token(db: AsyncSession, token_hash: bytes) -> SpentToken | None:
    """An already-used token, and whether any of its successors was used too."""
    successor = RefreshToken.__table__.alias("successor")
    successor_used = exists().where(
        successor.c.parent_id == RefreshToken.id, successor.c.used_at.is_not(None)
    )
    statement = select(
        RefreshToken.id,
        RefreshToken.session_id,
        RefreshToken.used_at,
        successor_used.label("successor_used"),
    ).where(RefreshToken.token_hash == token_hash, RefreshToken.used_at.is_not(None))
    row = (await db.execute(statement)).one_or_none()
    if row is None:
        return None
    return SpentToken(row.id, row.session_id, row.used_at, bool(row.successor_used))


async def session_for_token(db: AsyncSession, token_hash: bytes) -> uuid.UUID | None:
    statement = select(RefreshToken.session_id).where(
        RefreshToken.token_hash == token_hash
    )
    return (await db.execute(statement)).scalar_one_or_none()


async def live_session(db: AsyncSession, session_id: uuid.UUID) -> Session | None:
    """The session if it is neither revoked nor past its absolute expiry."""
    statement = select(Session).where(
        Session.id == session_id,
        Session.revoked_at.is_(None),
        Session.expires_at > func.now(),
    )
    return (await db.execute(statement)).scalar_one_or_none()


async def touch_session(
    db: AsyncSession,
    session_id: uuid.UUID,
    user_agent: str | None,
    ip_address: str | None,
) -> None:
    await db.execute(
        update(Session)
        .where(Session.id == session_id)
        .values(last_used_at=func.now(), user_agent=user_agent, ip_address=ip_address)
    )


async def revoke_sessions(
    db: AsyncSession,
    reason: str,
    *,
    session_id: uuid.UUID | None = None,
    user_id: uuid.UUID | None = None,
) -> list[uuid.UUID]:
    """Revoke live sessions by id and/or owner; returns the ids revoked."""
    conditions: list[ColumnElement[bool]] = [Session.revoked_at.is_(None)]
    if session_id is not None:
        conditions.append(Session.id == session_id)
    if user_id is not None:
        conditions.append(Session.user_id == user_id)
    statement = (
        update(Session)
        .where(and_(*conditions))
        .values(revoked_at=func.now(), revoke_reason=reason)
        .returning(Session.id)
    )
    return list((await db.execute(statement)).scalars())


async def active_user_sessions(db: AsyncSession, user_id: uuid.UUID) -> list[Session]:
    statement = (
        select(Session)
        .where(
            Session.user_id == user_id,
            Session.revoked_at.is_(None),
            Session.expires_at > func.now(),
        )
        .order_by(Session.created_at.desc())
    )
    return list((await db.execute(statement)).scalars())


async def revoked_since(
    db: AsyncSession, since: datetime, overlap: timedelta
) -> tuple[list[uuid.UUID], datetime]:
    """Sessions revoked after `since - overlap`, and the database's clock."""
    statement = select(Session.id).where(Session.revoked_at > since - overlap)
    ids = list((await db.execute(statement)).scalars())
    now: datetime = (await db.execute(select(func.now()))).scalar_one()
    return ids, now


async def database_now(db: AsyncSession) -> datetime:
    now: datetime = (await db.execute(select(func.now()))).scalar_one()
    return now


async def purge_ended_sessions(db: AsyncSession, older_than: timedelta) -> int:
    """Delete sessions that ended (revoked or expired) before `older_than` ago."""
    cutoff = func.now() - older_than
    statement = delete(Session).where(
        (Session.revoked_at < cutoff) | (Session.expires_at < cutoff)
    )
    result = await db.execute(statement)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# Rate limits


async def take_rate_token(
    db: AsyncSession, key: str, interval: timedelta, burst: timedelta
) -> float | None:
    """GCRA in one statement: None when allowed, else seconds to wait.

    The bucket lets `burst / interval` events through at once, then one per
    `interval`. Concurrent callers serialise on the row lock; the wall clock
    (not the transaction's start time) keeps the order they get it in fair.
    """
    now = func.clock_timestamp()
    allowed_at = func.greatest(RateLimitBucket.allowed_at, now) + interval
    statement = (
        pg_insert(RateLimitBucket)
        .values(key=key, allowed_at=now + interval)
        .on_conflict_do_update(
            index_elements=[RateLimitBucket.key],
            set_={"allowed_at": allowed_at},
            where=allowed_at - burst <= now,
        )
        .returning(RateLimitBucket.key)
    )
    if (await db.execute(statement)).scalar_one_or_none() is not None:
        return None
    wait = select(
        func.extract(
            "epoch",
            RateLimitBucket.allowed_at + interval - burst - now,
        )
    ).where(RateLimitBucket.key == key)
    return max(float((await db.execute(wait)).scalar_one()), 0.0)


async def purge_idle_rate_buckets(db: AsyncSession) -> int:
    result = await db.execute(
        delete(RateLimitBucket).where(RateLimitBucket.allowed_at < func.now())
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def ping(db: AsyncSession) -> None:
    await db.execute(text("SELECT 1"))


# Outbox


async def add_outbox_event(
    db: AsyncSession, topic: str, payload: dict[str, str]
) -> int:
    statement = (
        insert(OutboxEvent)
        .values(topic=topic, payload=payload)
        .returning(OutboxEvent.id)
    )
    return int((await db.execute(statement)).scalar_one())


async def claim_due_events(
    db: AsyncSession, limit: int, only_ids: list[int] | None = None
) -> list[OutboxEvent]:
    """Due, undelivered events (of `only_ids`, when given), locked so that
    other replicas skip them."""
    conditions = [
        OutboxEvent.delivered_at.is_(None),
        OutboxEvent.next_attempt_at <= func.now(),
    ]
    if only_ids is not None:
        conditions.append(OutboxEvent.id.in_(only_ids))
    statement = (
        select(OutboxEvent)
        .where(*conditions)
        .order_by(OutboxEvent.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await db.execute(statement)).scalars())


async def mark_event_delivered(db: AsyncSession, event_id: int) -> None:
    await db.execute(
        update(OutboxEvent)
        .where(OutboxEvent.id == event_id)
        .values(delivered_at=func.now(), attempts=OutboxEvent.attempts + 1)
    )


async def postpone_event(
    db: AsyncSession, event_id: int, delay: timedelta, error: str
) -> None:
    await db.execute(
        update(OutboxEvent)
        .where(OutboxEvent.id == event_id)
        .values(
            attempts=OutboxEvent.attempts + 1,
            next_attempt_at=func.now() + delay,
            last_error=error[:500],
        )
    )
