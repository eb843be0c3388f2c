"""Tables of the generation service, all in the `generation` schema.

A *job* is one request to fal: a model asked for N images is one job and N
generations. The job carries what the worker needs (the provider payload, the
queue URLs fal returned, the lease) and the generations carry what people see
(status, outputs, credits). Credits themselves live in billing: each
generation holds its share there under a key made from its id, and
`settlement` records which of capture or release is owed until billing has
confirmed it (`settled_at`), so a crash between the two never loses one.
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
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA = "generation"

STATUSES = ("pending", "processing", "completed", "failed", "cancelled")
FINISHED = ("completed", "failed", "cancelled")
# holding: rows exist, holds are being placed; queued: due for submission;
# submitting: a worker is posting it to fal (never posted again, see worker);
# submitted: fal has it, followed by webhook and polling; finished.
JOB_STATES = ("holding", "queued", "submitting", "submitted", "finished")
ACTIVE_JOB_STATES = ("holding", "queued", "submitting", "submitted")
JOB_KINDS = ("generate", "upscale")
SETTLEMENTS = ("capture", "release")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA)


def _at(*, nullable: bool = True) -> Mapped[Any]:
    if nullable:
        return mapped_column(DateTime(timezone=True), nullable=True)
    return mapped_column(DateTime(timezone=True), server_default=func.now())


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(_one_of("state", JOB_STATES), name="job_state"),
        CheckConstraint(_one_of("kind", JOB_KINDS), name="job_kind"),
        Index(
            "jobs_due",
            "due_at",
            postgresql_where=text(_one_of("state", ACTIVE_JOB_STATES)),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(UUID)
    kind: Mapped[str] = mapped_column(String(16))
    model_id: Mapped[str] = mapped_column(Text)
    endpoint: Mapped[str] = mapped_column(Text)
    # The body posted to fal: declared options, prompt, reference images.
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    state: Mapped[str] = mapped_column(String(16), server_default="holding")
    request_id: Mapped[str | None] = mapped_column(Text, unique=True)
    status_url: Mapped[str | None] = mapped_column(Text)
    response_url: Mapped[str | None] = mapped_column(Text)
    cancel_url: Mapped[str | None] = mapped_column(Text)
    queue_position: Mapped[int | None] = mapped_column(Integer)
    progress: Mapped[str | None] = mapped_column(Text)
    simulated: Mapped[bool] = mapped_column(Boolean, server_default=false())
    cancel_requested: Mapped[bool] = mapped_column(Boolean, server_default=false())
    lease_owner: Mapped[str | None] = mapped_column(Text)
    lease_expires_at: Mapped[datetime | None] = _at()
    due_at: Mapped[datetime] = _at(nullable=False)
    deadline_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    # Provider errors in a row that may pass (429, 5xx, garbage); reset by
    # any good answer.
    errors: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    # W3C traceparent of the request that created the job: the worker's
    # steps are spans of that trace (migration 0003).
    trace_context: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _at(nullable=False)
    submitted_at: Mapped[datetime | None] = _at()
    finished_at: Mapped[datetime | None] = _at()


class Generation(Base):
    __tablename__ = "generations"
    __table_args__ = (
        CheckConstraint(_one_of("status", STATUSES), name="generation_status"),
        CheckConstraint(
            "settlement IS NULL OR " + _one_of("settlement", SETTLEMENTS),
            name="generation_settlement",
        ),
        CheckConstraint("credits_micros >= 0", name="generation_credits"),
        Index(
            "generations_by_owner",
            "user_id",
            "workspace_id",
            text("started_at DESC"),
            text("id DESC"),
            postgresql_where=text("deleted_at IS NULL"),
        ),
        Index(
            "generations_gallery",
            "workspace_id",
            text("completed_at DESC"),
            text("id DESC"),
            postgresql_where=text(
                "deleted_at IS NULL AND shared_with_workspace AND status = 'completed'"
            ),
        ),
        Index("generations_by_job", "job_id"),
        # Operators' figures read generations by start time (migration 0002).
        Index("generations_by_start", "started_at"),
        Index(
            "generations_unsettled",
            "id",
            postgresql_where=text("settlement IS NOT NULL AND settled_at IS NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("jobs.id", ondelete="CASCADE")
    )
    user_id: Mapped[uuid.UUID] = mapped_column(UUID)
    workspace_id: Mapped[uuid.UUID] = mapped_column(UUID)
    shared_with_workspace: Mapped[bool] = mapped_column(Boolean, server_default=false())
    type: Mapped[str] = mapped_column(String(16))
    model_id: Mapped[str] = mapped_column(Text)
    model_name: Mapped[str] = mapped_column(Text)
    prompt: Mapped[str] = mapped_column(Text)
    options: Mapped[dict[str, Any]] = mapped_column(JSONB)
    image_index: Mapped[int] = mapped_column(SmallInteger, server_default="0")
    credits_micros: Mapped[int] = mapped_column(BigInteger)
    # The billing account that pays: billing's OwnerType number and owner id.
    payer_type: Mapped[int] = mapped_column(SmallInteger)
    payer_id: Mapped[uuid.UUID] = mapped_column(UUID)
    credit_source: Mapped[str] = mapped_column(String(24))
    hold_id: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    result_url: Mapped[str | None] = mapped_column(Text)
    thumbnail_url: Mapped[str | None] = mapped_column(Text)
    # Where the provider put the output, before it was copied to our storage.
    provider_url: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    error_type: Mapped[str | None] = mapped_column(String(32))
    max_wait_seconds: Mapped[int] = mapped_column(Integer)
    source_generation_id: Mapped[uuid.UUID | None] = mapped_column(UUID)
    simulated: Mapped[bool] = mapped_column(Boolean, server_default=false())
    settlement: Mapped[str | None] = mapped_column(String(16))
    settled_at: Mapped[datetime | None] = _at()
    started_at: Mapped[datetime] = _at(nullable=False)
    queued_at: Mapped[datetime | None] = _at()
    completed_at: Mapped[datetime | None] = _at()
    cancelled_at: Mapped[datetime | None] = _at()
    deleted_at: Mapped[datetime | None] = _at()


class GenerationCount(Base):
    """Generations per owner, workspace and type, kept in the transaction that
    adds or deletes one, so that a list's counts do not scan a million rows."""

    __tablename__ = "generation_counts"

    user_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    workspace_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    type: Mapped[str] = mapped_column(String(16), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, server_default="0")


class CreateRequest(Base):
    """An Idempotency-Key of POST /api/generate or /api/upscale, claimed in
    the transaction that creates the generations it names."""

    __tablename__ = "create_requests"

    user_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    generation_ids: Mapped[list[str]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _at(nullable=False)


class WebhookDelivery(Base):
    """fal retries a webhook for hours; each request id is handled once."""

    __tablename__ = "webhook_deliveries"

    request_id: Mapped[str] = mapped_column(Text, primary_key=True)
    received_at: Mapped[datetime] = _at(nullable=False)


class CommunityPost(Base):
    __tablename__ = "community_posts"
    __table_args__ = (
        Index("posts_latest", text("published_at DESC"), text("id DESC")),
        Index("posts_popular", text("like_count DESC"), text("published_at DESC")),
        Index("posts_by_user", "user_id", text("published_at DESC")),
        Index("posts_by_category", "category", text("published_at DESC")),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    generation_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("generations.id", ondelete="CASCADE"), unique=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(UUID)
    nickname: Mapped[str] = mapped_column(Text)
    title: Mapped[str] = mapped_column(Text, server_default="")
    category: Mapped[str] = mapped_column(String(32), server_default="other")
    media_type: Mapped[str] = mapped_column(String(16), server_default="image")
    image_url: Mapped[str] = mapped_column(Text)
    thumbnail_url: Mapped[str | None] = mapped_column(Text)
    prompt: Mapped[str] = mapped_column(Text, server_default="")
    model_name: Mapped[str] = mapped_column(Text, server_default="")
    like_count: Mapped[int] = mapped_column(BigInteger, server_default="0")
    view_count: Mapped[int] = mapped_column(BigInteger, server_default="0")
    is_nsfw: Mapped[bool] = mapped_column(Boolean, server_default=false())
    published_at: Mapped[datetime] = _at(nullable=False)


class CommunityLike(Base):
    __tablename__ = "community_likes"

    post_id: Mapped[uuid.UUID] = mapped_column(
        UUID,
        ForeignKey("community_posts.id", ondelete="CASCADE"),
        primary_key=True,
    )
    user_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    created_at: Mapped[datetime] = _at(nullable=False)


class Share(Base):
    __tablename__ = "shares"
    __table_args__ = (Index("shares_by_generation", "generation_id"),)

    token: Mapped[str] = mapped_column(String(64), primary_key=True)
    generation_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("generations.id", ondelete="CASCADE")
    )
    user_id: Mapped[uuid.UUID] = mapped_column(UUID)
    allow_download: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    view_count: Mapped[int] = mapped_column(BigInteger, server_default="0")
    created_at: Mapped[datetime] = _at(nullable=False)
    expires_at: Mapped[datetime | None] = _at()
    revoked_at: Mapped[datetime | None] = _at()
