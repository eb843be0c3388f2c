"""Tables of the auth service, all in the `auth` schema."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA = "auth"


class Base(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA)


def _now() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now())


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    # Stored lower-cased and trimmed; unique, so two spellings are one account.
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str | None] = mapped_column(Text)
    name: Mapped[str] = mapped_column(String(100))
    nickname: Mapped[str] = mapped_column(String(40), unique=True)
    avatar_url: Mapped[str | None] = mapped_column(Text)
    google_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    auth_provider: Mapped[str] = mapped_column(String(16), server_default="email")
    status: Mapped[str] = mapped_column(String(16), server_default="active")
    # Why an operator last changed the status, and when (migration 0004).
    status_reason: Mapped[str | None] = mapped_column(String(500))
    status_changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    bio: Mapped[str | None] = mapped_column(String(500))
    is_public_profile: Mapped[bool] = mapped_column(Boolean, server_default=false())
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()

    __table_args__ = (
        CheckConstraint(
            "status IN ('active', 'suspended', 'banned', 'deleted')",
            name="users_status",
        ),
        CheckConstraint("email = lower(email)", name="users_email_lower"),
        Index("users_newest_first", text("created_at DESC"), text("id DESC")),
    )


# Nicknames are unique whatever their letter case (migration 0003).
Index("users_nickname_lower", func.lower(User.nickname), unique=True)


class Admin(Base):
    __tablename__ = "admins"

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(16), server_default="superadmin")
    # A disabled operator cannot sign in; their sessions were revoked.
    disabled: Mapped[bool] = mapped_column(Boolean, server_default=false())
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()

    __table_args__ = (
        CheckConstraint(
            "role IN ('superadmin', 'support', 'viewer')", name="admins_role"
        ),
    )


class Session(Base):
    """A sign-in: one refresh-token family for users, or one operator login.

    `expires_at` is absolute: rotation never extends it. Access tokens carry
    the session id, so revoking the session (revoked_at) ends them too.
    """

    __tablename__ = "sessions"

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE")
    )
    admin_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("admins.id", ondelete="CASCADE")
    )
    created_at: Mapped[datetime] = _now()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime] = _now()
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoke_reason: Mapped[str | None] = mapped_column(String(32))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    ip_address: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        CheckConstraint(
            "num_nonnulls(user_id, admin_id) = 1", name="sessions_one_owner"
        ),
        Index(
            "sessions_user_active",
            "user_id",
            postgresql_where=text("revoked_at IS NULL"),
        ),
        Index(
            "sessions_revoked_at",
            "revoked_at",
            postgresql_where=text("revoked_at IS NOT NULL"),
        ),
        # Active-user counts: users by last use, read from the index alone
        # (migration 0005).
        Index(
            "sessions_user_activity",
            "last_used_at",
            "user_id",
            postgresql_where=text("user_id IS NOT NULL"),
        ),
    )


class RefreshToken(Base):
    """One link of a session's rotation chain. Only a SHA-256 of the token is
    kept; `used_at` is set once, when it is exchanged for its successor."""

    __tablename__ = "refresh_tokens"

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    session_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE")
    )
    parent_id: Mapped[uuid.UUID | None] = mapped_column(UUID)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    created_at: Mapped[datetime] = _now()
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("refresh_tokens_session_id", "session_id"),
        Index("refresh_tokens_parent_id", "parent_id"),
    )


class RateLimitBucket(Base):
    """GCRA state: `allowed_at` is the theoretical arrival time of the next
    event. Shared by every replica through the database."""

    __tablename__ = "rate_limit_buckets"

    key: Mapped[str] = mapped_column(String(320), primary_key=True)
    allowed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OperatorRequest(Base):
    """An operator's change (keyed by the admin task that asked for it) and
    the reply it got, so that a retried task answers the first reply instead
    of changing anything again."""

    __tablename__ = "operator_requests"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary(32))
    result: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _now()


class OutboxEvent(Base):
    """A side effect in another service that must not be lost (sign-up
    credits, the personal workspace). Written in the same transaction as the
    change that causes it; delivered by services.auth.outbox until every
    handler has succeeded. Handlers are idempotent, so a redelivery is safe."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, str]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _now()
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime] = _now()
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index(
            "outbox_pending",
            "next_attempt_at",
            postgresql_where=text("delivered_at IS NULL"),
        ),
    )
