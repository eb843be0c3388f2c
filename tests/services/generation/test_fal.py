"""FalClient and WebhookVerifier against the fal simulator over loopback
HTTP: the queue protocol, error categories, retries, and webhook
signatures that must be fal's, fresh and ours."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from deploy.simulators.fal import create_app
from services.generation.fal import (
    FalClient,
    FalError,
    WebhookKeysUnavailable,
    WebhookRejected,
    WebhookVerifier,
    categorize,
    outputs_from_payload,
)
from tests.suite import ServedApp, free_port, serve_asgi

KEY = "fal-client-test-key"
USER_ID = "omnihub-test-account"
FLUX_DEV = "fal-ai/flux/dev"


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes


@dataclass
class WebhookReceiver:
    url: str = ""
    deliveries: list[Delivery] = field(default_factory=list)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def receive(self, request: Request) -> JSONResponse:
        body = await request.body()
        async with self.arrived:
            self.deliveries.append(Delivery(dict(request.headers), body))
            self.arrived.notify_all()
        return JSONResponse({"received": True})

    async def next_delivery(self) -> Delivery:
        async with asyncio.timeout(5), self.arrived:
            await self.arrived.wait_for(lambda: bool(self.deliveries))
        return self.deliveries[0]


@dataclass
class Fal:
    """A running simulator, a client for it and its signing key."""

    served: ServedApp
    client: FalClient
    signing_key: Ed25519PrivateKey

    @property
    def jwks_url(self) -> str:
        return f"{self.served.url}/.well-known/jwks.json"

    async def control(self, method: str, path: str, **body: Any) -> Any:
        async with self.served.client() as http:
            response = await http.request(method, path, json=body or None)
        assert response.status_code == 200, response.text
        return response.json()

    async def fault(self, **fault: Any) -> None:
        await self.control("POST", "/simulator/faults", **fault)

    async def submissions(self, prompt_contains: str) -> list[dict[str, Any]]:
        async with self.served.client() as http:
            response = await http.get(
                "/simulator/requests", params={"prompt_contains": prompt_contains}
            )
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    async def jwks_requests(self) -> int:
        keys = await self.control("GET", "/simulator/keys")
        count: int = keys["jwks_requests"]
        return count


StartFal = Callable[..., Awaitable[Fal]]


@pytest.fixture
async def start_fal() -> AsyncIterator[StartFal]:
    running: list[Fal] = []

    async def start(**options: Any) -> Fal:
        signing_key = Ed25519PrivateKey.generate()
        app = create_app(key=KEY, user_id=USER_ID, signing_key=signing_key, **options)
        served = await serve_asgi(app)
        fal = Fal(served, FalClient(queue_url=served.url, key=KEY), signing_key)
        running.append(fal)
        return fal

    yield start
    for fal in running:
        await fal.client.close()
        await fal.served.stop()


@pytest.fixture
async def fal(start_fal: StartFal) -> Fal:
    return await start_fal()


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    app = Starlette(routes=[Route("/fal", receiver.receive, methods=["POST"])])
    served = await serve_asgi(app)
    receiver.url = f"{served.url}/fal"
    yield receiver
    await served.stop()


class Clock:
    """Real time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def verifier(fal: Fal, clock: Clock) -> AsyncIterator[WebhookVerifier]:
    verifier = WebhookVerifier(jwks_url=fal.jwks_url, user_id=USER_ID, clock=clock)
    yield verifier
    await verifier.close()


async def delivered(fal: Fal, receiver: WebhookReceiver, prompt: str) -> Delivery:
    await fal.client.submit(FLUX_DEV, {"prompt": prompt}, webhook_url=receiver.url)
    return await receiver.next_delivery()


def signed_headers(
    key: Ed25519PrivateKey,
    body: bytes,
    *,
    request_id: str,
    user_id: str = USER_ID,
    timestamp: int | None = None,
) -> dict[str, str]:
    """Headers as fal would sign them, made by the test with any key."""
    sent_at = str(int(time.time()) if timestamp is None else timestamp)
    message = "\n".join(
        (request_id, user_id, sent_at, hashlib.sha256(body).hexdigest())
    ).encode()
    return {
        "x-fal-webhook-request-id": request_id,
        "x-fal-webhook-user-id": user_id,
        "x-fal-webhook-timestamp": sent_at,
        "x-fal-webhook-signature": key.sign(message).hex(),
    }


def webhook_document(request_id: str) -> bytes:
    document = {
        "request_id": request_id,
        "gateway_request_id": request_id,
        "status": "OK",
        "payload": {"images": [{"url": "https://fal.media/files/a.png"}]},
    }
    return json.dumps(document).encode()


class TestSubmit:
    async def test_submission_keeps_the_urls_fal_answered(self, fal: Fal) -> None:
        submission = await fal.client.submit(FLUX_DEV, {"prompt": "a cat"})

        base = f"{fal.served.url}/fal-ai/flux/requests/{submission.request_id}"
        assert submission.status_url == f"{base}/status"
        assert submission.response_url == base
        assert submission.cancel_url == f"{base}/cancel"
        assert submission.queue_position == 0
        assert submission.simulated is True

    async def test_webhook_url_is_passed_as_fal_webhook(
        self, fal: Fal, receiver: WebhookReceiver
    ) -> None:
        submission = await fal.client.submit(
            FLUX_DEV, {"prompt": "a cat"}, webhook_url=receiver.url
        )

        delivery = await receiver.next_delivery()
        assert delivery.headers["x-fal-webhook-request-id"] == submission.request_id

    async def test_submit_is_not_retried_after_a_server_error(self, fal: Fal) -> None:
        await fal.fault(mode="submit_500", times=1, prompt_contains="[once]")

        with pytest.raises(FalError) as raised:
            await fal.client.submit(FLUX_DEV, {"prompt": "a cat [once]"})

        assert raised.value.error_type == "api_error"
        assert raised.value.status == 500
        assert raised.value.retryable is True
        submissions = await fal.submissions("[once]")
        assert [item["answer"] for item in submissions] == [500]

    async def test_validation_refusal_is_invalid_input_naming_the_field(
        self, fal: Fal
    ) -> None:
        await fal.fault(mode="submit_422")

        with pytest.raises(FalError) as raised:
            await fal.client.submit(FLUX_DEV, {"prompt": "a cat"})

        assert raised.value.error_type == "invalid_input"
        assert raised.value.status == 422
        assert raised.value.retryable is False
        assert "prompt" in raised.value.message
        assert '"loc"' in raised.value.detail

    async def test_wrong_key_is_refused(self, fal: Fal) -> None:
        client = FalClient(queue_url=fal.served.url, key="not-the-key")

        with pytest.raises(FalError) as raised:
            await client.submit(FLUX_DEV, {"prompt": "a cat"})
        await client.close()

        assert raised.value.status == 401
        assert raised.value.retryable is False

    async def test_unreachable_fal_is_a_retryable_api_error(self) -> None:
        client = FalClient(queue_url=f"http://127.0.0.1:{free_port()}", key=KEY)

        with pytest.raises(FalError) as raised:
            await client.submit(FLUX_DEV, {"prompt": "a cat"})
        await client.close()

        # The connection was never made, so fal cannot hold the job.
        assert raised.value.error_type == "api_error"
        assert raised.value.retryable is True


class TestStatus:
    async def test_finished_job_is_completed(self, fal: Fal) -> None:
        submission = await fal.client.submit(FLUX_DEV, {"prompt": "a cat"})

        status = await fal.client.status(submission.status_url)

        assert status.state == "COMPLETED"
        assert status.error is None

    async def test_one_server_error_is_retried(self, fal: Fal) -> None:
        await fal.fault(mode="status_500", failures=1)
        submission = await fal.client.submit(FLUX_DEV, {"prompt": "a cat"})

        status = await fal.client.status(submission.status_url)

        assert status.state == "COMPLETED"

    async def test_three_server_errors_give_up_with_api_error(self, fal: Fal) -> None:
        await fal.fault(mode="status_500", failures=3)
        submission = await fal.client.submit(FLUX_DEV, {"prompt": "a cat"})

        with pytest.raises(FalError) as raised:
            await fal.client.status(submission.status_url)

        assert raised.value.error_type == "api_error"
        assert raised.value.retryable is True

    async def test_running_job_reports_its_last_log_line(self, fal: Fal) -> None:
        await fal.fault(mode="never_finishes")
        submission = await fal.client.submit(FLUX_DEV, {"prompt": "a cat"})

        status = await fal.client.status(submission.status_url)

        assert status.state == "IN_PROGRESS"
        assert status.progress == "Generating"

    async def test_waiting_job_reports_its_queue_position(
        self, start_fal: StartFal
    ) -> None:
        fal = await start_fal(queue_seconds=5.0)
        await fal.client.submit(FLUX_DEV, {"prompt": "first"})
        second = await fal.client.submit(FLUX_DEV, {"prompt": "second"})

        status = await fal.client.status(second.status_url)

        assert second.queue_position == 1
        assert status.state == "IN_QUEUE"
        assert status.queue_position == 1

    async def test_failed_job_status_carries_the_error(self, fal: Fal) -> None:
        await fal.fault(mode="content_violation")
        submission = await fal.client.submit(FLUX_DEV, {"prompt": "a cat"})

        status = await fal.client.status(submission.status_url)

        assert status.state == "COMPLETED"
        assert status.error is not None
        assert "content checker" in status.error

    async def test_url_on_another_host_is_refused_before_sending_the_key(
        self, fal: Fal
    ) -> None:
        with pytest.raises(FalError) as raised:
            await fal.client.status("http://attacker.invalid/requests/1/status")

        assert raised.value.error_type == "api_error"
        assert raised.value.retryable is False


class TestResult:
    async def test_images_come_back_in_order(self, fal: Fal) -> None:
        submission = await fal.client.submit(
            FLUX_DEV, {"prompt": "three cats", "num_images": 3}
        )

        outputs = await fal.client.result(submission.response_url)

        assert outputs.media == "image"
        assert outputs.thumbnail_url is None
        assert len(set(outputs.urls)) == 3
        async with httpx.AsyncClient() as http:
            for url in outputs.urls:
                response = await http.get(url)
                assert response.headers["content-type"] == "image/png"

    async def test_video_comes_back_with_its_thumbnail(self, fal: Fal) -> None:
        submission = await fal.client.submit(
            "fal-ai/veo3.1", {"prompt": "waves", "duration": "8s"}
        )

        outputs = await fal.client.result(submission.response_url)

        assert outputs.media == "video"
        assert len(outputs.urls) == 1
        assert outputs.thumbnail_url is not None

    async def test_upscale_comes_back_as_one_image(self, fal: Fal) -> None:
        source = await fal.client.submit(FLUX_DEV, {"prompt": "a cat"})
        [source_url] = (await fal.client.result(source.response_url)).urls

        submission = await fal.client.submit(
            "clarityai/crystal-upscaler", {"image_url": source_url, "scale_factor": 2}
        )
        outputs = await fal.client.result(submission.response_url)

        assert outputs.media == "image"
        assert len(outputs.urls) == 1
        assert outputs.urls != [source_url]

    async def test_validation_failure_is_invalid_input(self, fal: Fal) -> None:
        await fal.fault(mode="result_422")
        submission = await fal.client.submit(FLUX_DEV, {"prompt": "a cat"})

        with pytest.raises(FalError) as raised:
            await fal.client.result(submission.response_url)

        assert raised.value.error_type == "invalid_input"
        assert raised.value.status == 422
        assert "num_images" in raised.value.message

    async def test_content_policy_failure_is_content_violation(self, fal: Fal) -> None:
        await fal.fault(mode="content_violation")
        submission = await fal.client.submit(FLUX_DEV, {"prompt": "a cat"})

        with pytest.raises(FalError) as raised:
            await fal.client.result(submission.response_url)

        assert raised.value.error_type == "content_violation"
        assert raised.value.retryable is False
        assert "content_policy_violation" in raised.value.detail

    async def test_cut_off_body_is_a_retryable_api_error(self, fal: Fal) -> None:
        await fal.fault(mode="malformed")
        submission = await fal.client.submit(FLUX_DEV, {"prompt": "a cat"})

        with pytest.raises(FalError) as raised:
            await fal.client.result(submission.response_url)

        assert raised.value.error_type == "api_error"
        assert raised.value.retryable is True

    async def test_one_cut_off_body_is_retried(self, fal: Fal) -> None:
        await fal.fault(mode="malformed", failures=1)
        submission = await fal.client.submit(FLUX_DEV, {"prompt": "a cat"})

        outputs = await fal.client.result(submission.response_url)

        assert len(outputs.urls) == 1

    async def test_job_failed_by_the_runner_is_api_error(self, fal: Fal) -> None:
        await fal.fault(mode="result_500")
        submission = await fal.client.submit(FLUX_DEV, {"prompt": "a cat"})

        with pytest.raises(FalError) as raised:
            await fal.client.result(submission.response_url)

        assert raised.value.error_type == "api_error"
        assert raised.value.status == 500

    async def test_cancelled_job_has_no_result(self, fal: Fal) -> None:
        await fal.fault(mode="never_finishes")
        submission = await fal.client.submit(FLUX_DEV, {"prompt": "a cat"})
        await fal.client.cancel(submission.cancel_url)

        with pytest.raises(FalError) as raised:
            await fal.client.result(submission.response_url)

        assert raised.value.error_type == "cancelled"
        assert raised.value.status == 400


class TestCancel:
    async def test_running_job_cancellation_is_requested(self, fal: Fal) -> None:
        await fal.fault(mode="never_finishes")
        submission = await fal.client.submit(FLUX_DEV, {"prompt": "a cat"})

        answer = await fal.client.cancel(submission.cancel_url)

        assert answer == "CANCELLATION_REQUESTED"
        submissions = await fal.submissions("a cat")
        assert submissions[0]["cancelled"] is True

    async def test_finished_job_is_already_completed(self, fal: Fal) -> None:
        submission = await fal.client.submit(FLUX_DEV, {"prompt": "a cat"})

        answer = await fal.client.cancel(submission.cancel_url)

        assert answer == "ALREADY_COMPLETED"


class TestOutputsFromPayload:
    def test_single_image_field_is_used_without_images(self) -> None:
        outputs = outputs_from_payload({"image": {"url": "https://x/a.png"}})

        assert outputs.urls == ["https://x/a.png"]
        assert outputs.media == "image"

    def test_payload_without_media_is_an_unknown_error(self) -> None:
        with pytest.raises(FalError) as raised:
            outputs_from_payload({"images": [], "seed": 3})

        assert raised.value.error_type == "unknown"


class TestCategorize:
    @pytest.mark.parametrize(
        ("status", "message", "expected"),
        [
            (400, "bad request", "content_violation"),
            (None, "flagged by the NSFW filter", "content_violation"),
            (422, "prompt: Field required (missing)", "invalid_input"),
            (422, "flagged by a content checker", "content_violation"),
            (504, "Request timed out (request_timeout)", "timeout"),
            (400, "Request was cancelled", "cancelled"),
            (429, "slow down", "rate_limit"),
            (None, "Too many concurrent requests", "rate_limit"),
            (503, "runner unavailable", "api_error"),
            (None, "Internal error", "api_error"),
            (404, "Request not found", "unknown"),
        ],
    )
    def test_first_matching_rule_names_the_category(
        self, status: int | None, message: str, expected: str
    ) -> None:
        assert categorize(status, message) == expected


class TestWebhookVerifier:
    async def test_genuine_webhook_is_accepted(
        self, fal: Fal, receiver: WebhookReceiver, verifier: WebhookVerifier
    ) -> None:
        delivery = await delivered(fal, receiver, "a cat")

        event = await verifier.verify(delivery.headers, delivery.body)

        assert event.ok is True
        assert event.request_id == delivery.headers["x-fal-webhook-request-id"]
        assert event.outputs().media == "image"

    async def test_failed_job_webhook_gives_its_failure(
        self, fal: Fal, receiver: WebhookReceiver, verifier: WebhookVerifier
    ) -> None:
        await fal.fault(mode="content_violation")
        delivery = await delivered(fal, receiver, "a cat")

        event = await verifier.verify(delivery.headers, delivery.body)

        assert event.ok is False
        assert event.failure().error_type == "content_violation"
        assert event.failure().status == 422

    async def test_forged_signature_is_rejected(
        self, fal: Fal, receiver: WebhookReceiver, verifier: WebhookVerifier
    ) -> None:
        delivery = await delivered(fal, receiver, "a cat")
        signature = delivery.headers["x-fal-webhook-signature"]
        flipped = ("1" if signature[0] == "0" else "0") + signature[1:]

        with pytest.raises(WebhookRejected, match="signature"):
            await verifier.verify(
                {**delivery.headers, "x-fal-webhook-signature": flipped}, delivery.body
            )

    async def test_tampered_body_is_rejected(
        self, fal: Fal, receiver: WebhookReceiver, verifier: WebhookVerifier
    ) -> None:
        delivery = await delivered(fal, receiver, "a cat")
        tampered = delivery.body.replace(b'"OK"', b'"ERROR"')

        with pytest.raises(WebhookRejected, match="signature"):
            await verifier.verify(delivery.headers, tampered)

    async def test_stale_timestamp_is_rejected(
        self,
        fal: Fal,
        receiver: WebhookReceiver,
        verifier: WebhookVerifier,
        clock: Clock,
    ) -> None:
        delivery = await delivered(fal, receiver, "a cat")
        clock.offset = 301

        with pytest.raises(WebhookRejected, match="timestamp"):
            await verifier.verify(delivery.headers, delivery.body)

    async def test_webhook_for_another_account_is_rejected(
        self, fal: Fal, receiver: WebhookReceiver
    ) -> None:
        delivery = await delivered(fal, receiver, "a cat")
        verifier = WebhookVerifier(jwks_url=fal.jwks_url, user_id="someone-else")

        with pytest.raises(WebhookRejected, match="another fal account"):
            await verifier.verify(delivery.headers, delivery.body)
        await verifier.close()

    async def test_key_outside_the_jwks_is_rejected(
        self, verifier: WebhookVerifier
    ) -> None:
        body = webhook_document("req-1")
        headers = signed_headers(Ed25519PrivateKey.generate(), body, request_id="req-1")

        with pytest.raises(WebhookRejected, match="signature"):
            await verifier.verify(headers, body)

    async def test_body_for_another_request_is_rejected(
        self, fal: Fal, verifier: WebhookVerifier
    ) -> None:
        body = webhook_document("req-2")
        headers = signed_headers(fal.signing_key, body, request_id="req-1")

        with pytest.raises(WebhookRejected, match="another request"):
            await verifier.verify(headers, body)

    async def test_missing_signature_headers_are_rejected(
        self, verifier: WebhookVerifier
    ) -> None:
        with pytest.raises(WebhookRejected, match="headers"):
            await verifier.verify({}, webhook_document("req-1"))

    async def test_rotated_key_is_fetched_once(
        self,
        fal: Fal,
        receiver: WebhookReceiver,
        verifier: WebhookVerifier,
        clock: Clock,
    ) -> None:
        first = await delivered(fal, receiver, "before rotation")
        await verifier.verify(first.headers, first.body)
        await fal.control("POST", "/simulator/keys/rotate")
        receiver.deliveries.clear()
        clock.offset = 120

        second = await delivered(fal, receiver, "after rotation")
        event = await verifier.verify(second.headers, second.body)

        assert event.ok is True
        assert await fal.jwks_requests() == 2

    async def test_unknown_keys_refetch_at_most_once_a_minute(
        self, fal: Fal, verifier: WebhookVerifier, clock: Clock
    ) -> None:
        body = webhook_document("req-1")
        genuine = signed_headers(fal.signing_key, body, request_id="req-1")
        await verifier.verify(genuine, body)
        clock.offset = 120
        stranger = Ed25519PrivateKey.generate()

        for _ in range(3):
            forged = signed_headers(stranger, body, request_id="req-1")
            with pytest.raises(WebhookRejected):
                await verifier.verify(forged, body)

        assert await fal.jwks_requests() == 2

    async def test_unreachable_jwks_is_keys_unavailable(self) -> None:
        verifier = WebhookVerifier(
            jwks_url=f"http://127.0.0.1:{free_port()}/jwks.json", user_id=USER_ID
        )
        body = webhook_document("req-1")
        headers = signed_headers(Ed25519PrivateKey.generate(), body, request_id="req-1")

        with pytest.raises(WebhookKeysUnavailable):
            await verifier.verify(headers, body)
        await verifier.close()
