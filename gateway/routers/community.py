"""/api/community, /api/share and /api/landing/featured: the public gallery,
share links and the landing page's selection, served by the generation
service's CommunityService.

Public routes read an optional bearer token only to say which posts the
reader likes; a token that does not verify makes them anonymous, never 401.
The literal paths (/categories, /user/me, /publish) come before /{post_id}.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Query, Request, Response, status
from omnihub.generation.v1 import community_pb2, community_pb2_grpc

from gateway.deps import UserDep, get_settings
from gateway.errors import ErrorBody
from gateway.schemas.community import (
    CategoryOut,
    DoneOut,
    FeaturedOut,
    FeedOut,
    LikeOut,
    PostOut,
    PublishBody,
    PublishedOut,
    ShareBody,
    SharedGenerationOut,
    ShareOut,
)
from gateway.schemas.generations import INT32_MAX, moment, optional_moment
from gateway.upstream import Upstream
from libs.config import Settings
from libs.errors import DomainError, FieldViolation, InvalidArgument
from libs.tokens import Audience

router = APIRouter(tags=["community"])

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 24
DEFAULT_FEATURED = 8
NEXT_CURSOR_HEADER = "X-Next-Cursor"
# The service names paging fields as its RPCs do; the query string does not.
_REST_FIELDS = {
    "page_token": "cursor",
    "page_size": "limit",
    "expires_in_days": "expiresInDays",
}

ReplyT = TypeVar("ReplyT")


class CommunityClient:
    """The CommunityService stub, made once per gateway."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.stub = community_pb2_grpc.CommunityServiceStub(
            upstream.runtime.upstreams.channel("generation")
        )


async def get_community(request: Request) -> CommunityClient:
    state = request.app.state
    client: CommunityClient | None = getattr(state, "community", None)
    if client is None:
        client = state.community = CommunityClient(state.upstream)
    return client


async def optional_viewer(request: Request) -> str | None:
    """The Authorization header to forward when it names a signed-in user;
    None for anyone else, including holders of a bad or expired token."""
    header = request.headers.get("authorization")
    if not header:
        return None
    upstream: Upstream = request.app.state.upstream
    try:
        claims = upstream.runtime.verifier.verify_bearer(header)
    except DomainError:
        return None
    return header if claims.audience is Audience.USER else None


CommunityDep = Annotated[CommunityClient, Depends(get_community)]
ViewerDep = Annotated[str | None, Depends(optional_viewer)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


async def _named_as_in_rest(call: Awaitable[ReplyT]) -> ReplyT:
    """Name refused fields as the query string does (`cursor`, `limit`)."""
    try:
        return await call
    except InvalidArgument as error:
        violations = tuple(
            FieldViolation(_REST_FIELDS.get(v.field, v.field), v.message)
            for v in error.violations
        )
        raise InvalidArgument(error.message, violations=violations) from None


def _post(post: community_pb2.Post) -> PostOut:
    return PostOut(
        id=post.id,
        generation_id=post.generation_id,
        nickname=post.nickname,
        avatar_url=post.avatar_url or None,
        title=post.title,
        category=post.category,
        image_url=post.image_url,
        thumbnail_url=post.thumbnail_url or None,
        prompt=post.prompt,
        model_name=post.model_name,
        media_type=post.media_type,
        like_count=post.like_count,
        view_count=post.view_count,
        is_nsfw=post.is_nsfw,
        is_liked=post.is_liked,
        published_at=moment(post.published_at),
    )


def _no_store(response: Response) -> None:
    response.headers["Cache-Control"] = "no-store"


# The gallery


@router.get("/api/community")
async def list_posts(
    community: CommunityDep,
    viewer: ViewerDep,
    sort: Annotated[
        str, Query(max_length=16, description="latest, popular or trending")
    ] = "latest",
    category: Annotated[str | None, Query(max_length=32)] = None,
    search: Annotated[
        str | None,
        Query(max_length=200, description="Words in the title or prompt"),
    ] = None,
    page: Annotated[int, Query(ge=1, le=INT32_MAX)] = 1,
    limit: Annotated[
        int, Query(description="Posts per page; held to 1..100")
    ] = DEFAULT_PAGE_SIZE,
    cursor: Annotated[
        str | None,
        Query(max_length=1024, description="nextCursor of the previous page"),
    ] = None,
) -> FeedOut:
    """The public feed. Page by `page` or, steadier while posts arrive, by
    `cursor`."""
    reply = await _named_as_in_rest(
        community.upstream.call(
            community.stub.ListPosts,
            community_pb2.ListPostsRequest(
                sort=sort,
                category=category or "",
                search=search or "",
                page_size=max(1, min(limit, MAX_PAGE_SIZE)),
                page=page,
                page_token=cursor or "",
            ),
            viewer,
        )
    )
    return FeedOut(
        posts=[_post(post) for post in reply.posts],
        total=reply.total,
        page=reply.page,
        total_pages=reply.total_pages,
        next_cursor=reply.next_page_token or None,
    )


@router.get("/api/community/categories")
async def list_categories(community: CommunityDep) -> list[CategoryOut]:
    """Every category with its number of posts; `all` first."""
    reply = await community.upstream.call(
        community.stub.ListCategories, community_pb2.ListCategoriesRequest()
    )
    return [
        CategoryOut(id=category.id, name=category.name, count=category.count)
        for category in reply.categories
    ]


@router.get("/api/community/user/me")
async def list_my_posts(
    user: UserDep,
    community: CommunityDep,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = MAX_PAGE_SIZE,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> list[PostOut]:
    """The caller's posts, newest first; the next page's cursor is in the
    X-Next-Cursor header."""
    reply = await _named_as_in_rest(
        community.upstream.call(
            community.stub.ListMyPosts,
            community_pb2.ListMyPostsRequest(page_size=limit, page_token=cursor or ""),
            user.authorization,
        )
    )
    _no_store(response)
    if reply.next_page_token:
        response.headers[NEXT_CURSOR_HEADER] = reply.next_page_token
    return [_post(post) for post in reply.posts]


@router.post("/api/community/publish", status_code=status.HTTP_201_CREATED)
async def publish(
    body: PublishBody, user: UserDep, community: CommunityDep
) -> PublishedOut:
    """Publish one of the caller's completed images or videos. 404 for a
    generation that is not theirs, 409 when it is not finished or is
    already published."""
    reply = await community.upstream.call(
        community.stub.PublishGeneration,
        community_pb2.PublishGenerationRequest(
            generation_id=body.generation_id,
            title=body.title or "",
            category=body.category or "",
            is_nsfw=body.is_nsfw,
        ),
        user.authorization,
    )
    return PublishedOut(**_post(reply.post).model_dump())


@router.get("/api/community/{post_id}")
async def get_post(
    post_id: str, community: CommunityDep, viewer: ViewerDep, response: Response
) -> PostOut:
    """One post; each request counts as a view."""
    reply = await community.upstream.call(
        community.stub.GetPost, community_pb2.GetPostRequest(id=post_id), viewer
    )
    _no_store(response)
    return _post(reply.post)


@router.post("/api/community/{post_id}/like")
async def toggle_like(post_id: str, user: UserDep, community: CommunityDep) -> LikeOut:
    """Like the post, or take the like back when the caller already likes it."""
    reply = await community.upstream.call(
        community.stub.ToggleLike,
        community_pb2.ToggleLikeRequest(post_id=post_id),
        user.authorization,
    )
    return LikeOut(liked=reply.liked, like_count=reply.like_count)


@router.delete("/api/community/{post_id}")
async def unpublish(post_id: str, user: UserDep, community: CommunityDep) -> DoneOut:
    """Remove the caller's own post (its likes go with it); 404 otherwise."""
    await community.upstream.call(
        community.stub.DeletePost,
        community_pb2.DeletePostRequest(id=post_id),
        user.authorization,
    )
    return DoneOut()


# Share links


@router.post("/api/share", status_code=status.HTTP_201_CREATED)
async def create_share(
    body: ShareBody, user: UserDep, community: CommunityDep, settings: SettingsDep
) -> ShareOut:
    """A public link to one of the caller's completed generations; the live
    link it already has, if any."""
    reply = await community.upstream.call(
        community.stub.CreateShare,
        community_pb2.CreateShareRequest(
            generation_id=body.generation_id,
            allow_download=body.allow_download,
            expires_in_days=body.expires_in_days or 0,
        ),
        user.authorization,
    )
    share = reply.share
    return ShareOut(
        share_token=share.token,
        share_url=f"{settings.frontend_url.rstrip('/')}/share/{share.token}",
        generation_id=share.generation_id,
        allow_download=share.allow_download,
        view_count=share.view_count,
        created_at=moment(share.created_at),
        expires_at=optional_moment(share.expires_at, share.HasField("expires_at")),
    )


@router.delete("/api/share/{token}")
async def revoke_share(token: str, user: UserDep, community: CommunityDep) -> DoneOut:
    """Revoke one of the caller's share links; 404 for anyone else's."""
    await community.upstream.call(
        community.stub.RevokeShare,
        community_pb2.RevokeShareRequest(token=token),
        user.authorization,
    )
    return DoneOut()


@router.get("/api/share/{share_id}", responses={410: {"model": ErrorBody}})
async def get_shared_generation(
    share_id: str, community: CommunityDep, response: Response
) -> SharedGenerationOut:
    """A shared generation, by share token or by the id of a generation its
    owner made public (a share link or a community post). 404 when it is
    not public, 410 when the link has expired; each request counts a view."""
    reply = await community.upstream.call(
        community.stub.GetSharedGeneration,
        community_pb2.GetSharedGenerationRequest(id=share_id),
    )
    shared = reply.generation
    _no_store(response)
    return SharedGenerationOut(
        id=shared.id,
        type=shared.type,
        result=shared.result_url,
        thumbnail_url=shared.thumbnail_url or None,
        prompt=shared.prompt,
        model_name=shared.model_name,
        completed_at=optional_moment(
            shared.completed_at, shared.HasField("completed_at")
        ),
        created_at=moment(shared.created_at),
        nickname=shared.nickname,
        user_name=shared.nickname,
        allow_download=shared.allow_download,
        view_count=shared.view_count,
    )


# The landing page


@router.get("/api/landing/featured")
async def list_featured(
    community: CommunityDep,
    limit: Annotated[int, Query(ge=1, le=24)] = DEFAULT_FEATURED,
) -> list[FeaturedOut]:
    """Popular recent community posts (none marked NSFW), for the landing
    page; each links to its public page."""
    reply = await community.upstream.call(
        community.stub.ListFeatured, community_pb2.ListFeaturedRequest(page_size=limit)
    )
    return [
        FeaturedOut(
            id=post.id,
            title=post.title,
            description=post.prompt,
            media_url=post.image_url,
            thumbnail_url=post.thumbnail_url or None,
            media_type=post.media_type,
            link_url=f"/share/{post.generation_id}",
            nickname=post.nickname,
            like_count=post.like_count,
        )
        for post in reply.posts
    ]
