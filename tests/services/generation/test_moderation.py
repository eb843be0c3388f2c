"""CommunityService's moderation RPCs over real gRPC: the admin service
lists every post (NSFW ones and their authors included) and takes posts
down. Posts are published through the service from generations written
straight into the schema."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from omnihub.generation.v1 import community_pb2

from libs.config import Settings
from libs.errors import InvalidArgument
from services.generation.main import GenerationProcess
from tests.services.generation.factories import (
    CommunityApi,
    GenerationRows,
    failure,
    marker,
    new_user,
)


@pytest.fixture(scope="module")
async def api(
    settings: Settings, generation_service: GenerationProcess
) -> AsyncIterator[CommunityApi]:
    client = CommunityApi(settings)
    yield client
    await client.close()


@pytest.fixture(scope="module")
async def rows(
    settings: Settings, generation_service: GenerationProcess
) -> AsyncIterator[GenerationRows]:
    database = GenerationRows(settings)
    yield database
    await database.close()


async def published(
    api: CommunityApi,
    rows: GenerationRows,
    prompt: str,
    user_id: str | None = None,
    **fields: object,
) -> community_pb2.Post:
    user_id = user_id or new_user()
    generation_id = await rows.completed(user_id, prompt)
    return await api.publish(user_id, generation_id, **fields)


async def moderation_list(
    api: CommunityApi, **fields: object
) -> community_pb2.ListPostsForModerationResponse:
    reply: community_pb2.ListPostsForModerationResponse = (
        await api.stub.ListPostsForModeration(
            community_pb2.ListPostsForModerationRequest(**fields),  # type: ignore[arg-type]
            metadata=api.anonymous,
        )
    )
    return reply


async def moderate(
    api: CommunityApi, post_id: str, reason: str = "Spam"
) -> community_pb2.ModeratePostResponse:
    reply: community_pb2.ModeratePostResponse = await api.stub.ModeratePost(
        community_pb2.ModeratePostRequest(
            post_id=post_id, reason=reason, actor="admin:tests"
        ),
        metadata=api.anonymous,
    )
    return reply


class TestListPostsForModeration:
    async def test_nsfw_posts_are_listed_with_their_authors(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        word = marker()
        author = new_user()
        safe = await published(api, rows, f"{word} one", author)
        nsfw = await published(api, rows, f"{word} two", author, is_nsfw=True)

        reply = await moderation_list(api, search=word)
        public = await api.feed(search=word)

        assert [(p.id, p.user_id, p.is_nsfw) for p in reply.posts] == [
            (nsfw.id, author, True),
            (safe.id, author, False),
        ]
        assert {p.id for p in public.posts} == {safe.id, nsfw.id}

    async def test_filters_narrow_the_list(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        word = marker()
        author = new_user()
        mine = await published(api, rows, f"{word} a", author)
        await published(api, rows, f"{word} b")
        flagged = await published(api, rows, f"{word} c", author, is_nsfw=True)

        by_author = await moderation_list(api, search=word, user_id=author)
        only_nsfw = await moderation_list(api, search=word, nsfw_only=True)
        one = await moderation_list(api, post_id=mine.id)

        assert {p.id for p in by_author.posts} == {mine.id, flagged.id}
        assert [p.id for p in only_nsfw.posts] == [flagged.id]
        assert [p.id for p in one.posts] == [mine.id]

    async def test_an_id_that_cannot_exist_matches_nothing(
        self, api: CommunityApi
    ) -> None:
        reply = await moderation_list(api, post_id="not-a-uuid")

        assert list(reply.posts) == []

    async def test_pages_follow_each_other_without_overlap(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        word = marker()
        made = [await published(api, rows, f"{word} {n}") for n in range(5)]

        first = await moderation_list(api, search=word, page_size=2)
        second = await moderation_list(
            api, search=word, page_size=2, page_token=first.next_page_token
        )
        third = await moderation_list(
            api, search=word, page_size=2, page_token=second.next_page_token
        )

        listed = [p.id for page in (first, second, third) for p in page.posts]
        assert listed == [post.id for post in reversed(made)]
        assert third.next_page_token == ""

    async def test_a_negative_page_size_is_invalid(self, api: CommunityApi) -> None:
        code, error = await failure(moderation_list(api, page_size=-1))

        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert isinstance(error, InvalidArgument)


class TestModeratePost:
    async def test_a_moderated_post_is_gone_from_the_feed(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        word = marker()
        post = await published(api, rows, f"{word} offending")

        reply = await moderate(api, post.id)

        assert reply.removed is True
        assert list((await api.feed(search=word)).posts) == []
        assert list((await moderation_list(api, post_id=post.id)).posts) == []

    async def test_moderating_again_changes_nothing_and_says_so(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        post = await published(api, rows, f"{marker()} twice")
        await moderate(api, post.id)

        again = await moderate(api, post.id)
        nonsense = await moderate(api, "not-a-uuid")

        assert (again.removed, nonsense.removed) == (False, False)

    async def test_a_user_may_not_moderate(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        author = new_user()
        post = await published(api, rows, f"{marker()} mine", author)

        code, _ = await failure(
            api.stub.ModeratePost(
                community_pb2.ModeratePostRequest(post_id=post.id),
                metadata=api.user(author)[1:],
            )
        )

        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert (await api.post(post.id)).id == post.id
