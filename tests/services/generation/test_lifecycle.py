"""A generation's whole life over real gRPC, with the local fal, two workers
and billing: what it costs, how it ends, and that every hold is settled once
whoever finishes it (a webhook, a poll, a second worker, a cancel)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import pytest
from omnihub.generation.v1 import generation_pb2

from libs.config import Settings
from tests.fixtures.generation import Workers, spawn_worker
from tests.services.generation.api import (
    CREDIT,
    VIDEO_MODEL,
    GenerationApi,
    unique_prompt,
)
from tests.suite import ServedApp

pytestmark = pytest.mark.usefixtures("generation_workers", "gateway")


@pytest.fixture(scope="module")
async def api(
    settings: Settings, fal_simulator: ServedApp
) -> AsyncIterator[GenerationApi]:
    client = GenerationApi(settings, fal_simulator.url)
    yield client
    await client.close()


async def assert_reconciles(api: GenerationApi) -> None:
    assert await api.unbalanced_accounts() == []


class TestCompletion:
    async def test_an_image_completes_and_is_charged_its_price(
        self, api: GenerationApi, settings: Settings
    ) -> None:
        user = await api.new_user(credits=5)
        prompt = unique_prompt()

        created = await api.create(user, prompt)
        generation = await api.wait(user, created.generations[0].id)
        await api.wait_settled(generation.id)

        assert generation.status == "completed"
        assert generation.simulated
        assert generation.result_url.startswith(settings.media_base_url)
        stored = urlsplit(generation.result_url).path.removeprefix("/media/")
        assert (Path(settings.media_dir) / stored).is_file()
        assert generation.thumbnail_url
        assert await api.balance(user) == 5 * CREDIT - created.total_micros
        assert created.total_micros > 0
        await assert_reconciles(api)

    async def test_four_images_are_one_provider_job_and_split_the_price(
        self, api: GenerationApi
    ) -> None:
        user = await api.new_user(credits=5)
        prompt = unique_prompt()

        created = await api.create(user, prompt, num_images=4)
        done = [await api.wait(user, g.id) for g in created.generations]

        assert [g.status for g in done] == ["completed"] * 4
        assert len({g.result_url for g in done}) == 4
        assert sum(g.credits_micros for g in done) == created.total_micros
        assert len(await api.submissions(prompt)) == 1
        for g in done:
            await api.wait_settled(g.id)
        assert await api.balance(user) == 5 * CREDIT - created.total_micros

    async def test_a_video_completes(self, api: GenerationApi) -> None:
        user = await api.new_user(credits=50)
        prompt = unique_prompt("waves rolling in")

        created = await api.create(user, prompt, model=VIDEO_MODEL)
        generation = await api.wait(user, created.generations[0].id)

        assert generation.status == "completed"
        assert generation.type == "video"
        await api.wait_settled(generation.id)
        assert await api.balance(user) == 50 * CREDIT - created.total_micros


class TestFailure:
    async def test_a_provider_refusal_fails_the_job_and_releases_the_hold(
        self, api: GenerationApi
    ) -> None:
        user = await api.new_user(credits=5)
        prompt = unique_prompt()
        await api.fault("result_422", prompt, times=1)

        created = await api.create(user, prompt)
        generation = await api.wait(user, created.generations[0].id)
        await api.wait_settled(generation.id)

        assert generation.status == "failed"
        assert generation.error_type == "invalid_input"
        assert "refunded" in generation.error
        assert await api.balance(user) == 5 * CREDIT
        await assert_reconciles(api)

    async def test_a_broken_result_body_fails_and_releases(
        self, api: GenerationApi
    ) -> None:
        user = await api.new_user(credits=5)
        prompt = unique_prompt()
        await api.fault("malformed", prompt, times=1)

        created = await api.create(user, prompt)
        generation = await api.wait(user, created.generations[0].id)
        await api.wait_settled(generation.id)

        assert generation.status in ("failed", "completed")
        expected = 5 * CREDIT - (
            created.total_micros if generation.status == "completed" else 0
        )
        assert await api.balance(user) == expected

    async def test_submit_refused_with_500_is_posted_again_once_it_may(
        self, api: GenerationApi
    ) -> None:
        user = await api.new_user(credits=5)
        prompt = unique_prompt()
        await api.fault("submit_500", prompt, times=1)

        created = await api.create(user, prompt)
        generation = await api.wait(user, created.generations[0].id)

        assert generation.status == "completed"
        accepted = [
            s for s in await api.submissions(prompt) if s.get("state") != "refused"
        ]
        assert len(accepted) >= 1

    async def test_fal_refusing_every_post_fails_the_job_and_releases(
        self, api: GenerationApi
    ) -> None:
        user = await api.new_user(credits=5)
        prompt = unique_prompt()
        await api.fault("submit_500", prompt, times=10)

        created = await api.create(user, prompt)
        generation = await api.wait(user, created.generations[0].id, within=30)
        await api.wait_settled(generation.id)

        assert generation.status == "failed"
        assert generation.error_type == "api_error"
        assert await api.balance(user) == 5 * CREDIT
        await api.fault("ok", prompt)


class TestCancel:
    async def test_cancel_while_running_releases_and_cancels_at_fal(
        self, api: GenerationApi
    ) -> None:
        user = await api.new_user(credits=5)
        prompt = unique_prompt()
        await api.fault("never_finishes", prompt, times=1)
        created = await api.create(user, prompt)
        generation_id = created.generations[0].id
        await api.wait(user, generation_id, ("processing",))

        reply = await api.stub.CancelGeneration(
            generation_pb2.CancelGenerationRequest(id=generation_id),
            metadata=api.user(user),
        )
        await api.wait_settled(generation_id)

        assert reply.generation.status == "cancelled"
        assert reply.released_micros == created.total_micros
        assert await api.balance(user) == 5 * CREDIT
        for _ in range(100):
            if any(s.get("cancelled") for s in await api.submissions(prompt)):
                break
            await asyncio.sleep(0.05)
        assert any(s.get("cancelled") for s in await api.submissions(prompt))
        await assert_reconciles(api)

    async def test_cancel_of_a_finished_generation_is_refused(
        self, api: GenerationApi
    ) -> None:
        user = await api.new_user(credits=5)
        created = await api.create(user, unique_prompt())
        generation = await api.wait(user, created.generations[0].id)

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await api.stub.CancelGeneration(
                generation_pb2.CancelGenerationRequest(id=generation.id),
                metadata=api.user(user),
            )

        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    async def test_two_cancels_release_once(self, api: GenerationApi) -> None:
        user = await api.new_user(credits=5)
        prompt = unique_prompt()
        await api.fault("never_finishes", prompt, times=1)
        created = await api.create(user, prompt)
        generation_id = created.generations[0].id

        results = await asyncio.gather(
            *(
                api.stub.CancelGeneration(
                    generation_pb2.CancelGenerationRequest(id=generation_id),
                    metadata=api.user(user),
                )
                for _ in range(5)
            ),
            return_exceptions=True,
        )
        await api.wait_settled(generation_id)

        assert sum(not isinstance(r, BaseException) for r in results) == 1
        assert await api.balance(user) == 5 * CREDIT
        await assert_reconciles(api)


class TestRaces:
    async def test_webhook_delivered_twice_and_polls_charge_once(
        self, api: GenerationApi
    ) -> None:
        user = await api.new_user(credits=5)
        prompt = unique_prompt()
        await api.fault("webhook_twice", prompt, times=1)

        created = await api.create(user, prompt)
        generation = await api.wait(user, created.generations[0].id)
        await api.wait_settled(generation.id)
        await asyncio.sleep(0.3)

        assert generation.status == "completed"
        assert await api.balance(user) == 5 * CREDIT - created.total_micros
        await assert_reconciles(api)

    async def test_many_jobs_across_two_workers_are_each_submitted_once(
        self, api: GenerationApi
    ) -> None:
        user = await api.new_user(credits=20)
        tag = unique_prompt("a field of tulips")
        prompts = [f"{tag} {n}" for n in range(12)]

        created = await asyncio.gather(*(api.create(user, p) for p in prompts))
        for reply in created:
            await api.wait(user, reply.generations[0].id)

        assert len(await api.submissions(tag)) == 12
        spent = sum(reply.total_micros for reply in created)
        for reply in created:
            await api.wait_settled(reply.generations[0].id)
        assert await api.balance(user) == 20 * CREDIT - spent

    async def test_parallel_requests_beyond_the_balance_create_only_what_it_covers(
        self, api: GenerationApi
    ) -> None:
        probe = await api.new_user(credits=5)
        price = (await api.create(probe, unique_prompt())).total_micros
        user = await api.new_user(credits=0)
        await api.adjust(user, price * 5)

        results = await asyncio.gather(
            *(api.create(user, unique_prompt()) for _ in range(20)),
            return_exceptions=True,
        )

        created = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert len(created) == 5, [(r.code(), r.details()) for r in refused]
        assert len(refused) == 15
        assert {r.code() for r in refused} == {grpc.StatusCode.FAILED_PRECONDITION}
        assert await api.balance(user) >= 0
        for reply in created:
            await api.wait(user, reply.generations[0].id)
            await api.wait_settled(reply.generations[0].id)
        assert await api.balance(user) == 0
        await assert_reconciles(api)


class TestIdempotency:
    async def test_a_retry_with_the_same_key_answers_the_first_result(
        self, api: GenerationApi
    ) -> None:
        user = await api.new_user(credits=5)
        prompt = unique_prompt()

        first = await api.create(user, prompt, idempotency_key="click-1")
        again = await api.create(user, prompt, idempotency_key="click-1")

        assert again.replayed
        assert [g.id for g in again.generations] == [g.id for g in first.generations]
        await api.wait(user, first.generations[0].id)
        await api.wait_settled(first.generations[0].id)
        assert await api.balance(user) == 5 * CREDIT - first.total_micros
        assert len(await api.submissions(prompt)) == 1

    async def test_the_same_key_with_another_request_is_refused(
        self, api: GenerationApi
    ) -> None:
        user = await api.new_user(credits=5)
        await api.create(user, unique_prompt(), idempotency_key="click-2")

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await api.create(user, unique_prompt(), idempotency_key="click-2")

        assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS


class TestWorkerKilled:
    async def test_a_killed_workers_job_is_resumed_not_resubmitted(
        self,
        api: GenerationApi,
        settings: Settings,
        generation_workers: Workers,
    ) -> None:
        await generation_workers.pause()
        user = await api.new_user(credits=5)
        prompt = unique_prompt()
        await api.fault("slow", prompt, times=1, run_seconds=3)
        worker = await spawn_worker(settings, WORKER_LEASE="2")
        try:
            created = await api.create(user, prompt)
            generation_id = created.generations[0].id
            await api.wait(user, generation_id, ("processing",), within=30)
            os.kill(worker.pid, signal.SIGKILL)
            await worker.wait()
        finally:
            if worker.returncode is None:
                worker.kill()
            await generation_workers.resume()

        generation = await api.wait(user, generation_id, within=30)
        await api.wait_settled(generation_id)

        assert generation.status == "completed"
        assert len(await api.submissions(prompt)) == 1
        assert await api.balance(user) == 5 * CREDIT - created.total_micros
        await assert_reconciles(api)
