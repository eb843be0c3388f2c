"""All SQL of the gallery and share links.

A post is visible while its generation is not deleted: every read joins the
generation and skips soft-deleted ones, so a deleted generation's post
disappears at once even before its row is removed.

Likes are counted in `community_posts.like_count`, changed in the same
transaction as the like row while the post row is locked, so the count is
always the number of like rows, however many people click at once.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Double,
    Select,
    cast,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.generation.models import CommunityLike, CommunityPost, Generation, Share

SECONDS_PER_DAY = 86_400.0


class Order(enum.Enum):
    LATEST = "latest"
    POPULAR = "popular"
    # Likes per day of age: like_count / (days since publishing + 1).
    TRENDING = "trending"


@dataclass(frozen=True)
class FeedFilter:
    category: str | None = None
    search: str | None = None
    # Leave out posts their publisher marked NSFW (the landing page).
    safe_only: bool = False
    published_after: datetime | None = None


@dataclass(frozen=True)
class Position:
    """Where a page ended: the sort value of its last post (likes or score;
    unused when sorted by date), then its publishing time and id."""

    rank: float
    published_at: datetime
    id: uuid.UUID


@dataclass(frozen=True)
class RankedPost:
    post: CommunityPost
    rank: float


def _visible(*columns: Any) -> Select[Any]:
    """SELECT `columns` (the post by default) over visible posts."""
    return (
        select(*(columns or (CommunityPost,)))
        .select_from(CommunityPost)
        .join(Generation, Generation.id == CommunityPost.generation_id)
        .where(Generation.deleted_at.is_(None))
    )


def _escaped(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _filtered(statement: Select[Any], feed: FeedFilter) -> Select[Any]:
    if feed.category:
        statement = statement.where(CommunityPost.category == feed.category)
    if feed.search:
        pattern = f"%{_escaped(feed.search)}%"
        statement = statement.where(
            or_(
                CommunityPost.title.ilike(pattern, escape="\\"),
                CommunityPost.prompt.ilike(pattern, escape="\\"),
            )
        )
    if feed.safe_only:
        statement = statement.where(CommunityPost.is_nsfw.is_(False))
    if feed.published_after is not None:
        statement = statement.where(
            CommunityPost.published_at > literal(feed.published_after, DateTime(True))
        )
    return statement


def _sort_keys(order: Order, reference: datetime) -> list[ColumnElement[Any]]:
    """What a listing sorts on, descending, most significant first."""
    keys: list[ColumnElement[Any]] = [
        CommunityPost.published_at.expression,
        CommunityPost.id.expression,
    ]
    if order is Order.POPULAR:
        return [cast(CommunityPost.like_count, Double).label("rank"), *keys]
    if order is Order.TRENDING:
        moment = literal(reference, DateTime(timezone=True))
        age_seconds = func.greatest(
            cast(func.extract("epoch", moment - CommunityPost.published_at), Double),
            0.0,
        )
        score = cast(CommunityPost.like_count, Double) / (
            age_seconds / SECONDS_PER_DAY + 1.0
        )
        return [score.label("rank"), *keys]
    return keys


def _position_values(position: Position, ranked: bool) -> list[ColumnElement[Any]]:
    values: list[ColumnElement[Any]] = [
        literal(position.published_at, DateTime(timezone=True)),
        literal(position.id, CommunityPost.id.type),
    ]
    return [literal(position.rank, Double), *values] if ranked else values


async def posts_page(
    db: AsyncSession,
    feed: FeedFilter,
    order: Order,
    reference: datetime,
    *,
    after: Position | None,
    offset: int,
    limit: int,
) -> list[RankedPost]:
    """Visible posts in `order`, from `after` (or skipping `offset`).
    `reference` is the moment trending scores are computed for, fixed for
    every page of one listing so that its order does not drift."""
    keys = _sort_keys(order, reference)
    ranked = order is not Order.LATEST
    statement = _filtered(_visible(CommunityPost, *keys[:-2]), feed)
    if after is not None:
        statement = statement.where(
            tuple_(*keys) < tuple_(*_position_values(after, ranked))
        )
    statement = (
        statement.order_by(*(key.desc() for key in keys)).offset(offset).limit(limit)
    )
    rows = (await db.execute(statement)).all()
    return [RankedPost(row[0], float(row[1]) if ranked else 0.0) for row in rows]


async def count_posts(db: AsyncSession, feed: FeedFilter) -> int:
    statement = _filtered(_visible(func.count()), feed)
    return int(await db.scalar(statement) or 0)


async def category_counts(db: AsyncSession) -> dict[str, int]:
    statement = _visible(CommunityPost.category, func.count()).group_by(
        CommunityPost.category
    )
    rows = await db.execute(statement)
    return {category: int(count) for category, count in rows.all()}


async def visible_post_of_generation(
    db: AsyncSession, generation_id: uuid.UUID
) -> CommunityPost | None:
    post: CommunityPost | None = await db.scalar(
        _visible().where(CommunityPost.generation_id == generation_id)
    )
    return post


async def count_post_view(db: AsyncSession, post_id: uuid.UUID) -> CommunityPost | None:
    """Add one view to a visible post and return it as it now is."""
    visible = exists().where(
        Generation.id == CommunityPost.generation_id, Generation.deleted_at.is_(None)
    )
    post: CommunityPost | None = await db.scalar(
        update(CommunityPost)
        .where(CommunityPost.id == post_id, visible)
        .values(view_count=CommunityPost.view_count + 1)
        .returning(CommunityPost),
        execution_options={"populate_existing": True},
    )
    return post


async def liked_post_ids(
    db: AsyncSession, user_id: uuid.UUID, post_ids: list[uuid.UUID]
) -> set[uuid.UUID]:
    if not post_ids:
        return set()
    rows = await db.scalars(
        select(CommunityLike.post_id).where(
            CommunityLike.user_id == user_id, CommunityLike.post_id.in_(post_ids)
        )
    )
    return set(rows)


async def lock_visible_post(db: AsyncSession, post_id: uuid.UUID) -> bool:
    """Lock a visible post's row for a like change; False when there is none."""
    statement = (
        _visible(CommunityPost.id)
        .where(CommunityPost.id == post_id)
        .with_for_update(of=CommunityPost, key_share=True)
    )
    return await db.scalar(statement) is not None


async def remove_like(db: AsyncSession, post_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    removed = await db.scalar(
        delete(CommunityLike)
        .where(CommunityLike.post_id == post_id, CommunityLike.user_id == user_id)
        .returning(CommunityLike.post_id)
    )
    return removed is not None


async def add_like(db: AsyncSession, post_id: uuid.UUID, user_id: uuid.UUID) -> None:
    await db.execute(pg_insert(CommunityLike).values(post_id=post_id, user_id=user_id))


async def change_like_count(db: AsyncSession, post_id: uuid.UUID, delta: int) -> int:
    count = await db.scalar(
        update(CommunityPost)
        .where(CommunityPost.id == post_id)
        .values(like_count=CommunityPost.like_count + delta)
        .returning(CommunityPost.like_count)
    )
    return int(count or 0)


async def own_generation(
    db: AsyncSession, user_id: uuid.UUID, generation_id: uuid.UUID
) -> Generation | None:
    generation: Generation | None = await db.scalar(
        select(Generation).where(
            Generation.id == generation_id,
            Generation.user_id == user_id,
            Generation.deleted_at.is_(None),
        )
    )
    return generation


async def generation_type(db: AsyncSession, generation_id: uuid.UUID) -> str | None:
    kind: str | None = await db.scalar(
        select(Generation.type).where(Generation.id == generation_id)
    )
    return kind


async def insert_post(
    db: AsyncSession, post_id: uuid.UUID, values: dict[str, object]
) -> CommunityPost | None:
    """The new post, or None when the generation already has one."""
    post: CommunityPost | None = await db.scalar(
        pg_insert(CommunityPost)
        .values(id=post_id, **values)
        .on_conflict_do_nothing(index_elements=[CommunityPost.generation_id])
        .returning(CommunityPost)
    )
    return post


async def delete_post(db: AsyncSession, post_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    deleted = await db.scalar(
        delete(CommunityPost)
        .where(CommunityPost.id == post_id, CommunityPost.user_id == user_id)
        .returning(CommunityPost.id)
    )
    return deleted is not None


async def user_posts_page(
    db: AsyncSession, user_id: uuid.UUID, after: Position | None, limit: int
) -> list[CommunityPost]:
    """A user's visible posts, newest first."""
    statement = _visible().where(CommunityPost.user_id == user_id)
    if after is not None:
        statement = statement.where(
            tuple_(CommunityPost.published_at, CommunityPost.id)
            < tuple_(
                literal(after.published_at, DateTime(timezone=True)),
                literal(after.id, CommunityPost.id.type),
            )
        )
    statement = statement.order_by(
        CommunityPost.published_at.desc(), CommunityPost.id.desc()
    ).limit(limit)
    return list(await db.scalars(statement))


# Shares


async def lock_sharing_of(db: AsyncSession, generation_id: uuid.UUID) -> None:
    """Serialise share creation per generation until the transaction ends,
    without locking the generation row the worker updates."""
    await db.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
        {"key": f"share:{generation_id}"},
    )


def _active(now: datetime) -> ColumnElement[bool]:
    moment = literal(now, DateTime(timezone=True))
    return Share.revoked_at.is_(None) & (
        Share.expires_at.is_(None) | (Share.expires_at > moment)
    )


async def active_share(
    db: AsyncSession, generation_id: uuid.UUID, now: datetime
) -> Share | None:
    """The newest share link of a generation that is neither revoked nor
    expired."""
    share: Share | None = await db.scalar(
        select(Share)
        .where(Share.generation_id == generation_id, _active(now))
        .order_by(Share.created_at.desc())
        .limit(1)
    )
    return share


async def insert_share(db: AsyncSession, values: dict[str, object]) -> Share:
    share: Share | None = await db.scalar(
        pg_insert(Share).values(**values).returning(Share)
    )
    assert share is not None
    return share


async def revoke_share(db: AsyncSession, token: str, user_id: uuid.UUID) -> bool:
    """Revoke the user's share link (again, if it was already)."""
    revoked = await db.scalar(
        update(Share)
        .where(Share.token == token, Share.user_id == user_id)
        .values(revoked_at=func.coalesce(Share.revoked_at, func.now()))
        .returning(Share.token)
    )
    return revoked is not None


async def shared_by_token(
    db: AsyncSession, token: str
) -> tuple[Share, Generation] | None:
    """An unrevoked share link and its completed, undeleted generation."""
    row = (
        await db.execute(
            select(Share, Generation)
            .join(Generation, Generation.id == Share.generation_id)
            .where(
                Share.token == token,
                Share.revoked_at.is_(None),
                Generation.deleted_at.is_(None),
                Generation.status == "completed",
            )
        )
    ).first()
    return (row[0], row[1]) if row is not None else None


async def count_share_view(db: AsyncSession, token: str) -> int:
    count = await db.scalar(
        update(Share)
        .where(Share.token == token)
        .values(view_count=Share.view_count + 1)
        .returning(Share.view_count)
    )
    return int(count or 0)


async def completed_generation(
    db: AsyncSession, generation_id: uuid.UUID
) -> Generation | None:
    generation: Generation | None = await db.scalar(
        select(Generation).where(
            Generation.id == generation_id,
            Generation.deleted_at.is_(None),
            Generation.status == "completed",
        )
    )
    return generation


# Profile figures


async def generation_count(db: AsyncSession, user_id: uuid.UUID) -> int:
    count = await db.scalar(
        select(func.count()).where(
            Generation.user_id == user_id, Generation.deleted_at.is_(None)
        )
    )
    return int(count or 0)


async def post_totals(db: AsyncSession, user_id: uuid.UUID) -> tuple[int, int]:
    """How many visible posts a user has and the likes they hold together."""
    statement = _visible(
        func.count(), func.coalesce(func.sum(CommunityPost.like_count), 0)
    ).where(CommunityPost.user_id == user_id)
    row = (await db.execute(statement)).one()
    return int(row[0]), int(row[1])


# Moderation: every post, whether or not the feed would show it.


@dataclass(frozen=True)
class ModerationFilter:
    post_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    search: str | None = None
    nsfw_only: bool = False


async def posts_for_moderation(
    db: AsyncSession, found: ModerationFilter, after: Position | None, limit: int
) -> list[CommunityPost]:
    """Posts matching `found`, newest first, older than `after` when given."""
    statement = select(CommunityPost)
    if found.post_id is not None:
        statement = statement.where(CommunityPost.id == found.post_id)
    if found.user_id is not None:
        statement = statement.where(CommunityPost.user_id == found.user_id)
    if found.nsfw_only:
        statement = statement.where(CommunityPost.is_nsfw.is_(True))
    statement = _filtered(statement, FeedFilter(search=found.search))
    if after is not None:
        statement = statement.where(
            tuple_(CommunityPost.published_at, CommunityPost.id)
            < tuple_(
                literal(after.published_at, DateTime(timezone=True)),
                literal(after.id, CommunityPost.id.type),
            )
        )
    statement = statement.order_by(
        CommunityPost.published_at.desc(), CommunityPost.id.desc()
    ).limit(limit)
    return list(await db.scalars(statement))


async def remove_post(db: AsyncSession, post_id: uuid.UUID) -> bool:
    """Delete a post whoever published it (its likes go with it)."""
    deleted = await db.scalar(
        delete(CommunityPost)
        .where(CommunityPost.id == post_id)
        .returning(CommunityPost.id)
    )
    return deleted is not None
