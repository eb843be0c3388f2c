"""CommunityService over real gRPC: the generation process (which serves it)
on loopback with auth behind it and PostgreSQL under it.

Generations are written straight into the generation schema as the worker
would leave them (tests/services/generation/factories.py); publishing,
liking, listing and sharing go through the service. Every feed test
searches for a word only its own prompts contain, so tests share the
session's gallery without seeing each other's posts.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from omnihub.auth.v1 import auth_pb2, auth_pb2_grpc
from omnihub.generation.v1 import community_pb2

from libs.config import Settings
from libs.errors import Conflict, Expired, FailedPrecondition, NotFound
from libs.grpc.client import Upstreams
from libs.tokens import InternalTokenSource, TokenSigner
from services.generation.community.authors import (
    ANONYMOUS,
    REMEMBER_SECONDS,
    Authors,
)
from services.generation.main import GenerationProcess
from tests.services.generation.factories import (
    CommunityApi,
    GenerationRow,
    GenerationRows,
    failure,
    marker,
    new_user,
)
from tests.suite import free_port


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
    user_id: str | None = None,
    prompt: str = "a lighthouse",
    **fields: object,
) -> community_pb2.Post:
    user_id = user_id or new_user()
    generation_id = await rows.completed(user_id, prompt)
    return await api.publish(user_id, generation_id, **fields)


async def like_by_many(api: CommunityApi, post_id: str, people: int) -> None:
    for _ in range(people):
        await api.like(new_user(), post_id)


def ids(posts: object) -> list[str]:
    return [post.id for post in posts]  # type: ignore[attr-defined]


class TestPublishGeneration:
    async def test_post_copies_media_prompt_and_model_from_the_generation(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        author = await api.registered_user()
        row = GenerationRow(author.id, prompt="a kawaii fox", model_name="FLUX Pro")
        await rows.add(row)

        post = await api.publish(author.id, row.id, title="  Fox  ", is_nsfw=True)

        assert post.generation_id == row.id
        assert (post.image_url, post.thumbnail_url) == (
            row.result_url,
            row.thumbnail_url,
        )
        assert (post.prompt, post.model_name) == ("a kawaii fox", "FLUX Pro")
        assert (post.title, post.media_type, post.is_nsfw) == ("Fox", "image", True)
        assert post.nickname == author.nickname
        assert post.user_id == author.id
        assert (post.like_count, post.view_count, post.is_liked) == (0, 0, False)

    async def test_someone_elses_generation_is_not_found(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        generation_id = await rows.completed(new_user())

        code, error = await failure(api.publish(new_user(), generation_id))

        assert code is grpc.StatusCode.NOT_FOUND
        assert isinstance(error, NotFound)
        assert await rows.post_rows(generation_id) == 0

    @pytest.mark.parametrize("generation_id", ["not-a-uuid", str(uuid.uuid4())])
    async def test_unknown_generation_is_not_found(
        self, api: CommunityApi, generation_id: str
    ) -> None:
        code, _ = await failure(api.publish(new_user(), generation_id))

        assert code is grpc.StatusCode.NOT_FOUND

    @pytest.mark.parametrize("status", ["pending", "processing", "failed"])
    async def test_unfinished_generation_is_refused_saying_why(
        self, api: CommunityApi, rows: GenerationRows, status: str
    ) -> None:
        user = new_user()
        generation_id = await rows.add(GenerationRow(user, status=status))

        code, error = await failure(api.publish(user, generation_id))

        assert code is grpc.StatusCode.FAILED_PRECONDITION
        assert isinstance(error, FailedPrecondition)
        assert status in error.message
        assert "completed" in error.message

    async def test_deleted_generation_is_not_found(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        user = new_user()
        generation_id = await rows.completed(user)
        await rows.soft_delete(generation_id)

        code, _ = await failure(api.publish(user, generation_id))

        assert code is grpc.StatusCode.NOT_FOUND

    async def test_publishing_twice_is_a_conflict(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        user = new_user()
        generation_id = await rows.completed(user)
        await api.publish(user, generation_id)

        code, error = await failure(api.publish(user, generation_id))

        assert code is grpc.StatusCode.ALREADY_EXISTS
        assert isinstance(error, Conflict)

    async def test_simultaneous_publishes_make_one_post(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        user = new_user()
        generation_id = await rows.completed(user)

        results = await asyncio.gather(
            *(api.publish(user, generation_id) for _ in range(5)),
            return_exceptions=True,
        )

        posts = [r for r in results if isinstance(r, community_pb2.Post)]
        refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert len(posts) == 1
        assert [r.code() for r in refused] == [grpc.StatusCode.ALREADY_EXISTS] * 4
        assert await rows.post_rows(generation_id) == 1

    @pytest.mark.parametrize(
        ("requested", "prompt", "category"),
        [
            ("food", "a cyberpunk city", "food"),
            ("", "a cyberpunk city at night", "scifi"),
            ("photography", "studio ghibli forest", "anime"),
            ("all", "a plate of delicious pasta", "food"),
            ("", "three stones", "other"),
        ],
    )
    async def test_known_category_is_kept_otherwise_the_prompt_decides(
        self,
        api: CommunityApi,
        rows: GenerationRows,
        requested: str,
        prompt: str,
        category: str,
    ) -> None:
        post = await published(api, rows, prompt=prompt, category=requested)

        assert post.category == category

    async def test_video_and_upscaled_video_are_published_as_video(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        user = new_user()
        video = await rows.add(GenerationRow(user, type="video"))
        upscale = await rows.add(
            GenerationRow(user, type="upscale", source_generation_id=video)
        )
        image = await rows.add(GenerationRow(user))
        image_upscale = await rows.add(
            GenerationRow(user, type="upscale", source_generation_id=image)
        )

        kinds = [
            (await api.publish(user, generation_id)).media_type
            for generation_id in (video, upscale, image_upscale)
        ]

        assert kinds == ["video", "video", "image"]

    async def test_overlong_title_is_invalid(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        user = new_user()
        generation_id = await rows.completed(user)

        code, _ = await failure(api.publish(user, generation_id, title="x" * 201))

        assert code is grpc.StatusCode.INVALID_ARGUMENT

    async def test_anonymous_caller_is_unauthenticated(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        generation_id = await rows.completed(new_user())

        code, _ = await failure(
            api.stub.PublishGeneration(
                community_pb2.PublishGenerationRequest(generation_id=generation_id),
                metadata=api.anonymous,
            )
        )

        assert code is grpc.StatusCode.UNAUTHENTICATED


class TestToggleLike:
    async def test_like_then_take_it_back(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        post = await published(api, rows)
        fan = new_user()

        first = await api.like(fan, post.id)
        second = await api.like(fan, post.id)

        assert (first.liked, first.like_count) == (True, 1)
        assert (second.liked, second.like_count) == (False, 0)
        assert await rows.like_rows(post.id) == 0

    async def test_twenty_people_liking_at_once_make_twenty_likes(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        post = await published(api, rows)

        replies = await asyncio.gather(
            *(api.like(new_user(), post.id) for _ in range(20))
        )

        assert all(reply.liked for reply in replies)
        assert sorted(reply.like_count for reply in replies) == list(range(1, 21))
        assert (await api.post(post.id)).like_count == 20
        assert await rows.like_rows(post.id) == 20

    async def test_one_person_clicking_twice_at_once_leaves_it_unliked(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        post = await published(api, rows)
        fan = new_user()

        replies = await asyncio.gather(api.like(fan, post.id), api.like(fan, post.id))

        assert sorted(reply.liked for reply in replies) == [False, True]
        assert (await api.post(post.id)).like_count == 0
        assert await rows.like_rows(post.id) == 0

    async def test_many_people_clicking_many_times_keep_count_and_rows_equal(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        post = await published(api, rows)
        fans = [new_user() for _ in range(5)]
        clicks = [fan for fan in fans for _ in range(3)]

        await asyncio.gather(*(api.like(fan, post.id) for fan in clicks))

        # Three clicks each: every fan ends up liking it.
        assert (await api.post(post.id)).like_count == 5
        assert await rows.like_rows(post.id) == 5

    @pytest.mark.parametrize("post_id", ["nope", str(uuid.uuid4())])
    async def test_unknown_post_is_not_found(
        self, api: CommunityApi, post_id: str
    ) -> None:
        code, _ = await failure(api.like(new_user(), post_id))

        assert code is grpc.StatusCode.NOT_FOUND

    async def test_post_of_a_deleted_generation_is_not_found(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        post = await published(api, rows)
        await rows.soft_delete(post.generation_id)

        code, _ = await failure(api.like(new_user(), post.id))

        assert code is grpc.StatusCode.NOT_FOUND


class TestListPosts:
    async def _three_posts(
        self, api: CommunityApi, rows: GenerationRows, word: str
    ) -> tuple[str, str, str]:
        """yesterday: 3 likes; today: 1 like; a month ago: 4 likes."""
        yesterday = await published(api, rows, prompt=f"{word} yesterday")
        today = await published(api, rows, prompt=f"{word} today")
        month = await published(api, rows, prompt=f"{word} month")
        await rows.publish_time(yesterday.id, timedelta(days=1))
        await rows.publish_time(month.id, timedelta(days=30))
        await like_by_many(api, yesterday.id, 3)
        await like_by_many(api, today.id, 1)
        await like_by_many(api, month.id, 4)
        return yesterday.id, today.id, month.id

    @pytest.mark.parametrize(
        ("sort", "expected"),
        [
            ("latest", ["today", "yesterday", "month"]),
            ("", ["today", "yesterday", "month"]),
            ("popular", ["month", "yesterday", "today"]),
            # 3/(1+1) = 1.5 > 1/(0+1) = 1 > 4/(30+1)
            ("trending", ["yesterday", "today", "month"]),
        ],
    )
    async def test_sorts(
        self,
        api: CommunityApi,
        rows: GenerationRows,
        sort: str,
        expected: list[str],
    ) -> None:
        word = marker()
        yesterday, today, month = await self._three_posts(api, rows, word)
        named = {"yesterday": yesterday, "today": today, "month": month}

        reply = await api.feed(sort=sort, search=word)

        assert ids(reply.posts) == [named[name] for name in expected]
        assert (reply.total, reply.page, reply.total_pages) == (3, 1, 1)

    async def test_unknown_sort_is_invalid(self, api: CommunityApi) -> None:
        code, _ = await failure(api.feed(sort="random"))

        assert code is grpc.StatusCode.INVALID_ARGUMENT

    async def test_category_filter(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        word = marker()
        food = await published(api, rows, prompt=f"{word} pasta", category="food")
        await published(api, rows, prompt=f"{word} robot", category="scifi")

        only_food = await api.feed(search=word, category="food")
        everything = await api.feed(search=word, category="all")

        assert ids(only_food.posts) == [food.id]
        assert only_food.total == 1
        assert everything.total == 2

    async def test_search_matches_title_or_prompt_in_any_case(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        word = marker()
        by_prompt = await published(api, rows, prompt=f"a {word.upper()} owl")
        by_title = await published(api, rows, title=f"my {word}")
        await published(api, rows, prompt="an unrelated owl")

        reply = await api.feed(search=word)

        assert set(ids(reply.posts)) == {by_prompt.id, by_title.id}

    async def test_search_wildcards_are_literal(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        word = marker()
        literal = await published(api, rows, prompt=f"{word} 100% sure")
        await published(api, rows, prompt=f"{word} 1000 sure")

        reply = await api.feed(search=f"{word} 100%")

        assert ids(reply.posts) == [literal.id]

    @pytest.mark.parametrize("sort", ["latest", "popular", "trending"])
    async def test_cursor_pages_hold_every_post_once(
        self, api: CommunityApi, rows: GenerationRows, sort: str
    ) -> None:
        word = marker()
        posts = [await published(api, rows, prompt=f"{word} {n}") for n in range(7)]
        for n, post in enumerate(posts):
            await like_by_many(api, post.id, n % 3)

        seen: list[str] = []
        pages = 0
        token = ""
        while True:
            reply = await api.feed(
                sort=sort, search=word, page_size=3, page_token=token
            )
            pages += 1
            seen.extend(ids(reply.posts))
            assert reply.page == pages
            assert (reply.total, reply.total_pages) == (7, 3)
            token = reply.next_page_token
            if not token:
                break

        assert pages == 3
        assert sorted(seen) == sorted(post.id for post in posts)
        whole = await api.feed(sort=sort, search=word, page_size=7)
        assert seen == ids(whole.posts)

    async def test_page_numbers_skip_whole_pages(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        word = marker()
        for n in range(5):
            await published(api, rows, prompt=f"{word} {n}")

        whole = await api.feed(search=word, page_size=5)
        second = await api.feed(search=word, page_size=2, page=2)
        last = await api.feed(search=word, page_size=2, page=3)

        assert ids(second.posts) == ids(whole.posts)[2:4]
        assert ids(last.posts) == ids(whole.posts)[4:]
        assert (second.page, second.total_pages) == (2, 3)
        assert last.next_page_token == ""

    async def test_a_token_of_another_listing_is_refused(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        word = marker()
        for n in range(3):
            await published(api, rows, prompt=f"{word} {n}")
        first = await api.feed(search=word, page_size=1)

        other_sort, _ = await failure(
            api.feed(search=word, sort="popular", page_token=first.next_page_token)
        )
        garbage, _ = await failure(api.feed(page_token="not a token"))

        assert other_sort is grpc.StatusCode.INVALID_ARGUMENT
        assert garbage is grpc.StatusCode.INVALID_ARGUMENT

    async def test_viewer_learns_what_they_like(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        word = marker()
        liked = await published(api, rows, prompt=f"{word} liked")
        await published(api, rows, prompt=f"{word} not liked")
        fan = new_user()
        await api.like(fan, liked.id)

        as_fan = await api.feed(viewer=fan, search=word)
        as_anyone = await api.feed(search=word)

        assert {p.id: p.is_liked for p in as_fan.posts}[liked.id] is True
        assert sum(p.is_liked for p in as_fan.posts) == 1
        assert not any(p.is_liked for p in as_anyone.posts)

    async def test_a_bad_token_reads_as_anonymous(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        word = marker()
        await published(api, rows, prompt=word)

        reply = await api.stub.ListPosts(
            community_pb2.ListPostsRequest(search=word),
            metadata=(*api.anonymous, ("authorization", "Bearer forged")),
        )

        assert len(reply.posts) == 1
        assert reply.posts[0].is_liked is False

    async def test_posts_of_deleted_generations_are_not_listed(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        word = marker()
        kept = await published(api, rows, prompt=f"{word} kept")
        marked = await published(api, rows, prompt=f"{word} marked")
        removed = await published(api, rows, prompt=f"{word} removed")

        await rows.soft_delete(marked.generation_id)
        await rows.remove(removed.generation_id)
        reply = await api.feed(search=word)

        assert ids(reply.posts) == [kept.id]
        assert reply.total == 1
        assert await rows.post_rows(removed.generation_id) == 0

    async def test_authors_show_their_current_nickname(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        word = marker()
        author = await api.registered_user()
        await published(api, rows, author.id, prompt=word)
        await published(api, rows, prompt=word)

        reply = await api.feed(search=word)

        nicknames = {post.user_id: post.nickname for post in reply.posts}
        assert nicknames[author.id] == author.nickname
        assert sorted(nicknames.values()) == sorted([author.nickname, "Anonymous"])


class TestListCategories:
    async def test_every_category_with_its_count_all_first(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        before = {
            c.id: c.count
            for c in (
                await api.stub.ListCategories(
                    community_pb2.ListCategoriesRequest(), metadata=api.anonymous
                )
            ).categories
        }
        for category in ("anime", "anime", "food"):
            await published(api, rows, category=category)
        gone = await published(api, rows, category="food")
        await rows.soft_delete(gone.generation_id)

        reply = await api.stub.ListCategories(
            community_pb2.ListCategoriesRequest(), metadata=api.anonymous
        )

        listed = [(c.id, c.name) for c in reply.categories]
        assert listed[0] == ("all", "All")
        assert [c for c, _ in listed[1:]] == [
            "anime",
            "realistic",
            "game",
            "abstract",
            "nature",
            "scifi",
            "art",
            "portrait",
            "architecture",
            "food",
            "other",
        ]
        counts = {c.id: c.count for c in reply.categories}
        assert counts["anime"] - before["anime"] == 2
        assert counts["food"] - before["food"] == 1
        assert counts["all"] - before["all"] == 3
        assert counts["all"] == sum(n for c, n in counts.items() if c != "all")


class TestGetPost:
    async def test_each_read_counts_a_view(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        post = await published(api, rows)

        first = await api.post(post.id)
        second = await api.post(post.id)

        assert (first.view_count, second.view_count) == (1, 2)

    async def test_viewer_sees_their_like(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        post = await published(api, rows)
        fan = new_user()
        await api.like(fan, post.id)

        assert (await api.post(post.id, viewer=fan)).is_liked is True
        assert (await api.post(post.id, viewer=new_user())).is_liked is False
        assert (await api.post(post.id)).is_liked is False

    @pytest.mark.parametrize("post_id", ["nope", str(uuid.uuid4())])
    async def test_unknown_post_is_not_found(
        self, api: CommunityApi, post_id: str
    ) -> None:
        code, _ = await failure(api.post(post_id))

        assert code is grpc.StatusCode.NOT_FOUND

    async def test_post_of_a_deleted_generation_is_not_found(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        post = await published(api, rows)
        await rows.soft_delete(post.generation_id)

        code, _ = await failure(api.post(post.id))

        assert code is grpc.StatusCode.NOT_FOUND


class TestDeletePost:
    async def test_author_unpublishes_and_likes_go_with_it(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        author = new_user()
        post = await published(api, rows, author)
        await api.like(new_user(), post.id)

        await api.stub.DeletePost(
            community_pb2.DeletePostRequest(id=post.id), metadata=api.user(author)
        )

        code, _ = await failure(api.post(post.id))
        assert code is grpc.StatusCode.NOT_FOUND
        assert await rows.like_rows(post.id) == 0
        # The generation stays; it can be published again.
        assert (await api.publish(author, post.generation_id)).id != post.id

    async def test_someone_elses_post_is_not_found_and_stays(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        post = await published(api, rows)

        code, _ = await failure(
            api.stub.DeletePost(
                community_pb2.DeletePostRequest(id=post.id),
                metadata=api.user(new_user()),
            )
        )

        assert code is grpc.StatusCode.NOT_FOUND
        assert (await api.post(post.id)).id == post.id


class TestListMyPosts:
    async def test_own_posts_newest_first_in_pages(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        author = new_user()
        mine = [await published(api, rows, author) for _ in range(3)]
        await published(api, rows)
        gone = await published(api, rows, author)
        await rows.soft_delete(gone.generation_id)

        first = await api.stub.ListMyPosts(
            community_pb2.ListMyPostsRequest(page_size=2), metadata=api.user(author)
        )
        second = await api.stub.ListMyPosts(
            community_pb2.ListMyPostsRequest(
                page_size=2, page_token=first.next_page_token
            ),
            metadata=api.user(author),
        )

        assert ids(first.posts) + ids(second.posts) == [p.id for p in reversed(mine)]
        assert second.next_page_token == ""

    # Found by tests/fuzz: a number no token of ours carries failed with
    # INTERNAL (OverflowError) instead of being refused.
    @pytest.mark.parametrize(
        "fields", [{"rank": 0, "at": 10**30}, {"rank": 10**400, "at": 0}]
    )
    async def test_a_tampered_page_token_is_refused(
        self, api: CommunityApi, fields: dict[str, int]
    ) -> None:
        raw = json.dumps({**fields, "id": str(uuid.uuid4())}).encode()
        token = base64.urlsafe_b64encode(raw).decode().rstrip("=")

        code, _ = await failure(
            api.stub.ListMyPosts(
                community_pb2.ListMyPostsRequest(page_token=token),
                metadata=api.user(new_user()),
            )
        )

        assert code is grpc.StatusCode.INVALID_ARGUMENT


class TestShares:
    async def test_share_link_is_made_once_per_generation(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        user = new_user()
        generation_id = await rows.completed(user)

        first = await api.share(user, generation_id, allow_download=False)
        again = await api.share(user, generation_id)

        assert len(first.token) == 16
        assert again.token == first.token
        assert (first.generation_id, first.allow_download) == (generation_id, False)
        assert not first.HasField("expires_at")

    async def test_simultaneous_requests_make_one_link(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        user = new_user()
        generation_id = await rows.completed(user)

        shares = await asyncio.gather(
            *(api.share(user, generation_id) for _ in range(5))
        )

        assert len({share.token for share in shares}) == 1

    async def test_someone_elses_generation_is_not_found(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        generation_id = await rows.completed(new_user())

        code, _ = await failure(api.share(new_user(), generation_id))

        assert code is grpc.StatusCode.NOT_FOUND

    async def test_unfinished_generation_cannot_be_shared(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        user = new_user()
        generation_id = await rows.add(GenerationRow(user, status="pending"))

        code, _ = await failure(api.share(user, generation_id))

        assert code is grpc.StatusCode.FAILED_PRECONDITION

    @pytest.mark.parametrize("days", [-1, 366])
    async def test_expiry_out_of_range_is_invalid(
        self, api: CommunityApi, rows: GenerationRows, days: int
    ) -> None:
        user = new_user()
        generation_id = await rows.completed(user)

        code, _ = await failure(api.share(user, generation_id, expires_in_days=days))

        assert code is grpc.StatusCode.INVALID_ARGUMENT

    async def test_link_opens_by_token_counting_views(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        author = await api.registered_user()
        row = GenerationRow(author.id, prompt="a red kite")
        await rows.add(row)
        share = await api.share(author.id, row.id, expires_in_days=7)

        first = await api.shared(share.token)
        second = await api.shared(share.token)

        assert (first.id, first.type, first.result_url) == (
            row.id,
            "image",
            row.result_url,
        )
        assert (first.prompt, first.nickname) == ("a red kite", author.nickname)
        assert first.HasField("completed_at")
        assert (first.view_count, second.view_count) == (1, 2)

    async def test_generation_opens_by_id_once_shared_or_published(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        user = new_user()
        shared = await rows.completed(user)
        await api.share(user, shared)
        post = await published(api, rows, user)

        assert (await api.shared(shared)).id == shared
        assert (await api.shared(post.generation_id)).id == post.generation_id

    async def test_private_generation_is_not_found(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        generation_id = await rows.completed(new_user())

        code, _ = await failure(api.shared(generation_id))
        unknown, _ = await failure(api.shared("no-such-token"))

        assert code is grpc.StatusCode.NOT_FOUND
        assert unknown is grpc.StatusCode.NOT_FOUND

    async def test_expired_link_is_gone(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        user = new_user()
        generation_id = await rows.completed(user)
        share = await api.share(user, generation_id, expires_in_days=1)
        await rows.share_expiry(share.token, datetime.now(UTC) - timedelta(hours=1))

        code, error = await failure(api.shared(share.token))
        by_id, _ = await failure(api.shared(generation_id))

        assert code is grpc.StatusCode.FAILED_PRECONDITION
        assert isinstance(error, Expired)
        # An expired link no longer makes the generation public.
        assert by_id is grpc.StatusCode.NOT_FOUND
        # A new link can be made.
        assert (await api.share(user, generation_id)).token != share.token

    async def test_revoked_link_is_not_found(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        user = new_user()
        generation_id = await rows.completed(user)
        share = await api.share(user, generation_id)

        await api.stub.RevokeShare(
            community_pb2.RevokeShareRequest(token=share.token),
            metadata=api.user(user),
        )

        by_token, _ = await failure(api.shared(share.token))
        by_id, _ = await failure(api.shared(generation_id))
        assert by_token is grpc.StatusCode.NOT_FOUND
        assert by_id is grpc.StatusCode.NOT_FOUND

    async def test_someone_else_cannot_revoke(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        user = new_user()
        share = await api.share(user, await rows.completed(user))

        code, _ = await failure(
            api.stub.RevokeShare(
                community_pb2.RevokeShareRequest(token=share.token),
                metadata=api.user(new_user()),
            )
        )

        assert code is grpc.StatusCode.NOT_FOUND
        assert (await api.shared(share.token)).view_count == 1

    async def test_link_of_a_deleted_generation_is_not_found(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        user = new_user()
        generation_id = await rows.completed(user)
        share = await api.share(user, generation_id)
        await rows.soft_delete(generation_id)

        code, _ = await failure(api.shared(share.token))

        assert code is grpc.StatusCode.NOT_FOUND


class TestListFeatured:
    async def test_liked_posts_for_their_age_without_nsfw(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        safe = await published(api, rows)
        nsfw = await published(api, rows, is_nsfw=True)
        for post in (safe, nsfw):
            await like_by_many(api, post.id, 25)

        reply = await api.stub.ListFeatured(
            community_pb2.ListFeaturedRequest(page_size=24), metadata=api.anonymous
        )

        listed = ids(reply.posts)
        assert safe.id in listed
        assert nsfw.id not in listed
        assert not any(post.is_nsfw for post in reply.posts)
        now = datetime.now(UTC)
        ages = [
            (now - p.published_at.ToDatetime(tzinfo=UTC)).total_seconds() / 86400
            for p in reply.posts
        ]
        recent = [p for p, age in zip(reply.posts, ages, strict=True) if age < 29]
        # The month's posts by likes for their age, then older ones by likes.
        assert listed[: len(recent)] == ids(recent)
        scores = [
            p.like_count / (age + 1)
            for p, age in zip(reply.posts, ages, strict=True)
            if age < 29
        ]
        assert scores == sorted(scores, reverse=True)
        older = [p.like_count for p in reply.posts[len(recent) :]]
        assert older == sorted(older, reverse=True)


class TestGetUserStats:
    async def test_counts_generations_posts_and_likes_received(
        self, api: CommunityApi, rows: GenerationRows
    ) -> None:
        user = new_user()
        first = await published(api, rows, user)
        second = await published(api, rows, user)
        await rows.add(GenerationRow(user, status="failed"))
        deleted = await published(api, rows, user)
        await like_by_many(api, first.id, 2)
        await like_by_many(api, second.id, 1)
        await like_by_many(api, deleted.id, 4)
        await rows.soft_delete(deleted.generation_id)

        stats = await api.stub.GetUserStats(
            community_pb2.GetUserStatsRequest(user_id=user), metadata=api.user(user)
        )

        assert (stats.generations, stats.published, stats.likes_received) == (
            3,
            2,
            3,
        )

    async def test_another_users_figures_are_refused(self, api: CommunityApi) -> None:
        code, _ = await failure(
            api.stub.GetUserStats(
                community_pb2.GetUserStatsRequest(user_id=new_user()),
                metadata=api.user(new_user()),
            )
        )

        assert code is grpc.StatusCode.PERMISSION_DENIED


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def authors_at(
    settings: Settings, auth_address: str, clock: Clock
) -> AsyncIterator[Authors]:
    """Author lookups as the generation process makes them, against
    `auth_address`."""
    own = settings.model_copy(update={"auth_address": auth_address})
    signer = TokenSigner(own.signing_secret())
    upstreams = Upstreams(own, InternalTokenSource(signer, "generation", 300))
    stub = auth_pb2_grpc.AuthServiceStub(upstreams.channel("auth"))
    try:
        yield Authors(stub, upstreams, clock=clock)
    finally:
        await upstreams.close()


class TestAuthors:
    async def test_a_nickname_is_remembered_for_a_while(
        self, api: CommunityApi, settings: Settings
    ) -> None:
        clock = Clock()
        author = await api.registered_user()
        renamed = f"renamed_{uuid.uuid4().hex[:10]}"

        async with authors_at(settings, settings.auth_address, clock) as authors:
            first = await authors.one(author.id)
            await api.auth.UpdateProfile(
                auth_pb2.UpdateProfileRequest(nickname=renamed),
                metadata=api.user(author.id),
            )
            clock.now += REMEMBER_SECONDS - 1
            remembered = await authors.one(author.id)
            clock.now += 2
            fresh = await authors.one(author.id)

        assert first.nickname == remembered.nickname == author.nickname
        assert fresh.nickname == renamed

    async def test_unknown_user_is_anonymous(
        self, settings: Settings, generation_service: GenerationProcess
    ) -> None:
        async with authors_at(settings, settings.auth_address, Clock()) as authors:
            found = await authors.one(new_user())

        assert found == ANONYMOUS

    async def test_unreachable_auth_leaves_authors_unknown(
        self, settings: Settings, generation_service: GenerationProcess
    ) -> None:
        address = f"127.0.0.1:{free_port()}"
        async with authors_at(settings, address, Clock()) as authors:
            found = await authors.of([new_user(), new_user()])

        assert found == {}
