"""Tables of the admin service, all in the `admin` schema.

The admin service owns what belongs to operators: platform settings, feature
flags, announcements, the audit trail, the error log and notes about users.
Changes to data other services own (a user's status, credits, a model) are
made by asking the owning service; such a change is written here first as an
`admin_tasks` row with its audit entry, in one transaction, and carried out
(and retried) from there, so the trail never misses an action.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import INET, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA = "admin"

TASK_STATES = ("pending", "done", "failed")
AUDIENCES = ("all", "users", "admins")
SEVERITIES = ("info", "warning", "error", "critical")


class Base(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA)


def _at(*, nullable: bool = True) -> Mapped[Any]:
    if nullable:
        return mapped_column(DateTime(timezone=True), nullable=True)
    return mapped_column(DateTime(timezone=True), server_default=func.now())


class Setting(Base):
    """One platform setting; its type and validator live in code."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSONB)
    updated_by: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = _at(nullable=False)


class FeatureFlag(Base):
    __tablename__ = "feature_flags"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=false())
    description: Mapped[str] = mapped_column(Text, server_default="")
    updated_by: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = _at(nullable=False)


class Announcement(Base):
    __tablename__ = "announcements"
    __table_args__ = (
        CheckConstraint(
            "audience IN ('all', 'users', 'admins')", name="announcement_audience"
        ),
        CheckConstraint(
            "severity IN ('info', 'warning', 'error', 'critical')",
            name="announcement_severity",
        ),
        Index("announcements_live", "starts_at", "expires_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text, server_default="")
    audience: Mapped[str] = mapped_column(String(16), server_default="all")
    severity: Mapped[str] = mapped_column(String(16), server_default="info")
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    starts_at: Mapped[datetime] = _at(nullable=False)
    expires_at: Mapped[datetime | None] = _at()
    created_by: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = _at(nullable=False)
    updated_at: Mapped[datetime] = _at(nullable=False)


class AuditEntry(Base):
    """Who did what to which object, the object before and after, and from
    where. Append-only (a trigger refuses UPDATE of what happened and any
    DELETE); only `status` moves, from pending to applied or failed."""

    __tablename__ = "audit_log"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'applied', 'failed')", name="audit_status"
        ),
        Index("audit_by_time", text("created_at DESC"), text("id DESC")),
        Index("audit_by_actor", "actor_id", text("created_at DESC")),
        Index("audit_by_target", "target_type", "target_id", text("created_at DESC")),
        Index("audit_by_action", "action", text("created_at DESC")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    actor_id: Mapped[str] = mapped_column(Text)
    actor_name: Mapped[str] = mapped_column(Text, server_default="")
    actor_role: Mapped[str] = mapped_column(String(16), server_default="")
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str] = mapped_column(Text, server_default="")
    before: Mapped[Any] = mapped_column(JSONB, nullable=True)
    after: Mapped[Any] = mapped_column(JSONB, nullable=True)
    client_address: Mapped[str | None] = mapped_column(INET)
    request_id: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), server_default="applied")
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _at(nullable=False)


class AdminTask(Base):
    """An action on another service's data, written with its audit entry and
    carried out until the owning service confirms it (the outbox)."""

    __tablename__ = "admin_tasks"
    __table_args__ = (
        CheckConstraint(
            "state IN ('pending', 'done', 'failed')", name="admin_task_state"
        ),
        Index(
            "admin_tasks_due",
            "next_attempt_at",
            postgresql_where=text("state = 'pending'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    audit_id: Mapped[int | None] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16), server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime] = _at(nullable=False)
    last_error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[Any] = mapped_column(JSONB, nullable=True)
    created_at: Mapped[datetime] = _at(nullable=False)
    done_at: Mapped[datetime | None] = _at()


class ErrorEntry(Base):
    """A provider or internal failure a service reported."""

    __tablename__ = "error_log"
    __table_args__ = (
        CheckConstraint(
            "severity IN ('info', 'warning', 'error', 'critical')",
            name="error_severity",
        ),
        Index("errors_by_time", text("created_at DESC"), text("id DESC")),
        Index(
            "errors_unresolved",
            text("created_at DESC"),
            postgresql_where=text("resolved_at IS NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    service: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16), server_default="error")
    code: Mapped[str] = mapped_column(String(64), server_default="")
    message: Mapped[str] = mapped_column(Text)
    user_id: Mapped[str | None] = mapped_column(Text)
    reference_id: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    created_at: Mapped[datetime] = _at(nullable=False)
    resolved_at: Mapped[datetime | None] = _at()
    resolved_by: Mapped[str | None] = mapped_column(Text)


class UserNote(Base):
    __tablename__ = "user_notes"
    __table_args__ = (Index("notes_by_user", "user_id", text("created_at DESC")),)

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(UUID)
    author_id: Mapped[str] = mapped_column(Text)
    author_name: Mapped[str] = mapped_column(Text, server_default="")
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = _at(nullable=False)


class RateLimitRule(Base):
    """Requests allowed per window for a tier (`tier:<plan id>`, `tier:free`)
    or one user (`user:<id>`); the gateway enforces them."""

    __tablename__ = "rate_limit_rules"

    subject: Mapped[str] = mapped_column(String(80), primary_key=True)
    requests: Mapped[int] = mapped_column(Integer)
    window_seconds: Mapped[int] = mapped_column(Integer)
    updated_by: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = _at(nullable=False)


class RateLimitCounter(Base):
    """GCRA state of one rate-limit subject: `allowed_at` is the theoretical
    arrival time of its next request. Shared by every gateway replica
    through the database; a counter whose time has passed is idle."""

    __tablename__ = "rate_limit_counters"
    __table_args__ = (Index("rate_limit_counters_idle", "allowed_at"),)

    subject: Mapped[str] = mapped_column(String(80), primary_key=True)
    allowed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
