"""What the admin service asks of generation about one user: a summary of
their generations, and deleting their data (generations cancelled and
soft-deleted, community posts, likes and share links removed)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from omnihub.billing.v1 import billing_pb2
from omnihub.generation.v1 import generation_pb2

from libs.config import Settings
from services.generation.main import GenerationProcess
from tests.services.generation.api import GenerationApi, unique_prompt
from tests.services.generation.factories import CommunityApi, GenerationRows
from tests.suite import ServedApp


@pytest.fixture(scope="module")
async def api(
    settings: Settings, fal_simulator: ServedApp, generation_service: GenerationProcess
) -> AsyncIterator[GenerationApi]:
    client = GenerationApi(settings, fal_simulator.url)
    yield client
    await client.close()


@pytest.fixture(scope="module")
async def community(settings: Settings) -> AsyncIterator[CommunityApi]:
    client = CommunityApi(settings)
    yield client
    await client.close()


@pytest.fixture(scope="module")
async def rows(settings: Settings) -> AsyncIterator[GenerationRows]:
    made = GenerationRows(settings)
    yield made
    await made.close()


async def summary(
    api: GenerationApi, user_id: str
) -> generation_pb2.GetUserGenerationSummaryResponse:
    reply: generation_pb2.GetUserGenerationSummaryResponse = (
        await api.stub.GetUserGenerationSummary(
            generation_pb2.GetUserGenerationSummaryRequest(
                user_id=user_id, recent_limit=5
            ),
            metadata=api.service,
        )
    )
    return reply


async def delete_data(
    api: GenerationApi, user_id: str
) -> generation_pb2.DeleteUserDataResponse:
    reply: generation_pb2.DeleteUserDataResponse = await api.stub.DeleteUserData(
        generation_pb2.DeleteUserDataRequest(user_id=user_id), metadata=api.service
    )
    return reply


class TestSummary:
    async def test_counts_by_type_and_the_latest(self, api: GenerationApi) -> None:
        user_id = await api.new_user(credits=10)
        created = await api.create(user_id, unique_prompt(), num_images=2)

        found = await summary(api, user_id)

        assert dict(found.counts) == {"image": 2}
        assert {g.id for g in found.recent} == {g.id for g in created.generations}


class TestDeleteUserData:
    async def test_generations_go_and_their_holds_come_back(
        self, api: GenerationApi
    ) -> None:
        user_id = await api.new_user(credits=10)
        await api.create(user_id, unique_prompt())

        deleted = await delete_data(api, user_id)

        assert deleted.deleted_generations == 1
        assert dict((await summary(api, user_id)).counts) == {}
        reply = await api.billing.GetBalances(
            billing_pb2.GetBalancesRequest(
                accounts=[
                    billing_pb2.AccountRef(
                        owner_type=billing_pb2.OWNER_TYPE_USER, owner_id=user_id
                    )
                ]
            ),
            metadata=api.service,
        )
        assert reply.balances[0].held_micros == 0

    async def test_posts_likes_and_shares_go(
        self,
        api: GenerationApi,
        community: CommunityApi,
        rows: GenerationRows,
    ) -> None:
        author = await community.registered_user()
        fan = await community.registered_user()
        theirs = await rows.completed(author.id)
        fans = await rows.completed(fan.id)
        post = await community.publish(author.id, theirs)
        fans_post = await community.publish(fan.id, fans)
        await community.like(fan.id, post.id)
        await community.like(author.id, fans_post.id)
        await community.share(author.id, theirs)

        deleted = await delete_data(api, author.id)

        assert (deleted.deleted_posts, deleted.deleted_likes) == (1, 1)
        assert deleted.deleted_shares == 1
        assert (await community.post(fans_post.id)).like_count == 0
        assert await rows.post_rows(theirs) == 0

    async def test_a_second_run_finds_nothing(self, api: GenerationApi) -> None:
        user_id = await api.new_user(credits=10)
        await api.create(user_id, unique_prompt())
        await delete_data(api, user_id)

        again = await delete_data(api, user_id)

        assert again == generation_pb2.DeleteUserDataResponse()
