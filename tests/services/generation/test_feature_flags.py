"""The operators' feature flags as the generation process enforces them:
`video_generation` (new video generations) and `community_gallery` (the
feed, posts, publishing and likes), read from the admin service by the
process's polling copy (libs/flags.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import grpc
import pytest
from omnihub.generation.v1 import community_pb2

from libs.config import Settings
from libs.errors import DomainError
from libs.grpc.status import from_rpc_error
from services.admin.main import AdminProcess
from services.generation.main import GenerationProcess
from tests.services.admin.api import AdminApi
from tests.services.generation.api import (
    IMAGE_MODEL,
    VIDEO_MODEL,
    GenerationApi,
    unique_prompt,
)
from tests.services.generation.factories import (
    CommunityApi,
    GenerationRows,
    failure,
    new_user,
)

# Twice the suite's poll interval, with room to spare.
PROPAGATION_SECONDS = 3.0


@pytest.fixture(scope="module")
async def admin(
    settings: Settings, admin_service: AdminProcess
) -> AsyncIterator[AdminApi]:
    client = AdminApi(settings)
    yield client
    await client.close()


@pytest.fixture(scope="module")
async def generations(
    settings: Settings, generation_service: GenerationProcess
) -> AsyncIterator[GenerationApi]:
    client = GenerationApi(settings, settings.fal_queue_url)
    yield client
    await client.close()


@pytest.fixture(scope="module")
async def community(
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


Probe = Callable[[], Awaitable[object]]


@asynccontextmanager
async def turned_off(admin: AdminApi, key: str, probe: Probe) -> AsyncIterator[None]:
    """The flag off until the block ends; `probe` (a call the flag refuses)
    tells when the generation process has seen each change."""
    await admin.set_flag(key, False)
    try:
        await refusal(probe)
        yield
    finally:
        await admin.set_flag(key, True)
        await accepted(probe)


async def refusal(call: Probe) -> DomainError:
    """The error `call` fails with once the flag has reached the process."""
    deadline = time.monotonic() + PROPAGATION_SECONDS
    while True:
        try:
            await call()
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.PERMISSION_DENIED:
                return from_rpc_error(error)
            raise
        assert time.monotonic() < deadline, "the flag never took effect"
        await asyncio.sleep(0.05)


async def accepted(call: Probe) -> None:
    """Wait until `call` is no longer refused as a disabled feature."""
    deadline = time.monotonic() + PROPAGATION_SECONDS
    while True:
        try:
            await call()
            return
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.PERMISSION_DENIED:
                raise
        assert time.monotonic() < deadline, "the flag never came back on"
        await asyncio.sleep(0.05)


@pytest.fixture
async def video_probe(generations: GenerationApi) -> Probe:
    user = await generations.new_user(credits=1000)
    return lambda: generations.create(user, unique_prompt(), VIDEO_MODEL)


@pytest.fixture
def feed_probe(community: CommunityApi) -> Probe:
    return lambda: community.feed()


class TestVideoGeneration:
    async def test_a_video_is_refused_while_off_and_nothing_is_held(
        self, admin: AdminApi, generations: GenerationApi, video_probe: Probe
    ) -> None:
        user = await generations.new_user(credits=100)

        async with turned_off(admin, "video_generation", video_probe):
            status, error = await failure(
                generations.create(user, unique_prompt(), VIDEO_MODEL)
            )

        assert status == grpc.StatusCode.PERMISSION_DENIED
        assert error.code == "feature_disabled"
        assert "Video generation is turned off" in error.message
        assert await generations.balance(user) == 100_000_000

    async def test_images_are_still_generated_while_video_is_off(
        self, admin: AdminApi, generations: GenerationApi, video_probe: Probe
    ) -> None:
        user = await generations.new_user(credits=100)

        async with turned_off(admin, "video_generation", video_probe):
            reply = await generations.create(user, unique_prompt(), IMAGE_MODEL)

        assert len(reply.generations) == 1

    async def test_videos_are_accepted_again_once_it_is_back_on(
        self, admin: AdminApi, generations: GenerationApi, video_probe: Probe
    ) -> None:
        user = await generations.new_user(credits=100)
        async with turned_off(admin, "video_generation", video_probe):
            pass

        reply = await generations.create(user, unique_prompt(), VIDEO_MODEL)

        assert reply.generations[0].type == "video"


class TestCommunityGallery:
    async def test_the_feed_and_publishing_are_refused_while_off(
        self,
        admin: AdminApi,
        community: CommunityApi,
        rows: GenerationRows,
        feed_probe: Probe,
    ) -> None:
        author = new_user()
        generation_id = await rows.completed(author)

        async with turned_off(admin, "community_gallery", feed_probe):
            _, feed = await failure(community.feed())
            _, publish = await failure(community.publish(author, generation_id))

        assert feed.code == publish.code == "feature_disabled"
        assert "community gallery" in feed.message
        assert await rows.post_rows(generation_id) == 0

    async def test_a_users_own_posts_stay_reachable_while_off(
        self,
        admin: AdminApi,
        community: CommunityApi,
        rows: GenerationRows,
        feed_probe: Probe,
    ) -> None:
        author = new_user()
        post = await community.publish(author, await rows.completed(author))

        async with turned_off(admin, "community_gallery", feed_probe):
            mine = await community.stub.ListMyPosts(
                community_pb2.ListMyPostsRequest(), metadata=community.user(author)
            )

        assert post.id in {p.id for p in mine.posts}

    async def test_the_gallery_opens_again_once_it_is_back_on(
        self,
        admin: AdminApi,
        community: CommunityApi,
        rows: GenerationRows,
        feed_probe: Probe,
    ) -> None:
        author = new_user()
        async with turned_off(admin, "community_gallery", feed_probe):
            pass

        post = await community.publish(author, await rows.completed(author))

        assert post.id
