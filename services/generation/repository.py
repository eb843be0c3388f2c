"""All SQL of the generation service (community queries live beside their
service in community/repository.py)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    and_,
    case,
    delete,
    func,
    literal,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from libs.periods import Period
from services.generation.models import (
    ACTIVE_JOB_STATES,
    FINISHED,
    CommunityLike,
    CommunityPost,
    CreateRequest,
    Generation,
    GenerationCount,
    Job,
    Share,
    WebhookDelivery,
)

UNFINISHED = ("pending", "processing")


@dataclass(frozen=True)
class Cursor:
    started_at: datetime
    id: uuid.UUID


async def add_job(
    db: AsyncSession, job: Job, generations: Sequence[Generation]
) -> None:
    db.add(job)
    await db.flush()
    db.add_all(generations)
    await db.flush()
    for generation in generations:
        await bump_count(db, generation, 1)


async def bump_count(db: AsyncSession, generation: Generation, delta: int) -> None:
    statement = insert(GenerationCount).values(
        user_id=generation.user_id,
        workspace_id=generation.workspace_id,
        type=generation.type,
        count=delta,
    )
    await db.execute(
        statement.on_conflict_do_update(
            index_elements=["user_id", "workspace_id", "type"],
            set_={"count": GenerationCount.count + delta},
        )
    )


async def claim_create_request(
    db: AsyncSession, user_id: uuid.UUID, key: str, fingerprint: str, ids: list[str]
) -> CreateRequest | None:
    """Claim the key for this request; an earlier claim is returned instead."""
    inserted = await db.execute(
        insert(CreateRequest)
        .values(user_id=user_id, key=key, fingerprint=fingerprint, generation_ids=ids)
        .on_conflict_do_nothing()
        .returning(CreateRequest.key)
    )
    if inserted.scalar_one_or_none() is not None:
        return None
    return await db.get(CreateRequest, (user_id, key))


async def forget_create_request(db: AsyncSession, user_id: uuid.UUID, key: str) -> None:
    await db.execute(
        delete(CreateRequest).where(
            CreateRequest.user_id == user_id, CreateRequest.key == key
        )
    )


async def job(db: AsyncSession, job_id: uuid.UUID, *, lock: bool = False) -> Job | None:
    query = select(Job).where(Job.id == job_id)
    if lock:
        query = query.with_for_update()
    return (await db.execute(query)).scalar_one_or_none()


async def job_by_request(db: AsyncSession, request_id: str) -> Job | None:
    return (
        await db.execute(select(Job).where(Job.request_id == request_id))
    ).scalar_one_or_none()


async def generations_of_job(db: AsyncSession, job_id: uuid.UUID) -> list[Generation]:
    rows = await db.execute(
        select(Generation)
        .where(Generation.job_id == job_id)
        .order_by(Generation.image_index)
    )
    return list(rows.scalars())


async def owned(
    db: AsyncSession, user_id: uuid.UUID, ids: Sequence[uuid.UUID]
) -> list[Generation]:
    rows = await db.execute(
        select(Generation).where(
            Generation.id.in_(ids),
            Generation.user_id == user_id,
            Generation.deleted_at.is_(None),
        )
    )
    return list(rows.scalars())


async def generations_by_ids(
    db: AsyncSession, ids: Sequence[uuid.UUID]
) -> list[Generation]:
    rows = await db.execute(select(Generation).where(Generation.id.in_(ids)))
    found = {row.id: row for row in rows.scalars()}
    return [found[i] for i in ids if i in found]


async def list_generations(
    db: AsyncSession,
    user_id: uuid.UUID,
    workspace_id: uuid.UUID,
    *,
    type_: str | None,
    status: str | None,
    limit: int,
    cursor: Cursor | None,
    offset: int,
) -> list[Generation]:
    query = select(Generation).where(
        Generation.user_id == user_id,
        Generation.workspace_id == workspace_id,
        Generation.deleted_at.is_(None),
    )
    if type_:
        query = query.where(Generation.type == type_)
    if status:
        query = query.where(Generation.status == status)
    if cursor is not None:
        # A row comparison, so that the index seeks to the cursor instead of
        # filtering every row above it.
        query = query.where(
            tuple_(Generation.started_at, Generation.id)
            < tuple_(literal(cursor.started_at), literal(cursor.id))
        )
    elif offset:
        query = query.offset(offset)
    query = query.order_by(Generation.started_at.desc(), Generation.id.desc())
    return list((await db.execute(query.limit(limit))).scalars())


async def counts(
    db: AsyncSession, user_id: uuid.UUID, workspace_id: uuid.UUID
) -> dict[str, int]:
    rows = await db.execute(
        select(GenerationCount.type, GenerationCount.count).where(
            GenerationCount.user_id == user_id,
            GenerationCount.workspace_id == workspace_id,
            GenerationCount.count > 0,
        )
    )
    return {type_: count for type_, count in rows.tuples()}


async def gallery(
    db: AsyncSession,
    workspace_id: uuid.UUID,
    *,
    type_: str | None,
    limit: int,
    cursor: Cursor | None,
) -> list[Generation]:
    query = select(Generation).where(
        Generation.workspace_id == workspace_id,
        Generation.shared_with_workspace.is_(True),
        Generation.status == "completed",
        Generation.deleted_at.is_(None),
    )
    if type_:
        query = query.where(Generation.type == type_)
    if cursor is not None:
        query = query.where(
            tuple_(Generation.completed_at, Generation.id)
            < tuple_(literal(cursor.started_at), literal(cursor.id))
        )
    query = query.order_by(Generation.completed_at.desc(), Generation.id.desc())
    return list((await db.execute(query.limit(limit))).scalars())


async def transition(
    db: AsyncSession,
    ids: Sequence[uuid.UUID],
    *,
    allowed: Sequence[str],
    values: dict[str, Any],
) -> list[Generation]:
    """Move the generations that are in an allowed state; returns the moved."""
    if not ids:
        return []
    rows = await db.execute(
        update(Generation)
        .where(Generation.id.in_(ids), Generation.status.in_(allowed))
        .values(**values)
        .returning(Generation)
        .execution_options(synchronize_session=False)
    )
    return list(rows.scalars())


async def set_hold(db: AsyncSession, generation_id: uuid.UUID, hold_id: str) -> None:
    await db.execute(
        update(Generation).where(Generation.id == generation_id).values(hold_id=hold_id)
    )


async def update_job(db: AsyncSession, job_id: uuid.UUID, **values: Any) -> None:
    await db.execute(update(Job).where(Job.id == job_id).values(**values))


async def move_job(
    db: AsyncSession, job_id: uuid.UUID, *, from_states: Sequence[str], **values: Any
) -> bool:
    """A conditional job step; False when another party moved it first."""
    result = await db.execute(
        update(Job)
        .where(Job.id == job_id, Job.state.in_(from_states))
        .values(**values)
        .returning(Job.id)
    )
    return result.scalar_one_or_none() is not None


async def claim_jobs(
    db: AsyncSession, worker: str, limit: int, lease_seconds: int
) -> list[Job]:
    """Lease due jobs no other live worker holds (an expired lease is free)."""
    due = (
        select(Job.id)
        .where(
            Job.state.in_(ACTIVE_JOB_STATES),
            Job.due_at <= func.now(),
            or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < func.now()),
        )
        .order_by(Job.due_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = await db.execute(
        update(Job)
        .where(Job.id.in_(due.scalar_subquery()))
        .values(
            lease_owner=worker,
            lease_expires_at=func.now() + text(f"interval '{int(lease_seconds)} s'"),
            attempts=Job.attempts + 1,
        )
        .returning(Job)
        .execution_options(synchronize_session=False)
    )
    return list(rows.scalars())


async def release_lease(
    db: AsyncSession,
    job: Job,
    worker: str,
    delay_seconds: float,
) -> None:
    """Hand the job back, due again after `delay_seconds` — unless someone
    (a cancel, a create finishing its holds) made it due since it was
    claimed: that sooner time stands."""
    later = func.now() + text(f"interval '{float(delay_seconds)} s'")
    await db.execute(
        update(Job)
        .where(Job.id == job.id, Job.lease_owner == worker)
        .values(
            lease_owner=None,
            lease_expires_at=None,
            due_at=case((Job.due_at > job.due_at, Job.due_at), else_=later),
        )
    )


async def unsettled(db: AsyncSession, limit: int) -> list[Generation]:
    rows = await db.execute(
        select(Generation)
        .where(Generation.settlement.is_not(None), Generation.settled_at.is_(None))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(rows.scalars())


async def mark_settled(db: AsyncSession, ids: Sequence[uuid.UUID]) -> None:
    await db.execute(
        update(Generation).where(Generation.id.in_(ids)).values(settled_at=func.now())
    )


async def record_delivery(db: AsyncSession, request_id: str) -> bool:
    """True the first time this request id's webhook is seen."""
    inserted = await db.execute(
        insert(WebhookDelivery)
        .values(request_id=request_id)
        .on_conflict_do_nothing()
        .returning(WebhookDelivery.request_id)
    )
    return inserted.scalar_one_or_none() is not None


async def soft_delete(db: AsyncSession, generations: Sequence[Generation]) -> None:
    ids = [g.id for g in generations]
    await db.execute(
        update(Generation).where(Generation.id.in_(ids)).values(deleted_at=func.now())
    )
    await db.execute(delete(CommunityPost).where(CommunityPost.generation_id.in_(ids)))
    for generation in generations:
        await bump_count(db, generation, -1)


async def delete_job(db: AsyncSession, job_id: uuid.UUID) -> None:
    for generation in await generations_of_job(db, job_id):
        await bump_count(db, generation, -1)
    await db.execute(delete(Job).where(Job.id == job_id))


async def job_finished_if_done(db: AsyncSession, job_id: uuid.UUID) -> bool:
    """Mark the job finished once none of its generations is unfinished."""
    open_rows = await db.execute(
        select(func.count())
        .select_from(Generation)
        .where(Generation.job_id == job_id, Generation.status.not_in(FINISHED))
    )
    if open_rows.scalar_one() > 0:
        return False
    await db.execute(
        update(Job)
        .where(Job.id == job_id, Job.state != "finished")
        .values(state="finished", finished_at=func.now())
    )
    return True


async def share_with_workspace(
    db: AsyncSession, generation_id: uuid.UUID, shared: bool
) -> None:
    await db.execute(
        update(Generation)
        .where(Generation.id == generation_id)
        .values(shared_with_workspace=shared)
    )


# A user's data, for operators (the admin service)


@dataclass(frozen=True)
class CommunityDataDeleted:
    posts: int
    likes: int
    shares: int


async def undeleted_of_user(
    db: AsyncSession, user_id: uuid.UUID, limit: int
) -> list[Generation]:
    rows = await db.execute(
        select(Generation)
        .where(Generation.user_id == user_id, Generation.deleted_at.is_(None))
        .order_by(Generation.started_at, Generation.id)
        .limit(limit)
    )
    return list(rows.scalars())


async def latest_of_user(
    db: AsyncSession, user_id: uuid.UUID, limit: int
) -> list[Generation]:
    rows = await db.execute(
        select(Generation)
        .where(Generation.user_id == user_id, Generation.deleted_at.is_(None))
        .order_by(Generation.started_at.desc(), Generation.id.desc())
        .limit(limit)
    )
    return list(rows.scalars())


async def counts_of_user(db: AsyncSession, user_id: uuid.UUID) -> dict[str, int]:
    rows = await db.execute(
        select(GenerationCount.type, func.sum(GenerationCount.count))
        .where(GenerationCount.user_id == user_id)
        .group_by(GenerationCount.type)
    )
    return {kind: int(total) for kind, total in rows if total}


async def delete_community_data_of(
    db: AsyncSession, user_id: uuid.UUID
) -> CommunityDataDeleted:
    """The user's likes (taken off the posts' counts), posts, share links and
    create-request keys."""
    liked = list(
        await db.scalars(
            delete(CommunityLike)
            .where(CommunityLike.user_id == user_id)
            .returning(CommunityLike.post_id)
        )
    )
    if liked:
        await db.execute(
            update(CommunityPost)
            .where(CommunityPost.id.in_(liked))
            .values(like_count=func.greatest(CommunityPost.like_count - 1, 0))
        )
    posts = await db.execute(
        delete(CommunityPost).where(CommunityPost.user_id == user_id)
    )
    shares = await db.execute(delete(Share).where(Share.user_id == user_id))
    await db.execute(delete(CreateRequest).where(CreateRequest.user_id == user_id))
    return CommunityDataDeleted(
        posts=int(posts.rowcount or 0),  # type: ignore[attr-defined]
        likes=len(liked),
        shares=int(shares.rowcount or 0),  # type: ignore[attr-defined]
    )


# Figures for operators (SummarizeGenerations). Every query but the totals
# reads the generations started in the period through generations_by_start.


@dataclass(frozen=True)
class BucketCount:
    start: datetime
    type: str
    status: str
    count: int
    credits: int


@dataclass(frozen=True)
class ModelCount:
    model_id: str
    model_name: str
    type: str
    count: int
    # Credits of its completed generations.
    credits: int


def _started_in(period: Period) -> ColumnElement[bool]:
    return and_(
        Generation.started_at >= period.start, Generation.started_at < period.end
    )


async def counts_by_bucket(db: AsyncSession, period: Period) -> list[BucketCount]:
    bucket = period.bucket_of(Generation.started_at)
    statement = (
        select(
            bucket,
            Generation.type,
            Generation.status,
            func.count(),
            func.coalesce(func.sum(Generation.credits_micros), 0),
        )
        .where(_started_in(period))
        .group_by(bucket, Generation.type, Generation.status)
        .order_by(bucket)
    )
    return [
        BucketCount(start, kind, status, int(count), int(credits))
        for start, kind, status, count, credits in await db.execute(statement)
    ]


async def generating_users(
    db: AsyncSession, period: Period
) -> tuple[int, list[tuple[datetime, int]]]:
    """Distinct users who started a generation in the period, and per
    bucket, in one pass (the empty grouping set is the whole period)."""
    bucket = period.bucket_of(Generation.started_at)
    statement = (
        select(bucket, func.count(Generation.user_id.distinct()))
        .where(_started_in(period))
        .group_by(func.grouping_sets(tuple_(bucket), tuple_()))
    )
    total = 0
    buckets: list[tuple[datetime, int]] = []
    for moment, users in await db.execute(statement):
        if moment is None:
            total = int(users)
        else:
            buckets.append((moment, int(users)))
    return total, sorted(buckets)


async def model_counts(db: AsyncSession, period: Period) -> list[ModelCount]:
    completed = Generation.status == "completed"
    statement = (
        select(
            Generation.model_id,
            func.max(Generation.model_name),
            func.max(Generation.type),
            func.count(),
            func.coalesce(func.sum(Generation.credits_micros).filter(completed), 0),
        )
        .where(_started_in(period))
        .group_by(Generation.model_id)
    )
    return [
        ModelCount(model_id, name, kind, int(count), int(credits))
        for model_id, name, kind, count, credits in await db.execute(statement)
    ]


async def totals_by_type(db: AsyncSession) -> dict[str, int]:
    """All-time counts of generations not deleted, from the per-owner counts
    kept beside them rather than a scan of every generation."""
    statement = select(
        GenerationCount.type, func.coalesce(func.sum(GenerationCount.count), 0)
    ).group_by(GenerationCount.type)
    return {kind: int(count) for kind, count in await db.execute(statement)}


async def latest_generations(db: AsyncSession, limit: int) -> list[Generation]:
    statement = (
        select(Generation)
        .order_by(Generation.started_at.desc(), Generation.id.desc())
        .limit(limit)
    )
    return list(await db.scalars(statement))
