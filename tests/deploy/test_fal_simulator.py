"""The fal simulator speaks fal's queue protocol: submit, status, result,
cancel, fal's error shapes, rendered media and ED25519-signed webhooks,
over loopback HTTP."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from PIL import Image, ImageSequence
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from deploy.simulators.fal import create_app
from tests.suite import ServedApp, serve_asgi

KEY = "fal-simulator-test-key"
USER_ID = "omnihub-test-account"
FLUX_DEV = "fal-ai/flux/dev"

StartFal = Callable[..., Awaitable[ServedApp]]


@dataclass
class Delivery:
    headers: httpx.Headers
    body: bytes

    @property
    def document(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.body)
        return document


@dataclass
class WebhookReceiver:
    """Our webhook endpoint as fal sees it: records each delivery."""

    url: str = ""
    deliveries: list[Delivery] = field(default_factory=list)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def receive(self, request: Request) -> JSONResponse:
        body = await request.body()
        async with self.arrived:
            self.deliveries.append(Delivery(httpx.Headers(request.headers), body))
            self.arrived.notify_all()
        return JSONResponse({"received": True})

    async def wait_for(self, count: int) -> list[Delivery]:
        async with asyncio.timeout(5), self.arrived:
            await self.arrived.wait_for(lambda: len(self.deliveries) >= count)
        return self.deliveries


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    app = Starlette(routes=[Route("/webhook", receiver.receive, methods=["POST"])])
    served = await serve_asgi(app)
    receiver.url = f"{served.url}/webhook"
    yield receiver
    await served.stop()


@pytest.fixture
async def start_fal() -> AsyncIterator[StartFal]:
    started: list[ServedApp] = []

    async def start(**options: Any) -> ServedApp:
        served = await serve_asgi(create_app(key=KEY, user_id=USER_ID, **options))
        started.append(served)
        return served

    yield start
    for served in started:
        await served.stop()


@pytest.fixture
async def fal(start_fal: StartFal) -> ServedApp:
    return await start_fal()


@pytest.fixture
async def api(fal: ServedApp) -> AsyncIterator[httpx.AsyncClient]:
    async with fal.client(headers={"Authorization": f"Key {KEY}"}) as client:
        yield client


async def submit(
    api: httpx.AsyncClient, endpoint: str = FLUX_DEV, **payload: Any
) -> dict[str, Any]:
    response = await api.post(f"/{endpoint}", json={"prompt": "a cat", **payload})
    assert response.status_code == 200, response.text
    receipt: dict[str, Any] = response.json()
    return receipt


async def set_fault(api: httpx.AsyncClient, **fault: Any) -> None:
    response = await api.post("/simulator/faults", json=fault)
    assert response.status_code == 200, response.text


async def fetch_image(api: httpx.AsyncClient, url: str) -> Image.Image:
    response = await api.get(url)
    assert response.status_code == 200
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image


def jwks_key(document: dict[str, Any]) -> Ed25519PublicKey:
    encoded: str = document["keys"][0]["x"]
    raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    return Ed25519PublicKey.from_public_bytes(raw)


class TestSubmit:
    async def test_receipt_urls_name_owner_and_app_without_the_subpath(
        self, api: httpx.AsyncClient, fal: ServedApp
    ) -> None:
        response = await api.post(f"/{FLUX_DEV}", json={"prompt": "a cat"})

        receipt = response.json()
        request_id = receipt["request_id"]
        base = f"{fal.url}/fal-ai/flux/requests/{request_id}"
        assert response.headers["x-simulated"] == "true"
        assert receipt["gateway_request_id"] == request_id
        assert receipt["status_url"] == f"{base}/status"
        assert receipt["response_url"] == base
        assert receipt["cancel_url"] == f"{base}/cancel"
        assert receipt["queue_position"] == 0

    async def test_submit_without_key_is_refused(self, fal: ServedApp) -> None:
        async with fal.client() as client:
            response = await client.post(f"/{FLUX_DEV}", json={"prompt": "a cat"})

        assert response.status_code == 401
        assert "Authorization: Key" in response.json()["detail"]

    async def test_submit_with_another_key_is_refused(self, fal: ServedApp) -> None:
        async with fal.client(headers={"Authorization": "Key wrong"}) as client:
            response = await client.post(f"/{FLUX_DEV}", json={"prompt": "a cat"})

        assert response.status_code == 401

    async def test_missing_prompt_is_a_typed_validation_error(
        self, api: httpx.AsyncClient
    ) -> None:
        response = await api.post(f"/{FLUX_DEV}", json={"num_images": 1})

        assert response.status_code == 422
        assert response.json()["detail"] == [
            {"loc": ["body", "prompt"], "msg": "Field required", "type": "missing"}
        ]

    async def test_more_than_four_images_is_a_validation_error(
        self, api: httpx.AsyncClient
    ) -> None:
        response = await api.post(
            f"/{FLUX_DEV}", json={"prompt": "a cat", "num_images": 5}
        )

        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "num_images"]


class TestStatus:
    async def test_finished_job_is_completed_with_200(
        self, api: httpx.AsyncClient
    ) -> None:
        receipt = await submit(api)

        response = await api.get(receipt["status_url"])

        assert response.status_code == 200
        assert response.json()["status"] == "COMPLETED"

    async def test_waiting_jobs_report_how_many_are_ahead(
        self, start_fal: StartFal
    ) -> None:
        fal = await start_fal(queue_seconds=5.0)
        async with fal.client(headers={"Authorization": f"Key {KEY}"}) as api:
            receipts = [await submit(api, prompt=f"job {n}") for n in range(3)]
            await api.put(receipts[0]["cancel_url"])

            response = await api.get(receipts[2]["status_url"])

        assert [receipt["queue_position"] for receipt in receipts] == [0, 1, 2]
        assert response.status_code == 202
        assert response.json()["status"] == "IN_QUEUE"
        assert response.json()["queue_position"] == 1

    async def test_running_job_shows_logs_only_when_asked(
        self, api: httpx.AsyncClient
    ) -> None:
        await set_fault(api, mode="never_finishes", prompt_contains="endless")
        receipt = await submit(api, prompt="an endless river")

        plain = await api.get(receipt["status_url"])
        with_logs = await api.get(receipt["status_url"], params={"logs": "1"})

        assert plain.status_code == with_logs.status_code == 202
        assert plain.json()["status"] == "IN_PROGRESS"
        assert plain.json()["logs"] is None
        messages = [entry["message"] for entry in with_logs.json()["logs"]]
        assert messages[-1] == "Generating"

    async def test_status_url_with_the_subpath_is_not_found(
        self, api: httpx.AsyncClient
    ) -> None:
        receipt = await submit(api)

        request_id = receipt["request_id"]
        response = await api.get(f"/{FLUX_DEV}/requests/{request_id}/status")

        assert response.status_code == 404

    async def test_status_without_key_is_refused(
        self, api: httpx.AsyncClient, fal: ServedApp
    ) -> None:
        receipt = await submit(api)

        async with fal.client() as anonymous:
            response = await anonymous.get(receipt["status_url"])

        assert response.status_code == 401


class TestResult:
    async def test_image_model_answers_the_requested_number_of_pngs(
        self, api: httpx.AsyncClient
    ) -> None:
        receipt = await submit(api, num_images=2, image_size="landscape_16_9")

        result = (await api.get(receipt["response_url"])).json()

        assert result["simulated"] is True
        assert result["has_nsfw_concepts"] == [False, False]
        assert len({entry["url"] for entry in result["images"]}) == 2
        for entry in result["images"]:
            image = await fetch_image(api, entry["url"])
            assert image.format == "PNG"
            assert image.size == (entry["width"], entry["height"])
            assert image.width > image.height

    async def test_video_model_answers_an_animated_clip_and_thumbnail(
        self, api: httpx.AsyncClient
    ) -> None:
        receipt = await submit(
            api, "fal-ai/kling-video/v2.6/pro/text-to-video", duration="5"
        )

        video = (await api.get(receipt["response_url"])).json()["video"]

        clip = await fetch_image(api, video["url"])
        thumbnail = await fetch_image(api, video["thumbnail_url"])
        assert video["content_type"] == "image/gif"
        assert clip.format == "GIF"
        assert sum(1 for _ in ImageSequence.Iterator(clip)) == 8
        assert thumbnail.size == clip.size

    async def test_image_endpoint_of_a_video_family_answers_images(
        self, api: httpx.AsyncClient
    ) -> None:
        receipt = await submit(api, "wan/v2.6/text-to-image")

        result = (await api.get(receipt["response_url"])).json()

        assert len(result["images"]) == 1

    async def test_upscaler_enlarges_the_source_image(
        self, api: httpx.AsyncClient
    ) -> None:
        source = (await api.get((await submit(api))["response_url"])).json()
        source_entry = source["images"][0]

        receipt = await submit(
            api,
            "clarityai/crystal-upscaler",
            image_url=source_entry["url"],
            scale_factor=2,
        )
        result = (await api.get(receipt["response_url"])).json()

        image = await fetch_image(api, result["image"]["url"])
        assert image.size == (source_entry["width"] * 2, source_entry["height"] * 2)

    async def test_result_of_an_unfinished_job_is_refused(
        self, api: httpx.AsyncClient
    ) -> None:
        await set_fault(api, mode="never_finishes", prompt_contains="endless")
        receipt = await submit(api, prompt="endless dunes")

        response = await api.get(receipt["response_url"])

        assert response.status_code == 400


class TestCancel:
    async def test_cancelled_running_job_ends_without_a_result(
        self, api: httpx.AsyncClient
    ) -> None:
        await set_fault(api, mode="never_finishes", prompt_contains="endless")
        receipt = await submit(api, prompt="endless stairs")

        cancel = await api.put(receipt["cancel_url"])
        status = await api.get(receipt["status_url"])
        result = await api.get(receipt["response_url"])

        assert cancel.status_code == 202
        assert cancel.json() == {"status": "CANCELLATION_REQUESTED"}
        assert status.status_code == 200
        assert status.json()["status"] == "COMPLETED"
        assert result.status_code == 400
        assert result.json() == {"detail": "Request was cancelled"}

    async def test_cancel_after_completion_answers_already_completed(
        self, api: httpx.AsyncClient
    ) -> None:
        receipt = await submit(api)

        response = await api.put(receipt["cancel_url"])

        assert response.status_code == 400
        assert response.json() == {"status": "ALREADY_COMPLETED"}


class TestFaults:
    async def test_fault_applies_only_to_prompts_with_its_marker(
        self, api: httpx.AsyncClient
    ) -> None:
        await set_fault(api, mode="submit_500", prompt_contains="[boom]")

        calm = await api.post(f"/{FLUX_DEV}", json={"prompt": "a calm lake"})
        boom = await api.post(f"/{FLUX_DEV}", json={"prompt": "a lake [boom]"})

        assert calm.status_code == 200
        assert boom.status_code == 500

    async def test_counted_fault_wears_off(self, api: httpx.AsyncClient) -> None:
        await set_fault(api, mode="submit_422", times=1)

        first = await api.post(f"/{FLUX_DEV}", json={"prompt": "a cat"})
        second = await api.post(f"/{FLUX_DEV}", json={"prompt": "a cat"})

        assert first.status_code == 422
        assert first.json()["detail"][0]["loc"] == ["body", "prompt"]
        assert second.status_code == 200

    async def test_status_500_with_failures_spoils_only_the_first_calls(
        self, api: httpx.AsyncClient
    ) -> None:
        await set_fault(api, mode="status_500", failures=1)
        receipt = await submit(api)

        first = await api.get(receipt["status_url"])
        second = await api.get(receipt["status_url"])

        assert first.status_code == 500
        assert second.status_code == 200

    async def test_malformed_result_is_cut_off_json(
        self, api: httpx.AsyncClient
    ) -> None:
        await set_fault(api, mode="malformed")
        receipt = await submit(api)

        response = await api.get(receipt["response_url"])

        assert response.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(response.text)

    async def test_content_violation_is_fals_typed_422(
        self, api: httpx.AsyncClient
    ) -> None:
        await set_fault(api, mode="content_violation")
        receipt = await submit(api)

        status = (await api.get(receipt["status_url"])).json()
        response = await api.get(receipt["response_url"])

        assert status["error_type"] == "content_policy_violation"
        assert response.status_code == 422
        assert response.json()["detail"][0]["type"] == "content_policy_violation"

    async def test_never_finishing_job_completes_on_demand(
        self, api: httpx.AsyncClient
    ) -> None:
        await set_fault(api, mode="never_finishes")
        receipt = await submit(api)

        finish = await api.post(f"/simulator/jobs/{receipt['request_id']}/complete")
        result = await api.get(receipt["response_url"])

        assert finish.json()["state"] == "COMPLETED"
        assert result.status_code == 200
        assert len(result.json()["images"]) == 1

    async def test_slow_job_runs_for_the_given_time(
        self, api: httpx.AsyncClient
    ) -> None:
        await set_fault(api, mode="slow", run_seconds=0.3)
        receipt = await submit(api)

        early = await api.get(receipt["status_url"])
        await asyncio.sleep(0.5)
        late = await api.get(receipt["status_url"])

        assert early.json()["status"] == "IN_PROGRESS"
        assert late.json()["status"] == "COMPLETED"

    async def test_request_log_lists_every_submission_and_its_answer(
        self, api: httpx.AsyncClient
    ) -> None:
        await set_fault(api, mode="submit_500", times=1, prompt_contains="[log]")
        await api.post(f"/{FLUX_DEV}", json={"prompt": "first [log]"})
        receipt = await submit(api, prompt="second [log]", seed=7)

        response = await api.get(
            "/simulator/requests", params={"prompt_contains": "[log]"}
        )

        items = response.json()["items"]
        assert [(item["prompt"], item["answer"]) for item in items] == [
            ("first [log]", 500),
            ("second [log]", 200),
        ]
        assert items[0]["id"] is None
        assert items[1]["id"] == receipt["request_id"]
        assert items[1]["endpoint"] == FLUX_DEV
        assert items[1]["payload_keys"] == ["prompt", "seed"]

    async def test_unknown_fault_mode_is_refused(self, api: httpx.AsyncClient) -> None:
        response = await api.post("/simulator/faults", json={"mode": "explode"})

        assert response.status_code == 400


class TestWebhooks:
    async def test_finished_job_sends_a_webhook_signed_with_the_jwks_key(
        self, api: httpx.AsyncClient, receiver: WebhookReceiver
    ) -> None:
        response = await api.post(
            f"/{FLUX_DEV}",
            params={"fal_webhook": receiver.url},
            json={"prompt": "a signed cat"},
        )
        request_id = response.json()["request_id"]

        [delivery] = await receiver.wait_for(1)
        jwks = (await api.get("/.well-known/jwks.json")).json()

        headers = delivery.headers
        message = "\n".join(
            (
                headers["x-fal-webhook-request-id"],
                headers["x-fal-webhook-user-id"],
                headers["x-fal-webhook-timestamp"],
                hashlib.sha256(delivery.body).hexdigest(),
            )
        ).encode()
        signature = bytes.fromhex(headers["x-fal-webhook-signature"])
        jwks_key(jwks).verify(signature, message)  # raises if forged
        assert jwks["keys"][0]["kty"] == "OKP"
        assert headers["x-fal-webhook-request-id"] == request_id
        assert headers["x-fal-webhook-user-id"] == USER_ID
        assert delivery.document["status"] == "OK"
        assert delivery.document["payload"]["images"][0]["url"]

    async def test_signature_does_not_verify_another_body(
        self, api: httpx.AsyncClient, receiver: WebhookReceiver
    ) -> None:
        await api.post(
            f"/{FLUX_DEV}",
            params={"fal_webhook": receiver.url},
            json={"prompt": "a cat"},
        )
        [delivery] = await receiver.wait_for(1)
        jwks = (await api.get("/.well-known/jwks.json")).json()

        headers = delivery.headers
        message = "\n".join(
            (
                headers["x-fal-webhook-request-id"],
                headers["x-fal-webhook-user-id"],
                headers["x-fal-webhook-timestamp"],
                hashlib.sha256(delivery.body + b" ").hexdigest(),
            )
        ).encode()
        with pytest.raises(InvalidSignature):
            jwks_key(jwks).verify(
                bytes.fromhex(headers["x-fal-webhook-signature"]), message
            )

    async def test_failed_job_webhook_reports_the_error(
        self, api: httpx.AsyncClient, receiver: WebhookReceiver
    ) -> None:
        await set_fault(api, mode="content_violation")

        await api.post(
            f"/{FLUX_DEV}",
            params={"fal_webhook": receiver.url},
            json={"prompt": "a cat"},
        )
        [delivery] = await receiver.wait_for(1)

        document = delivery.document
        assert document["status"] == "ERROR"
        assert document["error"] == "Invalid status code: 422"
        assert document["payload"]["detail"][0]["type"] == "content_policy_violation"

    async def test_no_webhook_fault_sends_nothing(
        self, api: httpx.AsyncClient, receiver: WebhookReceiver
    ) -> None:
        await set_fault(api, mode="no_webhook")

        receipt = (
            await api.post(
                f"/{FLUX_DEV}",
                params={"fal_webhook": receiver.url},
                json={"prompt": "a cat"},
            )
        ).json()
        await asyncio.sleep(0.2)

        status = await api.get(receipt["status_url"])
        assert status.json()["status"] == "COMPLETED"
        assert receiver.deliveries == []

    async def test_webhook_twice_delivers_the_same_event_twice(
        self, api: httpx.AsyncClient, receiver: WebhookReceiver
    ) -> None:
        await set_fault(api, mode="webhook_twice")

        await api.post(
            f"/{FLUX_DEV}",
            params={"fal_webhook": receiver.url},
            json={"prompt": "a cat"},
        )
        first, second = await receiver.wait_for(2)

        assert first.body == second.body
        log = (await api.get("/simulator/requests")).json()["items"]
        assert log[0]["webhook_deliveries"] == ["200", "200"]
