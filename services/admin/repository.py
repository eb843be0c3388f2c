"""All SQL of the admin service's core area: settings, feature flags,
announcements, the audit trail (read side), the error log, rate-limit rules
and their counters. Audit entries are written by services/admin/audit.py."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    case,
    delete,
    func,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.admin.models import (
    AdminTask,
    Announcement,
    AuditEntry,
    ErrorEntry,
    FeatureFlag,
    RateLimitCounter,
    RateLimitRule,
    Setting,
)

# The most severe announcements come first.
SEVERITY_RANK = {"critical": 0, "error": 1, "warning": 2, "info": 3}


@dataclass(frozen=True)
class Position:
    """Where a newest-first page stopped: the last row's time and id."""

    created_at: datetime
    id: Any


def _after(
    statement: Select[Any], created_at: Any, row_id: Any, position: Position | None
) -> Select[Any]:
    """Rows older than `position` (keyset pagination, newest first)."""
    if position is not None:
        statement = statement.where(
            tuple_(created_at, row_id) < tuple_(position.created_at, position.id)
        )
    return statement.order_by(created_at.desc(), row_id.desc())


# Settings


async def stored_settings(db: AsyncSession) -> dict[str, Any]:
    rows = await db.execute(select(Setting.key, Setting.value))
    return {key: value for key, value in rows.all()}


async def save_settings(db: AsyncSession, values: dict[str, Any], actor: str) -> None:
    for key, value in values.items():
        statement = pg_insert(Setting).values(key=key, value=value, updated_by=actor)
        await db.execute(
            statement.on_conflict_do_update(
                index_elements=[Setting.key],
                set_={
                    "value": statement.excluded.value,
                    "updated_by": actor,
                    "updated_at": func.now(),
                },
            )
        )


async def stored_setting(db: AsyncSession, key: str) -> Any:
    return await db.scalar(select(Setting.value).where(Setting.key == key))


# Feature flags


async def flags(db: AsyncSession) -> list[FeatureFlag]:
    return list((await db.scalars(select(FeatureFlag).order_by(FeatureFlag.key))).all())


async def flag(db: AsyncSession, key: str, *, lock: bool = False) -> FeatureFlag | None:
    statement = select(FeatureFlag).where(FeatureFlag.key == key)
    if lock:
        statement = statement.with_for_update()
    return (await db.scalars(statement)).one_or_none()


async def save_flag(
    db: AsyncSession, key: str, enabled: bool, description: str | None, actor: str
) -> FeatureFlag:
    changes: dict[str, Any] = {
        "enabled": enabled,
        "updated_by": actor,
        "updated_at": func.now(),
    }
    if description is not None:
        changes["description"] = description
    insert = pg_insert(FeatureFlag).values(
        key=key, enabled=enabled, description=description or "", updated_by=actor
    )
    statement = insert.on_conflict_do_update(
        index_elements=[FeatureFlag.key], set_=changes
    ).returning(FeatureFlag)
    saved: FeatureFlag = (
        await db.scalars(statement, execution_options={"populate_existing": True})
    ).one()
    return saved


async def flag_states(db: AsyncSession) -> dict[str, bool]:
    rows = await db.execute(select(FeatureFlag.key, FeatureFlag.enabled))
    return {key: enabled for key, enabled in rows.all()}


# Announcements


async def announcements(
    db: AsyncSession, position: Position | None, limit: int
) -> list[Announcement]:
    statement = _after(
        select(Announcement), Announcement.created_at, Announcement.id, position
    )
    return list((await db.scalars(statement.limit(limit))).all())


async def announcement(
    db: AsyncSession, announcement_id: uuid.UUID, *, lock: bool = False
) -> Announcement | None:
    statement = select(Announcement).where(Announcement.id == announcement_id)
    if lock:
        statement = statement.with_for_update()
    return (await db.scalars(statement)).one_or_none()


async def add_announcement(db: AsyncSession, values: dict[str, Any]) -> Announcement:
    row = Announcement(id=uuid.uuid4(), **values)
    db.add(row)
    await db.flush()
    await db.refresh(row)
    return row


async def change_announcement(
    db: AsyncSession, announcement_id: uuid.UUID, values: dict[str, Any]
) -> Announcement:
    statement = (
        update(Announcement)
        .where(Announcement.id == announcement_id)
        .values(**values, updated_at=func.now())
        .returning(Announcement)
    )
    changed: Announcement = (
        await db.scalars(statement, execution_options={"populate_existing": True})
    ).one()
    return changed


async def live_announcements(
    db: AsyncSession, audiences: Sequence[str], limit: int
) -> list[Announcement]:
    """Active ones for these audiences that have started and not expired,
    the most severe first, then the newest."""
    now = func.now()
    severity = case(
        SEVERITY_RANK, value=Announcement.severity, else_=len(SEVERITY_RANK)
    )
    statement = (
        select(Announcement)
        .where(
            Announcement.active,
            Announcement.audience.in_(audiences),
            Announcement.starts_at <= now,
            (Announcement.expires_at.is_(None)) | (Announcement.expires_at > now),
        )
        .order_by(severity, Announcement.starts_at.desc(), Announcement.id)
        .limit(limit)
    )
    return list((await db.scalars(statement)).all())


# Audit trail


@dataclass(frozen=True)
class AuditFilter:
    actor_id: str = ""
    action: str = ""
    target_type: str = ""
    target_id: str = ""
    since: datetime | None = None
    until: datetime | None = None


async def audit_entries(
    db: AsyncSession, where: AuditFilter, position: Position | None, limit: int
) -> list[AuditEntry]:
    conditions: list[ColumnElement[bool]] = []
    for column, value in (
        (AuditEntry.actor_id, where.actor_id),
        (AuditEntry.action, where.action),
        (AuditEntry.target_type, where.target_type),
        (AuditEntry.target_id, where.target_id),
    ):
        if value:
            conditions.append(column == value)
    if where.since is not None:
        conditions.append(AuditEntry.created_at >= where.since)
    if where.until is not None:
        conditions.append(AuditEntry.created_at < where.until)
    statement = _after(
        select(AuditEntry).where(*conditions),
        AuditEntry.created_at,
        AuditEntry.id,
        position,
    )
    return list((await db.scalars(statement.limit(limit))).all())


# Error log


async def add_error(db: AsyncSession, values: dict[str, Any]) -> uuid.UUID:
    error_id = uuid.uuid4()
    db.add(ErrorEntry(id=error_id, **values))
    await db.flush()
    return error_id


@dataclass(frozen=True)
class ErrorFilter:
    resolved: bool | None = None
    service: str = ""
    severity: str = ""


async def errors(
    db: AsyncSession, where: ErrorFilter, position: Position | None, limit: int
) -> list[ErrorEntry]:
    conditions: list[ColumnElement[bool]] = []
    if where.resolved is True:
        conditions.append(ErrorEntry.resolved_at.is_not(None))
    elif where.resolved is False:
        conditions.append(ErrorEntry.resolved_at.is_(None))
    if where.service:
        conditions.append(ErrorEntry.service == where.service)
    if where.severity:
        conditions.append(ErrorEntry.severity == where.severity)
    statement = _after(
        select(ErrorEntry).where(*conditions),
        ErrorEntry.created_at,
        ErrorEntry.id,
        position,
    )
    return list((await db.scalars(statement.limit(limit))).all())


async def error(
    db: AsyncSession, error_id: uuid.UUID, *, lock: bool = False
) -> ErrorEntry | None:
    statement = select(ErrorEntry).where(ErrorEntry.id == error_id)
    if lock:
        statement = statement.with_for_update()
    return (await db.scalars(statement)).one_or_none()


async def resolve_error(db: AsyncSession, error_id: uuid.UUID, by: str) -> ErrorEntry:
    statement = (
        update(ErrorEntry)
        .where(ErrorEntry.id == error_id)
        .values(resolved_at=func.now(), resolved_by=by)
        .returning(ErrorEntry)
    )
    resolved: ErrorEntry = (
        await db.scalars(statement, execution_options={"populate_existing": True})
    ).one()
    return resolved


# Rate limits


async def rules(db: AsyncSession) -> list[RateLimitRule]:
    statement = select(RateLimitRule).order_by(RateLimitRule.subject)
    return list((await db.scalars(statement)).all())


async def rule(
    db: AsyncSession, subject: str, *, lock: bool = False
) -> RateLimitRule | None:
    statement = select(RateLimitRule).where(RateLimitRule.subject == subject)
    if lock:
        statement = statement.with_for_update()
    return (await db.scalars(statement)).one_or_none()


async def save_rule(
    db: AsyncSession, subject: str, requests: int, window_seconds: int, actor: str
) -> RateLimitRule:
    insert = pg_insert(RateLimitRule).values(
        subject=subject,
        requests=requests,
        window_seconds=window_seconds,
        updated_by=actor,
    )
    statement = insert.on_conflict_do_update(
        index_elements=[RateLimitRule.subject],
        set_={
            "requests": requests,
            "window_seconds": window_seconds,
            "updated_by": actor,
            "updated_at": func.now(),
        },
    ).returning(RateLimitRule)
    saved: RateLimitRule = (
        await db.scalars(statement, execution_options={"populate_existing": True})
    ).one()
    return saved


async def delete_rule(db: AsyncSession, subject: str) -> None:
    await db.execute(delete(RateLimitRule).where(RateLimitRule.subject == subject))


async def reset_counter(db: AsyncSession, subject: str) -> None:
    """Forget what a subject has spent (its rule changed or went)."""
    await db.execute(
        delete(RateLimitCounter).where(RateLimitCounter.subject == subject)
    )


# GCRA in one statement, the rule read in the same statement: each request
# moves the subject's theoretical arrival time on by window / requests
# (times the cost); it is allowed while that time stays within one window of
# now, so a burst of `requests` passes, then one per window / requests.
_TAKE = text(
    """
    WITH rule AS (
        SELECT subject,
               make_interval(
                   secs => window_seconds::float8 * :cost / requests
               ) AS step,
               make_interval(secs => window_seconds) AS span
        FROM rate_limit_rules
        WHERE subject = :subject
    )
    INSERT INTO rate_limit_counters AS counter (subject, allowed_at)
    SELECT subject, clock_timestamp() + step FROM rule WHERE step <= span
    ON CONFLICT (subject) DO UPDATE
    SET allowed_at = GREATEST(counter.allowed_at, clock_timestamp())
        + (SELECT step FROM rule)
    WHERE GREATEST(counter.allowed_at, clock_timestamp()) + (SELECT step FROM rule)
        <= clock_timestamp() + (SELECT span FROM rule)
    RETURNING allowed_at
    """
)

# Only when refused: whether there is a rule, and how long until `cost`
# requests fit again.
_WAIT = text(
    """
    SELECT EXTRACT(
               EPOCH FROM GREATEST(counter.allowed_at, clock_timestamp())
               + make_interval(secs => rule.window_seconds::float8 * :cost
                                       / rule.requests)
               - make_interval(secs => rule.window_seconds)
               - clock_timestamp()
           )::float8 AS wait
    FROM rate_limit_rules AS rule
    LEFT JOIN rate_limit_counters AS counter ON counter.subject = rule.subject
    WHERE rule.subject = :subject
    """
)


@dataclass(frozen=True)
class Spent:
    limited: bool
    allowed: bool
    retry_after: float = 0.0


async def take(db: AsyncSession, subject: str, cost: int) -> Spent:
    params = {"subject": subject, "cost": cost}
    if (await db.execute(_TAKE, params)).first() is not None:
        return Spent(limited=True, allowed=True)
    wait = (await db.execute(_WAIT, params)).scalar_one_or_none()
    if wait is None:
        return Spent(limited=False, allowed=True)
    return Spent(limited=True, allowed=False, retry_after=max(float(wait), 0.0))


async def purge_idle_counters(db: AsyncSession) -> int:
    result = await db.execute(
        delete(RateLimitCounter).where(RateLimitCounter.allowed_at < func.now())
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# Admin tasks


async def keys_set_since(db: AsyncSession, kind: str, task_id: uuid.UUID) -> set[str]:
    """Setting keys that tasks of `kind` queued after this one have already
    applied: a late retry must not undo a newer change."""
    queued_at = (
        select(AdminTask.created_at).where(AdminTask.id == task_id).scalar_subquery()
    )
    rows = await db.scalars(
        select(AdminTask.payload).where(
            AdminTask.kind == kind,
            AdminTask.state == "done",
            AdminTask.created_at > queued_at,
        )
    )
    return {key for payload in rows for key in payload.get("values", {})}
