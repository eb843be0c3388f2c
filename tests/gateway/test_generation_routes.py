"""gateway/routers/generations.py end to end: real HTTP through the gateway to
the generation service, its workers, billing, catalog and workspace, with
the local fal (deploy/simulators/fal.py) standing in for fal.ai.

Faults at the local fal are scoped to a prompt that only one test uses, so
tests share the session's services without seeing each other's jobs."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from omnihub.billing.v1 import billing_pb2
from omnihub.catalog.v1 import catalog_pb2
from PIL import Image
from starlette.applications import Starlette

from deploy.simulators.fal import FalSimulator
from gateway.routers import generations as generation_routes
from libs.config import Settings
from services.generation.main import GenerationProcess
from tests.gateway.factories import SignedInUser, assert_error, register
from tests.services.billing.factories import BillingClient, new_key, user_account
from tests.services.catalog.harness import CatalogCaller
from tests.suite import ServedApp

IMAGE_MODEL = "fal-flux-schnell"
OTHER_IMAGE_MODEL = "fal-sdxl-lightning"
VIDEO_MODEL = "fal-ltx-video"
# Takes an optional reference image.
REFERENCE_MODEL = "fal-flux-2"
UPSCALER = "fal-crystal-upscaler"
# Only the timeout test uses it: its wait is cut to a second for a while.
TIMEOUT_MODEL = "fal-playground-v3"
FINISHED = {"completed", "failed", "cancelled"}
DEADLINE_SECONDS = 15.0
MICROS = 1_000_000
ISO_MILLIS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
GENERATION_FIELDS = {
    "id",
    "visibleId",
    "userId",
    "workspaceId",
    "sharedWithWorkspace",
    "type",
    "model",
    "modelId",
    "modelName",
    "prompt",
    "options",
    "credits",
    "status",
    "result",
    "thumbnailUrl",
    "error",
    "errorType",
    "startedAt",
    "queuedAt",
    "completedAt",
    "cancelledAt",
    "maxWaitTime",
    "externalRequestId",
    "sourceGenerationId",
    "creditSource",
    "imageIndex",
    "simulated",
    "queuePosition",
    "progress",
    # The original API's names.
    "visible_id",
    "user_id",
    "workspace_id",
    "model_name",
    "thumbnail_url",
    "error_type",
    "started_at",
    "completed_at",
    "shared_with_workspace",
}


@dataclass
class Api:
    http: httpx.AsyncClient
    fal: httpx.AsyncClient
    simulator: FalSimulator
    billing: BillingClient
    settings: Settings
    # Prompts fal never finishes, and the generations made with them: each
    # test cancels its own, so that the workers do not poll them all session.
    stalled_prompts: set[str] = field(default_factory=set)
    stalled: list[tuple[SignedInUser, str]] = field(default_factory=list)

    async def user(self) -> SignedInUser:
        return await register(self.http)

    async def generate(
        self,
        user: SignedInUser,
        key: str | None = None,
        **body: Any,
    ) -> httpx.Response:
        headers = {**user.auth, **({"Idempotency-Key": key} if key else {})}
        response = await self.http.post("/api/generate", json=body, headers=headers)
        if response.status_code == 201 and body.get("prompt") in self.stalled_prompts:
            self.stalled += [(user, g["id"]) for g in response.json()["generations"]]
        return response

    async def cancel_stalled(self) -> None:
        for user, generation_id in self.stalled:
            await self.http.post(
                f"/api/generations/{generation_id}/cancel", headers=user.auth
            )
        self.stalled.clear()

    async def started(self, user: SignedInUser, **body: Any) -> dict[str, Any]:
        response = await self.generate(user, **body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def get(self, user: SignedInUser, generation_id: str) -> dict[str, Any]:
        response = await self.http.get(
            f"/api/generations/{generation_id}", headers=user.auth
        )
        assert response.status_code == 200, response.text
        generation: dict[str, Any] = response.json()
        return generation

    async def finished(
        self, user: SignedInUser, generation_id: str, until: set[str] = FINISHED
    ) -> dict[str, Any]:
        started = time.monotonic()
        while True:
            generation = await self.get(user, generation_id)
            if generation["status"] in until:
                return generation
            assert time.monotonic() - started < DEADLINE_SECONDS, generation
            await asyncio.sleep(0.05)

    async def completed_image(self, user: SignedInUser) -> dict[str, Any]:
        created = await self.started(
            user, type="image", model=IMAGE_MODEL, prompt=tagged("source")
        )
        generation = await self.finished(user, created["id"])
        assert generation["status"] == "completed", generation
        return generation

    async def images(self, user: SignedInUser, count: int) -> list[dict[str, Any]]:
        """`count` image generations, one after another (newest last); they
        run on without being waited for."""
        return [
            (
                await self.started(
                    user, type="image", model=IMAGE_MODEL, prompt=tagged("listed")
                )
            )["generations"][0]
            for _ in range(count)
        ]

    async def balance(self, user: SignedInUser) -> tuple[float, float]:
        response = await self.http.get("/api/credits/balance", headers=user.auth)
        assert response.status_code == 200, response.text
        body = response.json()
        return body["credits"], body["held"]

    async def settled_balance(self, user: SignedInUser) -> float:
        """The balance once nothing is held any more."""
        started = time.monotonic()
        while True:
            credits, held = await self.balance(user)
            if held == 0:
                return credits
            assert time.monotonic() - started < DEADLINE_SECONDS, (credits, held)
            await asyncio.sleep(0.05)

    async def set_balance(self, user: SignedInUser, micros: int) -> None:
        credits, _ = await self.balance(user)
        await self.billing.stub.Adjust(
            billing_pb2.AdjustRequest(
                account=user_account(user.id),
                delta_micros=micros - round(credits * MICROS),
                idempotency_key=new_key("adjust"),
                reason="Test balance",
                actor="tests",
            ),
            metadata=self.billing.service,
        )

    async def price(self, model: str, options: dict[str, str] | None = None) -> float:
        response = await self.http.post(
            f"/api/models/{model}/price", json={"options": options or {}}
        )
        assert response.status_code == 200, response.text
        price: float = response.json()["price"]
        return price

    async def fault(self, mode: str, prompt_contains: str, **extra: Any) -> None:
        if mode == "never_finishes":
            self.stalled_prompts.add(prompt_contains)
        response = await self.fal.post(
            "/simulator/faults",
            json={"mode": mode, "prompt_contains": prompt_contains, **extra},
        )
        assert response.status_code == 200, response.text

    async def submissions(self, prompt_contains: str) -> list[dict[str, Any]]:
        response = await self.fal.get(
            "/simulator/requests", params={"prompt_contains": prompt_contains}
        )
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    async def submitted(self, prompt_contains: str) -> dict[str, Any]:
        """The one job fal received for this prompt, once it has it."""
        started = time.monotonic()
        while not (items := await self.submissions(prompt_contains)):
            assert time.monotonic() - started < DEADLINE_SECONDS
            await asyncio.sleep(0.05)
        assert len(items) == 1, items
        return items[0]


def png_data_url() -> str:
    """A small real PNG as the browser sends a pasted image."""
    image = Image.new("RGB", (8, 8), (200, 30, 30))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def tagged(label: str) -> str:
    """A prompt no other test uses, so faults and submissions stay apart."""
    return f"{label} {uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
async def api(
    gateway: ServedApp,
    generation_workers: object,
    fal_simulator: ServedApp,
    settings: Settings,
) -> AsyncIterator[Api]:
    fal_app = fal_simulator.server.config.app
    assert isinstance(fal_app, Starlette)
    simulator: FalSimulator = fal_app.state.simulator
    billing = BillingClient(settings)
    async with gateway.client() as http, fal_simulator.client() as fal:
        yield Api(http, fal, simulator, billing, settings)
    await billing.close()


@pytest.fixture(scope="module")
async def two_users(api: Api) -> tuple[SignedInUser, SignedInUser]:
    """For tests of who may touch what; balances and lists need their own."""
    return await api.user(), await api.user()


@pytest.fixture(autouse=True)
async def _cancel_stalled(api: Api) -> AsyncIterator[None]:
    yield
    await api.cancel_stalled()


@pytest.fixture
async def one_second_model(settings: Settings) -> AsyncIterator[str]:
    """TIMEOUT_MODEL with its wait cut to one second, restored afterwards."""
    catalog = CatalogCaller(settings)
    reply = await catalog.call(
        "GetModel", catalog_pb2.GetModelRequest(id=TIMEOUT_MODEL)
    )
    await catalog.edit_model(TIMEOUT_MODEL, max_wait_seconds=1)
    yield TIMEOUT_MODEL
    await catalog.edit_model(
        TIMEOUT_MODEL, max_wait_seconds=reply.model.max_wait_seconds
    )
    await catalog.close()


class TestGenerate:
    async def test_image_completes_and_is_charged_once(self, api: Api) -> None:
        user = await api.user()
        start, _ = await api.balance(user)
        price = await api.price(IMAGE_MODEL)

        response = await api.generate(
            user, type="image", model=IMAGE_MODEL, prompt="  a red fox  "
        )

        assert response.status_code == 201, response.text
        body = response.json()
        [generation] = body["generations"]
        assert body["status"] == "pending"
        assert body["credits"] == pytest.approx(price)
        assert body["creditSource"] == "personal"
        assert body["userCredits"] == body["newCredits"] == body["remainingCredits"]
        assert body["userCredits"] == pytest.approx(start - price)
        assert (body["id"], body["visibleId"]) == (
            generation["id"],
            generation["visibleId"],
        )
        assert generation.keys() == GENERATION_FIELDS
        assert generation["prompt"] == "a red fox"
        assert generation["status"] in {"pending", "processing"}
        done = await api.finished(user, generation["id"])
        assert done["status"] == "completed", done
        assert done["result"].startswith("http")
        assert ISO_MILLIS.match(done["completedAt"])
        assert done["completed_at"] == done["completedAt"]
        assert await api.settled_balance(user) == pytest.approx(start - price)

    async def test_output_is_served_from_omnihub_storage(self, api: Api) -> None:
        user = await api.user()
        generation = await api.completed_image(user)

        media = await api.http.get(generation["result"])

        assert media.status_code == 200
        assert media.headers["content-type"].startswith("image/")

    async def test_four_images_are_four_rows_of_one_provider_job(
        self, api: Api
    ) -> None:
        user = await api.user()
        prompt = tagged("four foxes")
        price = await api.price(IMAGE_MODEL, {"num_images": "4"})

        body = await api.started(
            user,
            type="image",
            model=IMAGE_MODEL,
            prompt=prompt,
            options={"num_images": 4},
        )

        rows = body["generations"]
        assert len(rows) == 4
        assert body["credits"] == pytest.approx(price)
        assert sum(row["credits"] for row in rows) == pytest.approx(price)
        assert sorted(row["imageIndex"] for row in rows) == [0, 1, 2, 3]
        done = [await api.finished(user, row["id"]) for row in rows]
        assert {row["status"] for row in done} == {"completed"}
        assert len({row["result"] for row in done}) == 4
        assert len(await api.submissions(prompt)) == 1

    async def test_dashboard_shape_with_two_models_makes_two_batches(
        self, api: Api
    ) -> None:
        user = await api.user()
        prompt = tagged("two models")
        start, _ = await api.balance(user)

        body = await api.started(
            user,
            prompt=prompt,
            modelId=[IMAGE_MODEL, OTHER_IMAGE_MODEL],
            type="image",
            options={
                IMAGE_MODEL: {"image_size": "square_hd"},
                OTHER_IMAGE_MODEL: {},
            },
            numImages=2,
            inputImages=[],
            workspaceId=None,
        )

        rows = body["generations"]
        assert sorted(row["modelId"] for row in rows) == sorted(
            [IMAGE_MODEL, IMAGE_MODEL, OTHER_IMAGE_MODEL, OTHER_IMAGE_MODEL]
        )
        assert body["newCredits"] == pytest.approx(start - body["credits"])
        for row in rows:
            assert (await api.finished(user, row["id"]))["status"] == "completed"
        jobs = await api.submissions(prompt)
        assert len(jobs) == 2

    async def test_inline_reference_image_reaches_fal(self, api: Api) -> None:
        user = await api.user()
        prompt = tagged("like this")

        body = await api.started(
            user,
            type="image",
            model=REFERENCE_MODEL,
            prompt=prompt,
            inputImages=[png_data_url()],
        )

        done = await api.finished(user, body["id"])
        assert done["status"] == "completed", done
        job = await api.submitted(prompt)
        assert {"image_url", "image_urls"} & set(job["payload_keys"]), job

    async def test_video_completes_with_a_thumbnail(self, api: Api) -> None:
        user = await api.user()
        body = await api.started(
            user, type="video", model=VIDEO_MODEL, prompt=tagged("a wave")
        )

        done = await api.finished(user, body["id"])

        assert done["status"] == "completed", done
        assert done["type"] == "video"
        assert done["thumbnailUrl"]
        assert done["thumbnail_url"] == done["thumbnailUrl"]

    async def test_unknown_model_is_refused_and_charges_nothing(self, api: Api) -> None:
        user = await api.user()
        start, _ = await api.balance(user)

        response = await api.generate(
            user, type="image", model="fal-nope", prompt="a fox"
        )

        assert response.status_code in {400, 404}, response.text
        assert_error(response, response.status_code)
        assert await api.balance(user) == (start, 0)


class TestCredits:
    async def test_twenty_parallel_requests_against_credits_for_five(
        self, api: Api
    ) -> None:
        user = await api.user()
        prompt = tagged("parallel")
        await api.fault("never_finishes", prompt)
        price = await api.price(IMAGE_MODEL)
        price_micros = round(price * MICROS)
        await api.set_balance(user, 5 * price_micros + price_micros // 2)

        responses = await asyncio.gather(
            *(
                api.generate(user, type="image", model=IMAGE_MODEL, prompt=prompt)
                for _ in range(20)
            )
        )

        statuses = sorted(response.status_code for response in responses)
        assert statuses == [201] * 5 + [402] * 15
        refused = [r for r in responses if r.status_code == 402]
        for response in refused:
            body = assert_error(response, 402, "insufficient_credits")
            assert body["required"] == pytest.approx(price)
            assert 0 <= body["available"] < price
        credits, held = await api.balance(user)
        assert credits * MICROS == pytest.approx(price_micros // 2, abs=1)
        assert held == pytest.approx(5 * price)

    async def test_workspace_pool_pays_and_own_balance_is_not_shown(
        self, api: Api
    ) -> None:
        owner, member = await api.user(), await api.user()
        workspace_id = await team_workspace(api.http, owner, member)
        added = await api.http.post(
            f"/api/workspaces/{workspace_id}/credits/add",
            json={"amount": 1.0},
            headers=owner.auth,
        )
        assert added.status_code == 201, added.text
        start, _ = await api.balance(member)

        body = await api.started(
            member,
            type="image",
            model=IMAGE_MODEL,
            prompt=tagged("on the house"),
            workspaceId=workspace_id,
        )

        assert body["creditSource"] == "workspace"
        assert body["remainingCredits"] == pytest.approx(1.0 - body["credits"])
        assert "userCredits" not in body
        assert "newCredits" not in body
        assert body["generations"][0]["workspaceId"] == workspace_id
        assert await api.balance(member) == (start, 0)

    async def test_retry_with_the_same_key_answers_the_first_result(
        self, api: Api
    ) -> None:
        user = await api.user()
        start, _ = await api.balance(user)
        key = f"click-{uuid.uuid4()}"
        body = {"type": "image", "model": IMAGE_MODEL, "prompt": tagged("retry")}

        first = await api.generate(user, key, **body)
        again = await api.generate(user, key, **body)

        assert (first.status_code, again.status_code) == (201, 201)
        assert again.headers.get("idempotent-replayed") == "true"
        assert [g["id"] for g in again.json()["generations"]] == [
            g["id"] for g in first.json()["generations"]
        ]
        assert again.json()["credits"] == first.json()["credits"]
        await api.finished(user, first.json()["id"])
        settled = await api.settled_balance(user)
        assert settled == pytest.approx(start - first.json()["credits"])

    async def test_same_key_with_another_request_is_a_conflict(self, api: Api) -> None:
        user = await api.user()
        key = f"click-{uuid.uuid4()}"
        await api.started(user, type="image", model=IMAGE_MODEL, prompt="a fox")
        first = await api.generate(
            user, key, type="image", model=IMAGE_MODEL, prompt="a cat"
        )
        assert first.status_code == 201, first.text

        response = await api.generate(
            user, key, type="image", model=IMAGE_MODEL, prompt="a dog"
        )

        assert_error(response, 409, "idempotency_key_reused")


class TestFailures:
    async def test_provider_failure_fails_it_and_gives_the_credits_back(
        self, api: Api
    ) -> None:
        user = await api.user()
        start, _ = await api.balance(user)
        prompt = tagged("refused")
        await api.fault("content_violation", prompt)

        body = await api.started(user, type="image", model=IMAGE_MODEL, prompt=prompt)
        done = await api.finished(user, body["id"])

        assert done["status"] == "failed", done
        assert done["errorType"] == "content_violation"
        assert done["error"]
        assert await api.settled_balance(user) == pytest.approx(start)

    async def test_provider_errors_on_submit_give_the_credits_back(
        self, api: Api
    ) -> None:
        user = await api.user()
        start, _ = await api.balance(user)
        prompt = tagged("unprocessable")
        await api.fault("submit_422", prompt)

        body = await api.started(user, type="image", model=IMAGE_MODEL, prompt=prompt)
        done = await api.finished(user, body["id"])

        assert done["status"] == "failed", done
        assert await api.settled_balance(user) == pytest.approx(start)

    async def test_timeout_fails_it_and_gives_the_credits_back(
        self, api: Api, one_second_model: str
    ) -> None:
        user = await api.user()
        start, _ = await api.balance(user)
        prompt = tagged("too slow")
        await api.fault("never_finishes", prompt)

        body = await api.started(
            user, type="image", model=one_second_model, prompt=prompt
        )
        done = await api.finished(user, body["id"])

        assert done["maxWaitTime"] == 1
        assert (done["status"], done["errorType"]) == ("failed", "timeout")
        assert await api.settled_balance(user) == pytest.approx(start)


class TestCancel:
    async def test_cancel_while_queued_gives_the_credits_back(self, api: Api) -> None:
        user = await api.user()
        start, _ = await api.balance(user)
        prompt = tagged("cancel me")
        await api.fault("never_finishes", prompt)
        body = await api.started(user, type="image", model=IMAGE_MODEL, prompt=prompt)

        response = await api.http.post(
            f"/api/generations/{body['id']}/cancel", headers=user.auth
        )

        assert response.status_code == 200, response.text
        cancelled = response.json()
        assert cancelled["success"] is True
        assert cancelled["creditsRefunded"] == pytest.approx(body["credits"])
        assert cancelled["generation"]["status"] == "cancelled"
        assert ISO_MILLIS.match(cancelled["generation"]["cancelledAt"])
        assert await api.settled_balance(user) == pytest.approx(start)

    async def test_cancel_of_a_finished_generation_is_refused(self, api: Api) -> None:
        user = await api.user()
        generation = await api.completed_image(user)

        response = await api.http.post(
            f"/api/generations/{generation['id']}/cancel", headers=user.auth
        )

        assert_error(response, 409, "failed_precondition")


class TestUpscale:
    async def test_quote_names_the_upscaler_and_the_source_type(self, api: Api) -> None:
        user = await api.user()
        source = await api.completed_image(user)
        options = {"scale_factor": "4", "creativity": "5"}

        response = await api.http.post(
            "/api/upscale/calculate",
            json={
                "generationId": source["id"],
                "modelId": UPSCALER,
                "options": options,
            },
            headers=user.auth,
        )

        assert response.status_code == 200, response.text
        quote = response.json()
        assert quote == {
            "price": pytest.approx(await api.price(UPSCALER, options)),
            "basePrice": quote["basePrice"],
            "model": "Crystal Upscaler",
            "modelId": UPSCALER,
            "sourceType": "image",
        }
        assert isinstance(quote["price"], int | float)
        assert isinstance(quote["basePrice"], int | float)

    async def test_quote_for_another_users_generation_is_not_found(
        self, api: Api
    ) -> None:
        owner, other = await api.user(), await api.user()
        source = await api.completed_image(owner)

        response = await api.http.post(
            "/api/upscale/calculate",
            json={"generationId": source["id"], "modelId": UPSCALER},
            headers=other.auth,
        )

        body = assert_error(response, 404, "not_found")
        assert body["message"] == "Source generation not found."

    async def test_quote_with_a_model_that_is_no_upscaler_is_refused(
        self, api: Api
    ) -> None:
        user = await api.user()
        source = await api.completed_image(user)

        response = await api.http.post(
            "/api/upscale/calculate",
            json={"generationId": source["id"], "modelId": IMAGE_MODEL},
            headers=user.auth,
        )

        body = assert_error(response, 400, "invalid_argument")
        assert [d["field"] for d in body["details"]] == ["modelId"]

    async def test_upscale_of_a_completed_image_completes(self, api: Api) -> None:
        user = await api.user()
        source = await api.completed_image(user)
        start, _ = await api.balance(user)

        response = await api.http.post(
            "/api/upscale",
            json={"generationId": source["id"], "options": {"scale_factor": 2}},
            headers=user.auth,
        )

        assert response.status_code == 201, response.text
        body = response.json()
        [upscale] = body["generations"]
        assert (upscale["type"], upscale["modelId"]) == ("upscale", UPSCALER)
        assert upscale["sourceGenerationId"] == source["id"]
        assert body["userCredits"] == pytest.approx(start - body["credits"])
        done = await api.finished(user, body["id"])
        assert done["status"] == "completed", done
        assert done["result"]
        assert done["result"] != source["result"]

    async def test_upscale_of_an_unfinished_generation_is_refused(
        self, api: Api
    ) -> None:
        user = await api.user()
        prompt = tagged("still running")
        await api.fault("never_finishes", prompt)
        source = await api.started(user, type="image", model=IMAGE_MODEL, prompt=prompt)

        response = await api.http.post(
            "/api/upscale", json={"generationId": source["id"]}, headers=user.auth
        )

        assert_error(response, 409, "failed_precondition")


async def read_events(
    response: httpx.Response,
) -> AsyncIterator[tuple[str, dict[str, Any] | None]]:
    """(kind, generation) per event, ("comment", None) per comment line."""
    buffer = ""
    async for chunk in response.aiter_text():
        buffer += chunk
        while "\n\n" in buffer:
            frame, buffer = buffer.split("\n\n", 1)
            if frame.startswith(":"):
                yield "comment", None
                continue
            kind_line, data_line = frame.split("\n")
            assert kind_line.startswith("event: ")
            assert data_line.startswith("data: ")
            yield kind_line[7:], json.loads(data_line[6:])


class TestEvents:
    async def test_stream_follows_it_to_completed_with_outputs(self, api: Api) -> None:
        user = await api.user()
        prompt = tagged("watched")
        await api.fault("never_finishes", prompt)
        body = await api.started(user, type="image", model=IMAGE_MODEL, prompt=prompt)
        seen: list[tuple[str, dict[str, Any]]] = []

        async with api.http.stream(
            "GET", f"/api/generations/{body['id']}/events", headers=user.auth
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache, no-transform"
            assert response.headers["x-accel-buffering"] == "no"
            async for kind, generation in read_events(response):
                assert generation is not None
                seen.append((kind, generation))
                if generation["status"] == "processing" and not any(
                    g["status"] == "processing" for _, g in seen[:-1]
                ):
                    job = await api.submitted(prompt)
                    await api.fal.post(f"/simulator/jobs/{job['id']}/complete")

        kinds = [kind for kind, _ in seen]
        statuses = [generation["status"] for _, generation in seen]
        assert kinds[0] == "snapshot"
        assert statuses[0] in {"pending", "processing"}
        assert "processing" in statuses
        assert statuses[-1] == "completed"
        order = ["pending", "processing", "completed"]
        assert statuses == sorted(statuses, key=order.index)
        assert seen[-1][1]["result"]
        assert seen[-1][1].keys() == GENERATION_FIELDS

    async def test_finished_generation_is_one_snapshot(self, api: Api) -> None:
        user = await api.user()
        generation = await api.completed_image(user)

        async with api.http.stream(
            "GET", f"/api/generations/{generation['id']}/events", headers=user.auth
        ) as response:
            events = [event async for event in read_events(response)]

        assert [(kind, g and g["status"]) for kind, g in events] == [
            ("snapshot", "completed")
        ]

    async def test_quiet_stream_sends_keep_alive_comments(
        self, api: Api, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(generation_routes, "KEEP_ALIVE_SECONDS", 0.1)
        user = await api.user()
        prompt = tagged("quiet")
        await api.fault("never_finishes", prompt)
        body = await api.started(user, type="image", model=IMAGE_MODEL, prompt=prompt)
        await api.submitted(prompt)
        kinds: list[str] = []

        async with api.http.stream(
            "GET", f"/api/generations/{body['id']}/events", headers=user.auth
        ) as response:
            async for kind, _ in read_events(response):
                kinds.append(kind)
                if kind == "comment" and kinds.count("comment") == 2:
                    cancelled = await api.http.post(
                        f"/api/generations/{body['id']}/cancel", headers=user.auth
                    )
                    assert cancelled.status_code == 200, cancelled.text

        assert kinds[0] == "snapshot"
        assert kinds.count("comment") >= 2
        assert kinds[-1] == "status"

    async def test_leaving_the_stream_ends_the_watch_in_the_service(
        self, api: Api, generation_service: GenerationProcess
    ) -> None:
        user = await api.user()
        prompt = tagged("left")
        await api.fault("never_finishes", prompt)
        body = await api.started(user, type="image", model=IMAGE_MODEL, prompt=prompt)

        async with api.http.stream(
            "GET", f"/api/generations/{body['id']}/events", headers=user.auth
        ) as response:
            async for kind, _ in read_events(response):
                assert kind == "snapshot"
                break
            assert watchers(generation_service, body["id"]) == 1

        started = time.monotonic()
        while watchers(generation_service, body["id"]):
            assert time.monotonic() - started < 2.0, "the watch goes on"
            await asyncio.sleep(0.02)


def watchers(process: GenerationProcess, generation_id: str) -> int:
    """Watches of a generation the service is serving now (its event hub's
    subscriptions)."""
    hub = process._events
    assert hub is not None
    return len(hub._waiters.get(generation_id, ()))


class TestOwnership:
    @pytest.mark.parametrize(
        ("method", "suffix", "body"),
        [
            ("GET", "", None),
            ("DELETE", "", None),
            ("POST", "/cancel", None),
            ("PATCH", "/share", {"sharedWithWorkspace": True}),
            ("GET", "/events", None),
        ],
    )
    async def test_another_users_generation_is_not_found(
        self,
        api: Api,
        two_users: tuple[SignedInUser, SignedInUser],
        method: str,
        suffix: str,
        body: dict[str, Any] | None,
    ) -> None:
        owner, other = two_users
        prompt = tagged("mine")
        await api.fault("never_finishes", prompt)
        created = await api.started(
            owner, type="image", model=IMAGE_MODEL, prompt=prompt
        )

        response = await api.http.request(
            method,
            f"/api/generations/{created['id']}{suffix}",
            json=body,
            headers=other.auth,
        )

        error = assert_error(response, 404, "not_found")
        assert error["message"] == "Generation not found."
        kept = await api.get(owner, created["id"])
        assert kept["status"] in {"pending", "processing"}
        assert kept["sharedWithWorkspace"] is False

    async def test_bulk_delete_with_a_foreign_id_deletes_nothing(
        self, api: Api, two_users: tuple[SignedInUser, SignedInUser]
    ) -> None:
        owner, other = two_users
        mine, theirs = await asyncio.gather(
            api.completed_image(owner), api.completed_image(other)
        )

        response = await api.http.post(
            "/api/generations/bulk-delete",
            json={"ids": [mine["id"], theirs["id"]]},
            headers=owner.auth,
        )

        error = assert_error(response, 403, "permission_denied")
        assert error["message"].startswith("Some generations do not exist")
        await api.get(owner, mine["id"])
        await api.get(other, theirs["id"])


class TestDelete:
    async def test_delete_answers_success_and_it_is_gone(self, api: Api) -> None:
        user = await api.user()
        generation = await api.completed_image(user)

        response = await api.http.delete(
            f"/api/generations/{generation['id']}", headers=user.auth
        )

        assert response.status_code == 200, response.text
        assert response.json() == {"success": True, "message": "Generation deleted"}
        gone = await api.http.get(
            f"/api/generations/{generation['id']}", headers=user.auth
        )
        assert_error(gone, 404, "not_found")

    async def test_bulk_delete_of_own_generations_deletes_them_all(
        self, api: Api
    ) -> None:
        user = await api.user()
        ids = [g["id"] for g in await api.images(user, 2)]

        response = await api.http.post(
            "/api/generations/bulk-delete", json={"ids": ids}, headers=user.auth
        )

        assert response.status_code == 200, response.text
        assert response.json() == {"success": True, "deleted": 2}
        for generation_id in ids:
            gone = await api.http.get(
                f"/api/generations/{generation_id}", headers=user.auth
            )
            assert_error(gone, 404, "not_found")

    async def test_deleting_a_running_generation_gives_its_credits_back(
        self, api: Api
    ) -> None:
        user = await api.user()
        start, _ = await api.balance(user)
        prompt = tagged("delete while running")
        await api.fault("never_finishes", prompt)
        created = await api.started(
            user, type="image", model=IMAGE_MODEL, prompt=prompt
        )

        response = await api.http.delete(
            f"/api/generations/{created['id']}", headers=user.auth
        )

        assert response.status_code == 200, response.text
        assert await api.settled_balance(user) == pytest.approx(start)


class TestList:
    async def test_lists_newest_first_with_counts_per_type(self, api: Api) -> None:
        user = await api.user()
        first, second = await api.images(user, 2)
        video = await api.started(
            user, type="video", model=VIDEO_MODEL, prompt=tagged("clip")
        )

        response = await api.http.get("/api/generations", headers=user.auth)

        assert response.status_code == 200, response.text
        body = response.json()
        assert [g["id"] for g in body["generations"]] == [
            video["id"],
            second["id"],
            first["id"],
        ]
        assert body["counts"] == {"image": 2, "video": 1}
        assert body["nextCursor"] is None
        assert response.headers["cache-control"] == "no-store"

    async def test_web_clients_call_with_the_personal_workspace(self, api: Api) -> None:
        user = await api.user()
        personal = user.body["defaultWorkspace"]["id"]
        [made] = await api.images(user, 1)

        response = await api.http.get(
            "/api/generations",
            params={"limit": 100, "workspaceId": personal},
            headers=user.auth,
        )

        assert response.status_code == 200, response.text
        [listed] = response.json()["generations"]
        assert listed["id"] == made["id"]
        assert listed["workspaceId"] == personal
        assert response.json()["counts"]["image"] == 1

    async def test_cursor_pages_cover_everything_once(self, api: Api) -> None:
        user = await api.user()
        ids = [g["id"] for g in await api.images(user, 3)]

        first = (
            await api.http.get(
                "/api/generations", params={"limit": 2}, headers=user.auth
            )
        ).json()
        second = (
            await api.http.get(
                "/api/generations",
                params={"limit": 2, "cursor": first["nextCursor"]},
                headers=user.auth,
            )
        ).json()

        listed = [g["id"] for g in first["generations"] + second["generations"]]
        assert listed == list(reversed(ids))
        assert second["nextCursor"] is None

    async def test_offset_and_filters(self, api: Api) -> None:
        user = await api.user()
        ids = [g["id"] for g in await api.images(user, 3)]
        await api.started(user, type="video", model=VIDEO_MODEL, prompt=tagged("v"))
        await api.finished(user, ids[1])

        images = await api.http.get(
            "/api/generations",
            params={"type": "image", "offset": 1, "limit": 1},
            headers=user.auth,
        )
        completed = await api.http.get(
            "/api/generations",
            params={"status": "completed", "type": "image"},
            headers=user.auth,
        )

        assert [g["id"] for g in images.json()["generations"]] == [ids[1]]
        assert ids[1] in [g["id"] for g in completed.json()["generations"]]
        assert {g["status"] for g in completed.json()["generations"]} == {"completed"}

    async def test_another_users_generations_are_not_listed(self, api: Api) -> None:
        owner, other = await api.user(), await api.user()
        await api.images(owner, 1)

        response = await api.http.get("/api/generations", headers=other.auth)

        assert response.json()["generations"] == []


class TestSharing:
    async def test_shared_generation_shows_in_the_workspace_gallery(
        self, api: Api
    ) -> None:
        owner, member, outsider = [await api.user() for _ in range(3)]
        workspace_id = await team_workspace(api.http, owner, member)
        created = await api.started(
            member,
            type="image",
            model=IMAGE_MODEL,
            prompt=tagged("for the team"),
            workspaceId=workspace_id,
        )
        await api.finished(member, created["id"])

        shared = await api.http.patch(
            f"/api/generations/{created['id']}/share",
            json={"sharedWithWorkspace": True},
            headers=member.auth,
        )

        assert shared.status_code == 200, shared.text
        assert shared.json() == {"success": True, "sharedWithWorkspace": True}
        gallery = await api.http.get(
            f"/api/workspaces/{workspace_id}/gallery", headers=owner.auth
        )
        assert gallery.status_code == 200, gallery.text
        assert [g["id"] for g in gallery.json()["generations"]] == [created["id"]]
        assert gallery.json()["nextCursor"] is None
        refused = await api.http.get(
            f"/api/workspaces/{workspace_id}/gallery", headers=outsider.auth
        )
        assert_error(refused, 404, "not_found")

    async def test_unshared_generation_is_not_in_the_gallery(self, api: Api) -> None:
        owner, member = await api.user(), await api.user()
        workspace_id = await team_workspace(api.http, owner, member)
        created = await api.started(
            member,
            type="image",
            model=IMAGE_MODEL,
            prompt=tagged("private"),
            workspaceId=workspace_id,
        )
        await api.finished(member, created["id"])

        gallery = await api.http.get(
            f"/api/workspaces/{workspace_id}/gallery", headers=owner.auth
        )

        assert gallery.json()["generations"] == []


async def team_workspace(
    http: httpx.AsyncClient, owner: SignedInUser, member: SignedInUser
) -> str:
    """A workspace of `owner` that `member` joined, whose members see each
    other's images."""
    created = await http.post(
        "/api/workspaces", json={"name": "Studio"}, headers=owner.auth
    )
    assert created.status_code == 201, created.text
    workspace_id: str = created.json()["id"]
    # Members see each other's shared images only when the owner allows it.
    visible = await http.patch(
        f"/api/workspaces/{workspace_id}",
        json={"privacySettings": {"imageVisibility": "members"}},
        headers=owner.auth,
    )
    assert visible.status_code == 200, visible.text
    invite = await http.post(
        f"/api/workspaces/{workspace_id}/invite",
        json={"email": member.email},
        headers=owner.auth,
    )
    joined = await http.post(
        f"/api/workspaces/join/{invite.json()['token']}", headers=member.auth
    )
    assert joined.status_code == 201, joined.text
    return workspace_id


class TestFalWebhook:
    async def test_forged_signature_is_refused(self, api: Api) -> None:
        body = b'{"request_id": "r-1", "status": "OK", "payload": {}}'
        headers = api.simulator.signature("r-1", body)
        headers["X-Fal-Webhook-Signature"] = "00" * 64

        response = await api.http.post(
            "/api/webhooks/fal", content=body, headers=headers
        )

        assert_error(response, 401, "unauthenticated")

    async def test_unsigned_delivery_is_refused(self, api: Api) -> None:
        response = await api.http.post(
            "/api/webhooks/fal", json={"request_id": "r-2", "status": "OK"}
        )

        assert_error(response, 401, "unauthenticated")

    async def test_delivery_for_a_finished_job_is_acknowledged(self, api: Api) -> None:
        user = await api.user()
        generation = await api.completed_image(user)
        request_id = generation["externalRequestId"]
        # Spacing and key order as fal's own: the signature covers these bytes.
        body = (
            b'{"request_id":  "' + request_id.encode() + b'", "status": "OK",'
            b' "payload": {"images": []}}'
        )

        for _ in range(2):
            response = await api.http.post(
                "/api/webhooks/fal",
                content=body,
                headers={
                    "Content-Type": "application/json",
                    **api.simulator.signature(request_id, body),
                },
            )
            assert response.status_code == 200, response.text
            assert response.json() == {"ok": True}
        assert (await api.get(user, generation["id"]))["status"] == "completed"
