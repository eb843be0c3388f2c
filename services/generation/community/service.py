"""The rules of the gallery and of share links. Every method takes the
caller's session and never commits; the servicer owns the transaction.

- A post is made only from the publisher's own completed image or video
  (an upscale counts as what it upscaled); its media, prompt and model are
  copied from the generation, never taken from the request.
- A like is one per user and post; liking again takes it back.
- A share link belongs to the owner of its generation, may expire, and can
  be revoked. A generation is public by id while it has a live share link
  or a community post; otherwise it is not found, whoever asks.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from libs.errors import (
    Conflict,
    Expired,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from libs.logs import get_logger
from services.generation.community import categories, repository
from services.generation.community.repository import (
    FeedFilter,
    Order,
    Position,
    RankedPost,
)
from services.generation.models import CommunityPost, Generation, Share

log = get_logger(__name__)

DEFAULT_FEED_PAGE = 24
MAX_FEED_PAGE = 100
DEFAULT_MY_POSTS_PAGE = 50
DEFAULT_MODERATION_PAGE = 50
# What a moderation log line keeps of an operator's reason.
MAX_REASON_LENGTH = 500
# Matches no post: the filter of an id that cannot exist.
NOTHING = uuid.UUID(int=0)
DEFAULT_FEATURED = 8
MAX_FEATURED = 24
# The landing page prefers posts of the last month.
FEATURED_WINDOW = timedelta(days=30)
MAX_TITLE_LENGTH = 200
MAX_SEARCH_LENGTH = 200
MAX_SHARE_DAYS = 365
# 12 random bytes: a 16-character URL-safe token, never mistaken for a UUID.
SHARE_TOKEN_BYTES = 12
MAX_SHARE_TOKEN_LENGTH = 64

PUBLISHABLE_TYPES = ("image", "video", "upscale")
SORTS = {
    "": Order.LATEST,
    "latest": Order.LATEST,
    "recent": Order.LATEST,
    "popular": Order.POPULAR,
    "trending": Order.TRENDING,
}

POST_NOT_FOUND = "Post not found."
GENERATION_NOT_FOUND = "Generation not found."
NOT_SHARED = "This generation does not exist or is not shared publicly."


@dataclass(frozen=True)
class FeedQuery:
    sort: str = ""
    category: str = ""
    search: str = ""
    page_size: int = 0
    page: int = 0
    page_token: str = ""


@dataclass(frozen=True)
class PostView:
    post: CommunityPost
    liked: bool


@dataclass(frozen=True)
class FeedPage:
    posts: list[PostView]
    total: int
    page: int
    total_pages: int
    next_page_token: str


@dataclass(frozen=True)
class CategoryCount:
    id: str
    name: str
    count: int


@dataclass(frozen=True)
class Publication:
    generation_id: str
    title: str = ""
    category: str = ""
    is_nsfw: bool = False


@dataclass(frozen=True)
class LikeState:
    liked: bool
    like_count: int


@dataclass(frozen=True)
class ShareRequest:
    generation_id: str
    allow_download: bool = True
    # 0: the link never expires.
    expires_in_days: int = 0


@dataclass(frozen=True)
class SharedView:
    generation: Generation
    owner_id: str
    allow_download: bool
    view_count: int


@dataclass(frozen=True)
class UserStats:
    generations: int
    published: int
    likes_received: int


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _required_uuid(value: str, message: str) -> uuid.UUID:
    """An id the caller sent; one that cannot exist is simply not found."""
    parsed = _uuid(value)
    if parsed is None:
        raise NotFound(message)
    return parsed


# Page tokens: where the previous page ended, plus the listing they belong to.

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def _micros(moment: datetime) -> int:
    return (moment - EPOCH) // MICROSECOND


def _moment(micros: int) -> datetime:
    return EPOCH + micros * MICROSECOND


@dataclass(frozen=True)
class _Listing:
    order: Order
    feed: FeedFilter
    reference: datetime


def _bad_token() -> InvalidArgument:
    return InvalidArgument.for_field(
        "page_token", "The page token is not one this service issued."
    )


def _encode_token(fields: dict[str, object]) -> str:
    raw = json.dumps(fields, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str) -> dict[str, object]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        fields = json.loads(raw)
    except (binascii.Error, ValueError):
        raise _bad_token() from None
    if not isinstance(fields, dict):
        raise _bad_token()
    return fields


def _position_token(post: RankedPost, extra: dict[str, object]) -> str:
    return _encode_token(
        {
            **extra,
            "rank": post.rank,
            "at": _micros(post.post.published_at),
            "id": str(post.post.id),
        }
    )


def _token_position(fields: dict[str, object]) -> Position:
    rank, at, raw_id = fields.get("rank"), fields.get("at"), fields.get("id")
    parsed = _uuid(raw_id) if isinstance(raw_id, str) else None
    if not isinstance(rank, int | float) or not isinstance(at, int) or not parsed:
        raise _bad_token()
    try:
        return Position(float(rank), _moment(at), parsed)
    except OverflowError:
        # A number no token of ours carries (a rank past float, a year
        # past 9999): tampered with.
        raise _bad_token() from None


def _feed_token(listing: _Listing, page: int, last: RankedPost) -> str:
    return _position_token(
        last,
        {
            "order": listing.order.value,
            "category": listing.feed.category or "",
            "search": listing.feed.search or "",
            "reference": _micros(listing.reference),
            "page": page,
        },
    )


def _feed_position(token: str, listing: _Listing) -> tuple[Position, int, datetime]:
    """The position, page number and trending moment a feed token carries."""
    fields = _decode_token(token)
    page, reference = fields.get("page"), fields.get("reference")
    same_listing = (
        fields.get("order") == listing.order.value
        and fields.get("category") == (listing.feed.category or "")
        and fields.get("search") == (listing.feed.search or "")
    )
    if not same_listing:
        raise InvalidArgument.for_field(
            "page_token", "The page token belongs to a listing with other filters."
        )
    if not isinstance(page, int) or page < 1 or not isinstance(reference, int):
        raise _bad_token()
    return _token_position(fields), page, _moment(reference)


# Checks of what the caller sent


def _order(sort: str) -> Order:
    order = SORTS.get(sort.strip().lower())
    if order is None:
        raise InvalidArgument.for_field(
            "sort", "sort is one of latest, popular or trending."
        )
    return order


def _feed_filter(query: FeedQuery) -> FeedFilter:
    category = query.category.strip().lower()
    search = query.search.strip()
    if len(search) > MAX_SEARCH_LENGTH:
        raise InvalidArgument.for_field(
            "search", f"search has at most {MAX_SEARCH_LENGTH} characters."
        )
    return FeedFilter(
        category=None if category in ("", categories.ALL) else category,
        search=search or None,
    )


def _page_size(requested: int, default: int, maximum: int) -> int:
    if requested < 0:
        raise InvalidArgument.for_field("page_size", "page_size may not be negative.")
    return min(requested or default, maximum)


def _page_number(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument.for_field("page", "page starts at 1.")
    return requested or 1


def _title(title: str) -> str:
    cleaned = title.strip()
    if len(cleaned) > MAX_TITLE_LENGTH:
        raise InvalidArgument.for_field(
            "title", f"A title has at most {MAX_TITLE_LENGTH} characters."
        )
    return cleaned


def _expiry(days: int, now: datetime) -> datetime | None:
    if days == 0:
        return None
    if not 1 <= days <= MAX_SHARE_DAYS:
        raise InvalidArgument.for_field(
            "expires_in_days",
            f"A share link lasts 1 to {MAX_SHARE_DAYS} days, or for ever (0).",
        )
    return now + timedelta(days=days)


def _require_completed(generation: Generation, action: str) -> None:
    if generation.status != "completed":
        raise FailedPrecondition(
            f"Only a completed generation can be {action}; "
            f"this one is {generation.status}."
        )
    if not generation.result_url:
        raise FailedPrecondition(f"This generation has no result to be {action}.")


class CommunityService:
    # The feed

    async def list_posts(
        self, db: AsyncSession, query: FeedQuery, viewer_id: str | None
    ) -> FeedPage:
        size = _page_size(query.page_size, DEFAULT_FEED_PAGE, MAX_FEED_PAGE)
        listing = _Listing(_order(query.sort), _feed_filter(query), datetime.now(UTC))
        after: Position | None = None
        page = _page_number(query.page)
        if query.page_token:
            after, page, reference = _feed_position(query.page_token, listing)
            listing = _Listing(listing.order, listing.feed, reference)
        rows = await repository.posts_page(
            db,
            listing.feed,
            listing.order,
            listing.reference,
            after=after,
            offset=0 if after else (page - 1) * size,
            limit=size + 1,
        )
        total = await repository.count_posts(db, listing.feed)
        more = len(rows) > size
        return FeedPage(
            posts=await self._views(db, [row.post for row in rows[:size]], viewer_id),
            total=total,
            page=page,
            total_pages=max(1, math.ceil(total / size)),
            next_page_token=(
                _feed_token(listing, page + 1, rows[size - 1]) if more else ""
            ),
        )

    async def featured(
        self, db: AsyncSession, page_size: int, viewer_id: str | None
    ) -> list[PostView]:
        """Posts for the landing page, none marked NSFW: the recent ones most
        liked for their age, topped up with the most liked of all time when
        the gallery has been quiet."""
        size = _page_size(page_size, DEFAULT_FEATURED, MAX_FEATURED)
        now = datetime.now(UTC)
        recent = FeedFilter(safe_only=True, published_after=now - FEATURED_WINDOW)
        rows = await repository.posts_page(
            db, recent, Order.TRENDING, now, after=None, offset=0, limit=size
        )
        if len(rows) < size:
            # Up to `size` of these may be recent ones already chosen.
            older = await repository.posts_page(
                db,
                FeedFilter(safe_only=True),
                Order.POPULAR,
                now,
                after=None,
                offset=0,
                limit=2 * size,
            )
            chosen = {row.post.id for row in rows}
            rows += [row for row in older if row.post.id not in chosen]
        posts = [row.post for row in rows[:size]]
        return await self._views(db, posts, viewer_id)

    async def categories(self, db: AsyncSession) -> list[CategoryCount]:
        """Every category with its number of posts, `all` first."""
        counts = await repository.category_counts(db)
        listed = [
            CategoryCount(
                category, categories.display_name(category), counts.get(category, 0)
            )
            for category in categories.CATEGORIES
        ]
        total = sum(counts.values())
        return [CategoryCount(categories.ALL, "All", total), *listed]

    async def view_post(
        self, db: AsyncSession, post_id: str, viewer_id: str | None
    ) -> PostView:
        """A post, counting this as one more view of it."""
        post = await repository.count_post_view(
            db, _required_uuid(post_id, POST_NOT_FOUND)
        )
        if post is None:
            raise NotFound(POST_NOT_FOUND)
        return (await self._views(db, [post], viewer_id))[0]

    async def _views(
        self, db: AsyncSession, posts: list[CommunityPost], viewer_id: str | None
    ) -> list[PostView]:
        viewer = _uuid(viewer_id) if viewer_id else None
        liked = (
            await repository.liked_post_ids(db, viewer, [post.id for post in posts])
            if viewer
            else set()
        )
        return [PostView(post, post.id in liked) for post in posts]

    # Publishing

    async def publish(
        self,
        db: AsyncSession,
        user_id: str,
        publication: Publication,
        nickname: str,
    ) -> PostView:
        """Publish one of the caller's completed generations. `nickname` is
        kept on the post for when the author's current one is unknown."""
        user = uuid.UUID(user_id)
        generation = await repository.own_generation(
            db, user, _required_uuid(publication.generation_id, GENERATION_NOT_FOUND)
        )
        if generation is None:
            raise NotFound(GENERATION_NOT_FOUND)
        media_type = await self._media_type(db, generation)
        _require_completed(generation, "published")
        category = categories.choose(publication.category, generation.prompt)
        post = await repository.insert_post(
            db,
            uuid.uuid4(),
            {
                "generation_id": generation.id,
                "user_id": user,
                "nickname": nickname,
                "title": _title(publication.title),
                "category": category,
                "media_type": media_type,
                "image_url": generation.result_url,
                "thumbnail_url": generation.thumbnail_url,
                "prompt": generation.prompt,
                "model_name": generation.model_name,
                "is_nsfw": publication.is_nsfw,
            },
        )
        if post is None:
            raise Conflict("This generation is already published.")
        log.info(
            "community.published",
            post_id=str(post.id),
            generation_id=str(generation.id),
            category=category,
        )
        return PostView(post, liked=False)

    async def _media_type(self, db: AsyncSession, generation: Generation) -> str:
        if generation.type not in PUBLISHABLE_TYPES:
            raise InvalidArgument("Only images and videos can be published.")
        kind = generation.type
        if kind == "upscale" and generation.source_generation_id is not None:
            kind = (
                await repository.generation_type(db, generation.source_generation_id)
                or "image"
            )
        return "video" if kind == "video" else "image"

    async def unpublish(self, db: AsyncSession, user_id: str, post_id: str) -> None:
        deleted = await repository.delete_post(
            db, _required_uuid(post_id, POST_NOT_FOUND), uuid.UUID(user_id)
        )
        if not deleted:
            raise NotFound(POST_NOT_FOUND)
        log.info("community.unpublished", post_id=post_id)

    async def my_posts(
        self, db: AsyncSession, user_id: str, page_size: int, page_token: str
    ) -> tuple[list[PostView], str]:
        """The caller's posts, newest first, and the next page's token."""
        size = _page_size(page_size, DEFAULT_MY_POSTS_PAGE, MAX_FEED_PAGE)
        after = _token_position(_decode_token(page_token)) if page_token else None
        posts = await repository.user_posts_page(
            db, uuid.UUID(user_id), after, size + 1
        )
        more = len(posts) > size
        token = _position_token(RankedPost(posts[size - 1], 0.0), {}) if more else ""
        return await self._views(db, posts[:size], user_id), token

    # Likes

    async def toggle_like(
        self, db: AsyncSession, user_id: str, post_id: str
    ) -> LikeState:
        """Like the post, or take the caller's like back."""
        post = _required_uuid(post_id, POST_NOT_FOUND)
        user = uuid.UUID(user_id)
        if not await repository.lock_visible_post(db, post):
            raise NotFound(POST_NOT_FOUND)
        liked = not await repository.remove_like(db, post, user)
        if liked:
            await repository.add_like(db, post, user)
        count = await repository.change_like_count(db, post, 1 if liked else -1)
        return LikeState(liked, count)

    # Share links

    async def create_share(
        self, db: AsyncSession, user_id: str, request: ShareRequest
    ) -> Share:
        """A share link to one of the caller's completed generations: the
        live one it already has, or a new one."""
        now = datetime.now(UTC)
        expires_at = _expiry(request.expires_in_days, now)
        generation = await repository.own_generation(
            db,
            uuid.UUID(user_id),
            _required_uuid(request.generation_id, GENERATION_NOT_FOUND),
        )
        if generation is None:
            raise NotFound(GENERATION_NOT_FOUND)
        _require_completed(generation, "shared")
        await repository.lock_sharing_of(db, generation.id)
        existing = await repository.active_share(db, generation.id, now)
        if existing is not None:
            return existing
        share = await repository.insert_share(
            db,
            {
                "token": secrets.token_urlsafe(SHARE_TOKEN_BYTES),
                "generation_id": generation.id,
                "user_id": generation.user_id,
                "allow_download": request.allow_download,
                "expires_at": expires_at,
            },
        )
        log.info("community.share_created", generation_id=str(generation.id))
        return share

    async def revoke_share(self, db: AsyncSession, user_id: str, token: str) -> None:
        revoked = len(token) <= MAX_SHARE_TOKEN_LENGTH and (
            await repository.revoke_share(db, token, uuid.UUID(user_id))
        )
        if not revoked:
            raise NotFound("Share link not found.")
        log.info("community.share_revoked")

    async def open_shared(self, db: AsyncSession, share_id: str) -> SharedView:
        """What a share page shows, by share token or by the id of a
        generation made public, counting this as one more view."""
        by_token = await self._open_by_token(db, share_id)
        if by_token is not None:
            return by_token
        generation = await repository.completed_generation(
            db, _required_uuid(share_id, NOT_SHARED)
        )
        if generation is None:
            raise NotFound(NOT_SHARED)
        share = await repository.active_share(db, generation.id, datetime.now(UTC))
        if share is not None:
            views = await repository.count_share_view(db, share.token)
            return SharedView(
                generation, str(generation.user_id), share.allow_download, views
            )
        post = await repository.visible_post_of_generation(db, generation.id)
        if post is None:
            raise NotFound(NOT_SHARED)
        viewed = await repository.count_post_view(db, post.id)
        views = viewed.view_count if viewed is not None else post.view_count
        # A published generation's media is on the public gallery already.
        return SharedView(generation, str(generation.user_id), True, views)

    async def _open_by_token(self, db: AsyncSession, token: str) -> SharedView | None:
        if not token or len(token) > MAX_SHARE_TOKEN_LENGTH:
            return None
        found = await repository.shared_by_token(db, token)
        if found is None:
            return None
        share, generation = found
        if share.expires_at is not None and share.expires_at <= datetime.now(UTC):
            raise Expired("This share link has expired.")
        views = await repository.count_share_view(db, token)
        return SharedView(generation, str(share.user_id), share.allow_download, views)

    # Profile figures

    async def user_stats(
        self, db: AsyncSession, caller_id: str, user_id: str
    ) -> UserStats:
        """A user's own generation, post and like counts."""
        if user_id and user_id != caller_id:
            raise PermissionDenied("You can see only your own figures.")
        user = uuid.UUID(caller_id)
        published, likes = await repository.post_totals(db, user)
        return UserStats(
            generations=await repository.generation_count(db, user),
            published=published,
            likes_received=likes,
        )

    # Moderation (operators, through the admin service)

    async def moderation_page(
        self, db: AsyncSession, query: ModerationQuery
    ) -> tuple[list[PostView], str]:
        """Every post matching the query, NSFW ones included, newest first,
        and the next page's token."""
        size = _page_size(query.page_size, DEFAULT_MODERATION_PAGE, MAX_FEED_PAGE)
        after = (
            _token_position(_decode_token(query.page_token))
            if query.page_token
            else None
        )
        posts = await repository.posts_for_moderation(
            db, _moderation_filter(query), after, size + 1
        )
        more = len(posts) > size
        token = _position_token(RankedPost(posts[size - 1], 0.0), {}) if more else ""
        return [PostView(post, liked=False) for post in posts[:size]], token

    async def moderate(
        self, db: AsyncSession, post_id: str, reason: str, actor: str
    ) -> bool:
        """Take a post down; False when there is no such post (any more)."""
        post = _uuid(post_id)
        removed = post is not None and await repository.remove_post(db, post)
        log.info(
            "community.post_moderated",
            post_id=post_id,
            removed=removed,
            actor=actor,
            reason=reason[:MAX_REASON_LENGTH],
        )
        return removed


@dataclass(frozen=True)
class ModerationQuery:
    page_size: int = 0
    page_token: str = ""
    post_id: str = ""
    user_id: str = ""
    search: str = ""
    nsfw_only: bool = False


def _moderation_filter(query: ModerationQuery) -> repository.ModerationFilter:
    """The filters of a moderation listing; an id that cannot exist matches
    nothing rather than being refused."""
    search = query.search.strip()
    if len(search) > MAX_SEARCH_LENGTH:
        raise InvalidArgument.for_field(
            "search", f"search has at most {MAX_SEARCH_LENGTH} characters."
        )
    post_id = _uuid(query.post_id) if query.post_id else None
    user_id = _uuid(query.user_id) if query.user_id else None
    if (query.post_id and post_id is None) or (query.user_id and user_id is None):
        post_id = NOTHING
    return repository.ModerationFilter(
        post_id=post_id,
        user_id=user_id,
        search=search or None,
        nsfw_only=query.nsfw_only,
    )
