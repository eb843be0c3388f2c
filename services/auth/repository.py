"""All SQL of the auth service."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypedDict

from sqlalchemy import (
    and_,
    delete,
    exists,
    func,
    insert,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from libs.db import Executor, fetch_row
from libs.periods import Period
from services.auth.models import (
    Admin,
    OperatorRequest,
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
    admin_id: uuid.UUID | None = None,
    keep_session_id: uuid.UUID | None = None,
) -> list[uuid.UUID]:
    """Revoke live sessions by id and/or owner (all but `keep_session_id`);
    returns the ids revoked."""
    conditions: list[ColumnElement[bool]] = [Session.revoked_at.is_(None)]
    if session_id is not None:
        conditions.append(Session.id == session_id)
    if user_id is not None:
        conditions.append(Session.user_id == user_id)
    if admin_id is not None:
        conditions.append(Session.admin_id == admin_id)
    if keep_session_id is not None:
        conditions.append(Session.id != keep_session_id)
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


# Operators' requests: users as operators see them, operator accounts, and
# the idempotency records of operators' changes.


@dataclass(frozen=True)
class UserFilter:
    """Which accounts an operator lists; None or "" means any."""

    query: str = ""
    status: str = ""
    auth_provider: str = ""
    created_after: datetime | None = None
    created_before: datetime | None = None


def _escaped_like(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def users_page(
    db: AsyncSession,
    found: UserFilter,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[User]:
    """Accounts matching `found`, newest first, after the (created_at, id)
    position `after`."""
    statement = select(User)
    if found.query:
        pattern = f"%{_escaped_like(found.query)}%"
        statement = statement.where(
            User.email.ilike(pattern, escape="\\")
            | User.name.ilike(pattern, escape="\\")
            | User.nickname.ilike(pattern, escape="\\")
        )
    if found.status:
        statement = statement.where(User.status == found.status)
    if found.auth_provider:
        statement = statement.where(User.auth_provider == found.auth_provider)
    if found.created_after is not None:
        statement = statement.where(User.created_at >= found.created_after)
    if found.created_before is not None:
        statement = statement.where(User.created_at < found.created_before)
    if after is not None:
        statement = statement.where(tuple_(User.created_at, User.id) < tuple_(*after))
    statement = statement.order_by(User.created_at.desc(), User.id.desc()).limit(limit)
    return list((await db.execute(statement)).scalars())


async def session_summary(
    db: AsyncSession, user_id: uuid.UUID
) -> tuple[int, datetime | None]:
    """The user's live sessions and when any session of theirs was last used."""
    live = and_(Session.revoked_at.is_(None), Session.expires_at > func.now())
    statement = select(func.count().filter(live), func.max(Session.last_used_at)).where(
        Session.user_id == user_id
    )
    count, last_used = (await db.execute(statement)).one()
    return int(count), last_used


async def lock_user(db: AsyncSession, user_id: uuid.UUID) -> User | None:
    statement = (
        select(User)
        .where(User.id == user_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await db.execute(statement)).scalar_one_or_none()


async def set_user_status(
    db: AsyncSession, user_id: uuid.UUID, status: str, reason: str | None
) -> User:
    statement = (
        update(User)
        .where(User.id == user_id)
        .values(
            status=status,
            status_reason=reason,
            status_changed_at=func.now(),
            updated_at=func.now(),
        )
        .returning(User)
        .execution_options(populate_existing=True)
    )
    return (await db.execute(statement)).scalar_one()


async def anonymise_user(db: AsyncSession, user_id: uuid.UUID) -> User:
    """Replace everything that names or reaches the person; keep the id,
    which other services' records (the ledger) still refer to."""
    statement = (
        update(User)
        .where(User.id == user_id)
        .values(
            email=f"deleted-{user_id}@deleted.invalid",
            name="",
            nickname=f"deleted-{user_id.hex}",
            password_hash=None,
            google_id=None,
            avatar_url=None,
            bio=None,
            is_public_profile=False,
            status="deleted",
            status_reason="Deleted by an operator",
            status_changed_at=func.now(),
            updated_at=func.now(),
        )
        .returning(User)
        .execution_options(populate_existing=True)
    )
    return (await db.execute(statement)).scalar_one()


async def forget_rate_buckets(db: AsyncSession, subject: str) -> None:
    """Drop rate-limit buckets keyed by `subject` (they name an e-mail)."""
    await db.execute(
        delete(RateLimitBucket).where(
            RateLimitBucket.key.like(f"%:account:{_escaped_like(subject)}", escape="\\")
        )
    )


async def admins(db: AsyncSession) -> list[Admin]:
    statement = select(Admin).order_by(Admin.username)
    return list((await db.execute(statement)).scalars())


async def admin_by_id(
    db: AsyncSession, admin_id: uuid.UUID, *, lock: bool = False
) -> Admin | None:
    statement = select(Admin).where(Admin.id == admin_id)
    if lock:
        statement = statement.with_for_update()
    statement = statement.execution_options(populate_existing=True)
    return (await db.execute(statement)).scalar_one_or_none()


async def create_admin(
    db: AsyncSession, username: str, password_hash: str, role: str
) -> Admin | None:
    """The new operator account; None when the username is taken."""
    statement = (
        pg_insert(Admin)
        .values(
            id=uuid.uuid4(), username=username, password_hash=password_hash, role=role
        )
        .on_conflict_do_nothing(index_elements=[Admin.username])
        .returning(Admin)
    )
    return (await db.execute(statement)).scalar_one_or_none()


async def update_admin(
    db: AsyncSession, admin_id: uuid.UUID, values: dict[str, object]
) -> Admin:
    statement = (
        update(Admin)
        .where(Admin.id == admin_id)
        .values(**values, updated_at=func.now())
        .returning(Admin)
        .execution_options(populate_existing=True)
    )
    return (await db.execute(statement)).scalar_one()


async def lock_enabled_superadmins(db: AsyncSession) -> list[uuid.UUID]:
    """Ids of enabled superadmins, locked, so that two demotions cannot both
    count on the other one remaining."""
    statement = (
        select(Admin.id)
        .where(Admin.role == "superadmin", Admin.disabled.is_(False))
        .order_by(Admin.id)
        .with_for_update()
    )
    return list((await db.execute(statement)).scalars())


async def claim_operator_request(
    db: AsyncSession, key: str, kind: str, fingerprint: bytes
) -> bool:
    """Claim `key` for a request; False when it was claimed before (a
    concurrent claim waits for the first one's transaction)."""
    statement = (
        pg_insert(OperatorRequest)
        .values(key=key, kind=kind, fingerprint=fingerprint, result={})
        .on_conflict_do_nothing(index_elements=[OperatorRequest.key])
        .returning(OperatorRequest.key)
    )
    return (await db.execute(statement)).scalar_one_or_none() is not None


async def operator_request(db: AsyncSession, key: str) -> OperatorRequest:
    return (
        await db.execute(select(OperatorRequest).where(OperatorRequest.key == key))
    ).scalar_one()


async def record_operator_result(
    db: AsyncSession, key: str, result: dict[str, Any]
) -> None:
    await db.execute(
        update(OperatorRequest).where(OperatorRequest.key == key).values(result=result)
    )


# Figures for operators (SummarizeUsers)


async def users_by_status(db: AsyncSession) -> dict[str, int]:
    statement = select(User.status, func.count()).group_by(User.status)
    return {status: int(count) for status, count in (await db.execute(statement))}


async def signups_by_bucket(
    db: AsyncSession, period: Period
) -> list[tuple[datetime, int]]:
    """Accounts created in the period, per hour or day (newest-first index)."""
    bucket = period.bucket_of(User.created_at)
    statement = (
        select(bucket, func.count())
        .where(User.created_at >= period.start, User.created_at < period.end)
        .group_by(bucket)
        .order_by(bucket)
    )
    return [(moment, int(count)) for moment, count in await db.execute(statement)]


async def active_users_since(db: AsyncSession, moments: list[datetime]) -> list[int]:
    """For each moment, the users with a session opened or refreshed since
    then. Each user's latest use is found once (one pass over the sessions
    used since the earliest moment), then counted against every moment."""
    latest = (
        select(func.max(Session.last_used_at).label("used"))
        .where(Session.user_id.is_not(None), Session.last_used_at >= min(moments))
        .group_by(Session.user_id)
        .subquery()
    )
    statement = select(
        *(func.count().filter(latest.c.used >= moment) for moment in moments)
    )
    row = (await db.execute(statement)).one()
    return [int(count) for count in row]
