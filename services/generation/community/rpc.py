"""gRPC servicer of CommunityService: translates messages, opens the
transaction, calls the service, and adds the authors' current nicknames
and avatars (looked up in auth after the transaction, never inside it).

The gallery, a post, the landing selection and shared generations are
public; a signed-in viewer additionally learns which posts they liked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
from omnihub.generation.v1 import community_pb2, community_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from libs.db import read_session_factory, session_factory
from libs.errors import FeatureDisabled
from libs.flags import COMMUNITY_GALLERY, FeatureFlags
from libs.grpc.identity import Access, current_caller
from libs.grpc.messages import timestamp
from libs.grpc.server import ServiceDefinition
from libs.runtime import Runtime
from services.generation.community.authors import Author, Authors
from services.generation.community.service import (
    CommunityService,
    FeedQuery,
    ModerationQuery,
    PostView,
    Publication,
    SharedView,
    ShareRequest,
)
from services.generation.models import Share

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]

ACCESS = {
    "ListPosts": Access.PUBLIC,
    "ListCategories": Access.PUBLIC,
    "GetPost": Access.PUBLIC,
    "PublishGeneration": Access.USER,
    "ToggleLike": Access.USER,
    "ListMyPosts": Access.USER,
    "DeletePost": Access.USER,
    "CreateShare": Access.USER,
    "RevokeShare": Access.USER,
    "GetSharedGeneration": Access.PUBLIC,
    "ListFeatured": Access.PUBLIC,
    "GetUserStats": Access.USER,
    "ListPostsForModeration": Access.SERVICE,
    "ModeratePost": Access.SERVICE,
}


def _viewer_id() -> str | None:
    """The signed-in user reading a public method, if any. A token that does
    not verify leaves the reader anonymous rather than refused."""
    user = current_caller().user
    return user.subject if user is not None else None


class CommunityServicer(community_pb2_grpc.CommunityServiceServicer):
    def __init__(
        self,
        service: CommunityService,
        authors: Authors,
        sessions: async_sessionmaker[AsyncSession],
        reads: async_sessionmaker[AsyncSession],
        flags: FeatureFlags,
    ) -> None:
        self._service = service
        self._authors = authors
        self._sessions = sessions
        # Autocommit sessions for reads that lock nothing.
        self._reads = reads
        self._flags = flags

    def _require_gallery(self) -> None:
        """The gallery (feed, posts, publishing, likes) is closed while the
        operators' community_gallery flag is off; a user's own posts, their
        deletion and share links stay open."""
        if not self._flags.enabled(COMMUNITY_GALLERY):
            raise FeatureDisabled("The community gallery is turned off right now.")

    async def _posts(self, views: list[PostView]) -> list[community_pb2.Post]:
        authors = await self._authors.of([str(view.post.user_id) for view in views])
        return [_post(view, authors.get(str(view.post.user_id))) for view in views]

    # The gallery

    async def ListPosts(
        self, request: community_pb2.ListPostsRequest, context: Context
    ) -> community_pb2.ListPostsResponse:
        self._require_gallery()
        query = FeedQuery(
            sort=request.sort,
            category=request.category,
            search=request.search,
            page_size=request.page_size,
            page=request.page,
            page_token=request.page_token,
        )
        async with self._reads() as db:
            page = await self._service.list_posts(db, query, _viewer_id())
        return community_pb2.ListPostsResponse(
            posts=await self._posts(page.posts),
            total=page.total,
            page=page.page,
            total_pages=page.total_pages,
            next_page_token=page.next_page_token,
        )

    async def ListCategories(
        self, request: community_pb2.ListCategoriesRequest, context: Context
    ) -> community_pb2.ListCategoriesResponse:
        self._require_gallery()
        async with self._reads() as db:
            counted = await self._service.categories(db)
        return community_pb2.ListCategoriesResponse(
            categories=[
                community_pb2.Category(id=c.id, name=c.name, count=c.count)
                for c in counted
            ]
        )

    async def GetPost(
        self, request: community_pb2.GetPostRequest, context: Context
    ) -> community_pb2.GetPostResponse:
        self._require_gallery()
        async with self._sessions.begin() as db:
            view = await self._service.view_post(db, request.id, _viewer_id())
        (post,) = await self._posts([view])
        return community_pb2.GetPostResponse(post=post)

    async def ListFeatured(
        self, request: community_pb2.ListFeaturedRequest, context: Context
    ) -> community_pb2.ListFeaturedResponse:
        self._require_gallery()
        async with self._reads() as db:
            views = await self._service.featured(db, request.page_size, _viewer_id())
        posts = await self._posts(views)
        return community_pb2.ListFeaturedResponse(
            posts=posts, total=len(posts), page=1, total_pages=1
        )

    # The caller's posts

    async def PublishGeneration(
        self, request: community_pb2.PublishGenerationRequest, context: Context
    ) -> community_pb2.PublishGenerationResponse:
        self._require_gallery()
        user_id = current_caller().user_id
        author = await self._authors.one(user_id)
        publication = Publication(
            generation_id=request.generation_id,
            title=request.title,
            category=request.category,
            is_nsfw=request.is_nsfw,
        )
        async with self._sessions.begin() as db:
            view = await self._service.publish(
                db, user_id, publication, author.nickname
            )
        return community_pb2.PublishGenerationResponse(post=_post(view, author))

    async def ToggleLike(
        self, request: community_pb2.ToggleLikeRequest, context: Context
    ) -> community_pb2.ToggleLikeResponse:
        self._require_gallery()
        async with self._sessions.begin() as db:
            state = await self._service.toggle_like(
                db, current_caller().user_id, request.post_id
            )
        return community_pb2.ToggleLikeResponse(
            liked=state.liked, like_count=state.like_count
        )

    async def ListMyPosts(
        self, request: community_pb2.ListMyPostsRequest, context: Context
    ) -> community_pb2.ListMyPostsResponse:
        async with self._reads() as db:
            views, token = await self._service.my_posts(
                db, current_caller().user_id, request.page_size, request.page_token
            )
        return community_pb2.ListMyPostsResponse(
            posts=await self._posts(views),
            total=len(views),
            page=1,
            total_pages=1,
            next_page_token=token,
        )

    async def DeletePost(
        self, request: community_pb2.DeletePostRequest, context: Context
    ) -> community_pb2.DeletePostResponse:
        async with self._sessions.begin() as db:
            await self._service.unpublish(db, current_caller().user_id, request.id)
        return community_pb2.DeletePostResponse()

    # Share links

    async def CreateShare(
        self, request: community_pb2.CreateShareRequest, context: Context
    ) -> community_pb2.CreateShareResponse:
        share_request = ShareRequest(
            generation_id=request.generation_id,
            allow_download=request.allow_download,
            expires_in_days=request.expires_in_days,
        )
        async with self._sessions.begin() as db:
            share = await self._service.create_share(
                db, current_caller().user_id, share_request
            )
        return community_pb2.CreateShareResponse(share=_share(share))

    async def RevokeShare(
        self, request: community_pb2.RevokeShareRequest, context: Context
    ) -> community_pb2.RevokeShareResponse:
        async with self._sessions.begin() as db:
            await self._service.revoke_share(
                db, current_caller().user_id, request.token
            )
        return community_pb2.RevokeShareResponse()

    async def GetSharedGeneration(
        self, request: community_pb2.GetSharedGenerationRequest, context: Context
    ) -> community_pb2.GetSharedGenerationResponse:
        async with self._sessions.begin() as db:
            shared = await self._service.open_shared(db, request.id)
        author = await self._authors.one(shared.owner_id)
        return community_pb2.GetSharedGenerationResponse(
            generation=_shared(shared, author)
        )

    # Profile figures

    async def GetUserStats(
        self, request: community_pb2.GetUserStatsRequest, context: Context
    ) -> community_pb2.GetUserStatsResponse:
        async with self._reads() as db:
            stats = await self._service.user_stats(
                db, current_caller().user_id, request.user_id
            )
        return community_pb2.GetUserStatsResponse(
            generations=stats.generations,
            published=stats.published,
            likes_received=stats.likes_received,
        )

    # Moderation (the admin service, for operators)

    async def ListPostsForModeration(
        self, request: community_pb2.ListPostsForModerationRequest, context: Context
    ) -> community_pb2.ListPostsForModerationResponse:
        query = ModerationQuery(
            page_size=request.page_size,
            page_token=request.page_token,
            post_id=request.post_id,
            user_id=request.user_id,
            search=request.search,
            nsfw_only=request.nsfw_only,
        )
        async with self._reads() as db:
            views, token = await self._service.moderation_page(db, query)
        return community_pb2.ListPostsForModerationResponse(
            posts=await self._posts(views), next_page_token=token
        )

    async def ModeratePost(
        self, request: community_pb2.ModeratePostRequest, context: Context
    ) -> community_pb2.ModeratePostResponse:
        async with self._sessions.begin() as db:
            removed = await self._service.moderate(
                db, request.post_id, request.reason, request.actor
            )
        return community_pb2.ModeratePostResponse(removed=removed)


def definition(servicer: CommunityServicer) -> ServiceDefinition:
    return ServiceDefinition(
        full_name=community_pb2.DESCRIPTOR.services_by_name[
            "CommunityService"
        ].full_name,
        servicer=servicer,
        register=community_pb2_grpc.add_CommunityServiceServicer_to_server,
        access=ACCESS,
    )


def build(
    runtime: Runtime, engine: AsyncEngine, flags: FeatureFlags
) -> ServiceDefinition:
    """CommunityService as the generation process serves it."""
    servicer = CommunityServicer(
        CommunityService(),
        Authors(runtime.auth_stub(), runtime.upstreams),
        session_factory(engine),
        read_session_factory(engine),
        flags,
    )
    return definition(servicer)


def _post(view: PostView, author: Author | None) -> community_pb2.Post:
    """`author` None: auth could not say; show the nickname kept at publish."""
    post = view.post
    return community_pb2.Post(
        id=str(post.id),
        generation_id=str(post.generation_id),
        user_id=str(post.user_id),
        nickname=author.nickname if author else post.nickname,
        avatar_url=author.avatar_url if author else "",
        title=post.title,
        category=post.category,
        image_url=post.image_url,
        thumbnail_url=post.thumbnail_url or "",
        prompt=post.prompt,
        model_name=post.model_name,
        media_type=post.media_type,
        like_count=post.like_count,
        view_count=post.view_count,
        is_nsfw=post.is_nsfw,
        is_liked=view.liked,
        published_at=timestamp(post.published_at),
    )


def _share(share: Share) -> community_pb2.Share:
    message = community_pb2.Share(
        token=share.token,
        generation_id=str(share.generation_id),
        allow_download=share.allow_download,
        view_count=share.view_count,
        created_at=timestamp(share.created_at),
    )
    if share.expires_at is not None:
        message.expires_at.CopyFrom(timestamp(share.expires_at))
    return message


def _shared(shared: SharedView, author: Author) -> community_pb2.SharedGeneration:
    generation = shared.generation
    message = community_pb2.SharedGeneration(
        id=str(generation.id),
        type=generation.type,
        result_url=generation.result_url or "",
        thumbnail_url=generation.thumbnail_url or "",
        prompt=generation.prompt,
        model_name=generation.model_name,
        nickname=author.nickname,
        allow_download=shared.allow_download,
        view_count=shared.view_count,
        created_at=timestamp(generation.started_at),
    )
    if generation.completed_at is not None:
        message.completed_at.CopyFrom(timestamp(generation.completed_at))
    return message
