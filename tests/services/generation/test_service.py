"""The generation service's rules over real gRPC: listing, counting,
deleting, timeouts and the recovery of a create request that died half way."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from omnihub.billing.v1 import billing_pb2
from omnihub.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from omnihub.generation.v1 import generation_pb2

from libs.config import Settings
from tests.services.generation.api import CREDIT, GenerationApi, unique_prompt
from tests.suite import ServedApp

pytestmark = pytest.mark.usefixtures("generation_workers", "gateway")

# A model no other test uses, so that shortening its wait changes nothing else.
SHORT_WAIT_MODEL = "fal-playground-v3"


@pytest.fixture(scope="module")
async def api(
    settings: Settings, fal_simulator: ServedApp
) -> AsyncIterator[GenerationApi]:
    client = GenerationApi(settings, fal_simulator.url)
    yield client
    await client.close()


async def listing(
    api: GenerationApi, user: str, **fields: object
) -> generation_pb2.ListGenerationsResponse:
    return await api.stub.ListGenerations(
        generation_pb2.ListGenerationsRequest(**fields),  # type: ignore[arg-type]
        metadata=api.user(user),
    )


class TestListGenerations:
    async def test_pages_by_cursor_without_gaps_or_repeats(
        self, api: GenerationApi
    ) -> None:
        user = await api.new_user(credits=5)
        made = [await api.create(user, unique_prompt()) for _ in range(5)]
        ids = {reply.generations[0].id for reply in made}

        seen: list[str] = []
        token = ""
        while True:
            page = await listing(api, user, page_size=2, page_token=token)
            seen.extend(g.id for g in page.generations)
            token = page.next_page_token
            if not token:
                break

        assert len(seen) == len(set(seen)) == 5
        assert set(seen) == ids

    async def test_counts_by_type_and_filters_by_status(
        self, api: GenerationApi
    ) -> None:
        user = await api.new_user(credits=5)
        reply = await api.create(user, unique_prompt(), num_images=2)
        for generation in reply.generations:
            await api.wait(user, generation.id)

        page = await listing(api, user, status="completed")

        assert dict(page.counts) == {"image": 2}
        assert len(page.generations) == 2

    async def test_another_users_generations_are_not_listed(
        self, api: GenerationApi
    ) -> None:
        owner = await api.new_user(credits=5)
        await api.create(owner, unique_prompt())
        stranger = await api.new_user(credits=0)

        page = await listing(api, stranger)

        assert list(page.generations) == []

    async def test_a_bad_cursor_is_refused(self, api: GenerationApi) -> None:
        user = await api.new_user(credits=0)

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await listing(api, user, page_token="not-a-cursor")

        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


class TestGetGeneration:
    async def test_another_users_generation_is_not_found(
        self, api: GenerationApi
    ) -> None:
        owner = await api.new_user(credits=5)
        reply = await api.create(owner, unique_prompt())
        stranger = await api.new_user(credits=0)

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await api.get(stranger, reply.generations[0].id)

        assert refused.value.code() == grpc.StatusCode.NOT_FOUND


class TestDeleteGenerations:
    async def test_deleted_generations_leave_the_list_and_the_counts(
        self, api: GenerationApi
    ) -> None:
        user = await api.new_user(credits=5)
        reply = await api.create(user, unique_prompt())
        generation = await api.wait(user, reply.generations[0].id)

        await api.stub.DeleteGenerations(
            generation_pb2.DeleteGenerationsRequest(ids=[generation.id]),
            metadata=api.user(user),
        )

        page = await listing(api, user)
        assert list(page.generations) == []
        assert dict(page.counts) == {}

    async def test_one_foreign_id_deletes_nothing(self, api: GenerationApi) -> None:
        owner = await api.new_user(credits=5)
        stranger = await api.new_user(credits=5)
        mine = (await api.create(owner, unique_prompt())).generations[0].id
        theirs = (await api.create(stranger, unique_prompt())).generations[0].id

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await api.stub.DeleteGenerations(
                generation_pb2.DeleteGenerationsRequest(ids=[mine, theirs]),
                metadata=api.user(owner),
            )

        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert (await api.get(owner, mine)).id == mine

    async def test_deleting_a_running_generation_releases_its_credits(
        self, api: GenerationApi
    ) -> None:
        user = await api.new_user(credits=5)
        prompt = unique_prompt()
        await api.fault("never_finishes", prompt, times=1)
        reply = await api.create(user, prompt)
        generation_id = reply.generations[0].id
        await api.wait(user, generation_id, ("processing",))

        await api.stub.DeleteGenerations(
            generation_pb2.DeleteGenerationsRequest(ids=[generation_id]),
            metadata=api.user(user),
        )
        await api.wait_settled(generation_id)

        assert await api.balance(user) == 5 * CREDIT
        assert await api.unbalanced_accounts() == []


class TestTimeout:
    async def test_a_job_past_its_wait_fails_and_releases(
        self, api: GenerationApi, settings: Settings
    ) -> None:
        async with grpc.aio.insecure_channel(settings.catalog_address) as channel:
            catalog = catalog_pb2_grpc.CatalogServiceStub(channel)
            await catalog.UpdateModel(
                catalog_pb2.UpdateModelRequest(
                    id=SHORT_WAIT_MODEL,
                    changes=catalog_pb2.ModelChanges(max_wait_seconds=1),
                    actor="tests",
                ),
                metadata=api.service,
            )
        user = await api.new_user(credits=5)
        prompt = unique_prompt()
        await api.fault("never_finishes", prompt, times=1)

        reply = await api.create(user, prompt, model=SHORT_WAIT_MODEL)
        generation = await api.wait(user, reply.generations[0].id)
        await api.wait_settled(generation.id)

        assert generation.status == "failed"
        assert generation.error_type == "timeout"
        assert await api.balance(user) == 5 * CREDIT
        # The worker fails the job first, then asks fal to cancel it.
        for _ in range(100):
            if any(s["cancelled"] for s in await api.submissions(prompt)):
                break
            await asyncio.sleep(0.05)
        assert any(s["cancelled"] for s in await api.submissions(prompt))


class TestHoldingRecovery:
    async def test_a_job_whose_create_request_died_is_held_and_run_once(
        self, api: GenerationApi
    ) -> None:
        user = await api.new_user(credits=5)
        workspace = str(uuid.uuid4())
        job_id, generation_id = uuid.uuid4(), uuid.uuid4()
        prompt = unique_prompt()
        await api.sql(
            "INSERT INTO jobs (id, user_id, kind, model_id, endpoint, payload,"
            " state, due_at, deadline_at, created_at) VALUES (:job, :user,"
            " 'generate', 'fal-flux-pro-v1.1', 'fal-ai/flux-pro/v1.1',"
            " CAST(:payload AS jsonb), 'holding', now(), now() + interval '2 min',"
            " now() - interval '1 min')",
            job=job_id,
            user=user,
            payload=f'{{"prompt": "{prompt}", "num_images": 1}}',
        )
        await api.sql(
            "INSERT INTO generations (id, job_id, user_id, workspace_id, type,"
            " model_id, model_name, prompt, options, credits_micros, payer_type,"
            " payer_id, credit_source, max_wait_seconds) VALUES (:id, :job, :user,"
            " :workspace, 'image', 'fal-flux-pro-v1.1', 'FLUX 1.1 Pro', :prompt,"
            " '{}', 40000, 1, :user, 'personal', 120)",
            id=generation_id,
            job=job_id,
            user=user,
            workspace=workspace,
            prompt=prompt,
        )

        generation = await api.wait(user, str(generation_id))
        await api.wait_settled(str(generation_id))
        await asyncio.sleep(0.2)

        assert generation.status == "completed"
        assert await api.balance(user) == 5 * CREDIT - 40_000
        assert len(await api.submissions(prompt)) == 1
        assert await api.unbalanced_accounts() == []

    async def test_a_hold_placed_before_the_create_request_died_is_taken_over(
        self, api: GenerationApi
    ) -> None:
        user = await api.new_user(credits=5)
        workspace = str(uuid.uuid4())
        job_id, generation_id = uuid.uuid4(), uuid.uuid4()
        prompt = unique_prompt()
        await _holding_job(api, job_id, generation_id, user, workspace, prompt)
        # What the create request asked billing for before it died: the hold
        # as ResolvePayer tags a workspace's payments.
        await api.billing.Hold(
            billing_pb2.HoldRequest(
                account=billing_pb2.AccountRef(
                    owner_type=billing_pb2.OWNER_TYPE_USER, owner_id=user
                ),
                amount_micros=40_000,
                idempotency_key=f"generation:{generation_id}:hold",
                reason="generation",
                reference=str(generation_id),
                tags={
                    "workspace_id": workspace,
                    "member_id": user,
                    "usage_type": "image",
                },
            ),
            metadata=api.service,
        )

        generation = await api.wait(user, str(generation_id))
        await api.wait_settled(str(generation_id))

        assert generation.status == "completed"
        assert await api.balance(user) == 5 * CREDIT - 40_000
        assert len(await api.submissions(prompt)) == 1
        assert await api.unbalanced_accounts() == []


async def _holding_job(
    api: GenerationApi,
    job_id: uuid.UUID,
    generation_id: uuid.UUID,
    user: str,
    workspace: str,
    prompt: str,
) -> None:
    """A job and its generation as a create request leaves them when it
    dies before its holds are recorded."""
    await api.sql(
        "INSERT INTO jobs (id, user_id, kind, model_id, endpoint, payload,"
        " state, due_at, deadline_at, created_at) VALUES (:job, :user,"
        " 'generate', 'fal-flux-pro-v1.1', 'fal-ai/flux-pro/v1.1',"
        " CAST(:payload AS jsonb), 'holding', now(), now() + interval '2 min',"
        " now() - interval '1 min')",
        job=job_id,
        user=user,
        payload=f'{{"prompt": "{prompt}", "num_images": 1}}',
    )
    await api.sql(
        "INSERT INTO generations (id, job_id, user_id, workspace_id, type,"
        " model_id, model_name, prompt, options, credits_micros, payer_type,"
        " payer_id, credit_source, max_wait_seconds) VALUES (:id, :job, :user,"
        " :workspace, 'image', 'fal-flux-pro-v1.1', 'FLUX 1.1 Pro', :prompt,"
        " '{}', 40000, 1, :user, 'personal', 120)",
        id=generation_id,
        job=job_id,
        user=user,
        workspace=workspace,
        prompt=prompt,
    )
