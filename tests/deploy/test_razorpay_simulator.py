"""The Razorpay simulator speaks Razorpay's protocol: orders, errors,
Checkout's signed answer and signed webhooks, over loopback HTTP."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from deploy.simulators.razorpay import create_app
from tests.suite import ServedApp, serve_asgi

KEY_ID = "rzp_test_simulator"
KEY_SECRET = "simulator-key-secret"
WEBHOOK_SECRET = "simulator-webhook-secret"
ORDER_ID = re.compile(r"^order_[A-Za-z0-9]{14}$")


@dataclass
class Delivery:
    headers: httpx.Headers
    body: bytes

    @property
    def event(self) -> str:
        name: str = json.loads(self.body)["event"]
        return name


@dataclass
class WebhookReceiver:
    """The merchant's webhook endpoint: records what arrives and answers
    with `status`."""

    status: int = 200
    deliveries: list[Delivery] = field(default_factory=list)

    async def receive(self, request: Request) -> JSONResponse:
        body = await request.body()
        self.deliveries.append(Delivery(httpx.Headers(request.headers), body))
        return JSONResponse({"received": True}, status_code=self.status)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[WebhookReceiver, str]]:
    receiver = WebhookReceiver()
    app = Starlette(routes=[Route("/webhook", receiver.receive, methods=["POST"])])
    served = await serve_asgi(app)
    yield receiver, f"{served.url}/webhook"
    await served.stop()


@pytest.fixture
async def razorpay(
    receiver: tuple[WebhookReceiver, str],
) -> AsyncIterator[ServedApp]:
    app = create_app(KEY_ID, KEY_SECRET, WEBHOOK_SECRET, webhook_url=receiver[1])
    served = await serve_asgi(app)
    yield served
    await served.stop()


@pytest.fixture
def webhooks(receiver: tuple[WebhookReceiver, str]) -> WebhookReceiver:
    return receiver[0]


@pytest.fixture
async def api(razorpay: ServedApp) -> AsyncIterator[httpx.AsyncClient]:
    async with razorpay.client(auth=(KEY_ID, KEY_SECRET)) as client:
        yield client


async def create_order(api: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"amount": 270000, "currency": "INR", "receipt": "rcpt-1", **fields}
    response = await api.post("/v1/orders", json=body)
    assert response.status_code == 200, response.text
    order: dict[str, Any] = response.json()
    return order


async def pay(api: httpx.AsyncClient, order_id: str, outcome: str) -> httpx.Response:
    return await api.post(
        f"/simulator/checkout/{order_id}/pay", json={"outcome": outcome}
    )


def hex_hmac(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


class TestOrdersApi:
    async def test_created_order_is_a_razorpay_order_entity(
        self, api: httpx.AsyncClient
    ) -> None:
        order = await create_order(api, notes={"planId": "standard"})

        assert ORDER_ID.match(order["id"])
        assert {
            key: order[key] for key in order if key not in ("id", "created_at")
        } == {
            "entity": "order",
            "amount": 270000,
            "amount_paid": 0,
            "amount_due": 270000,
            "currency": "INR",
            "receipt": "rcpt-1",
            "offer_id": None,
            "status": "created",
            "attempts": 0,
            "notes": {"planId": "standard"},
        }
        assert (await api.get(f"/v1/orders/{order['id']}")).json() == order

    async def test_request_without_the_right_keys_gets_razorpay_401(
        self, razorpay: ServedApp
    ) -> None:
        async with razorpay.client(auth=(KEY_ID, "wrong")) as client:
            response = await client.post(
                "/v1/orders", json={"amount": 100, "currency": "INR"}
            )

        assert response.status_code == 401
        assert response.json()["error"]["code"] == "BAD_REQUEST_ERROR"
        assert response.json()["error"]["description"] == "Authentication failed"

    @pytest.mark.parametrize(
        ("fields", "field_at_fault"),
        [
            ({"amount": 99}, "amount"),
            ({"amount": 100.5}, "amount"),
            ({"amount": "100"}, "amount"),
            ({"currency": "XYZ"}, "currency"),
            ({"receipt": "r" * 41}, "receipt"),
            ({"notes": {str(n): "v" for n in range(16)}}, "notes"),
            ({"callback_url": "https://example.com"}, "callback_url"),
        ],
    )
    async def test_invalid_order_is_refused_naming_the_field(
        self, api: httpx.AsyncClient, fields: dict[str, Any], field_at_fault: str
    ) -> None:
        body = {"amount": 100, "currency": "INR", "receipt": "rcpt-1", **fields}

        response = await api.post("/v1/orders", json=body)

        assert response.status_code == 400
        assert response.json()["error"]["field"] == field_at_fault

    async def test_unknown_order_is_razorpay_bad_request(
        self, api: httpx.AsyncClient
    ) -> None:
        response = await api.get("/v1/orders/order_Missing0000000")

        assert response.status_code == 400
        assert response.json()["error"]["description"] == (
            "The id provided does not exist"
        )

    async def test_every_response_is_marked_simulated(
        self, api: httpx.AsyncClient, razorpay: ServedApp
    ) -> None:
        async with razorpay.client() as anonymous:
            responses = [
                await api.post("/v1/orders", json={"amount": 100, "currency": "INR"}),
                await anonymous.post("/v1/orders", json={}),
                await api.get("/no/such/route"),
            ]

        assert [response.headers.get("x-simulated") for response in responses] == [
            "true",
            "true",
            "true",
        ]

    async def test_counted_fault_wears_off(self, api: httpx.AsyncClient) -> None:
        await api.post("/simulator/faults", json={"orders": "error_500", "times": 1})

        first = await api.post("/v1/orders", json={"amount": 100, "currency": "INR"})
        second = await api.post("/v1/orders", json={"amount": 100, "currency": "INR"})

        assert (first.status_code, second.status_code) == (500, 200)


class TestCheckout:
    async def test_success_is_signed_like_razorpay_checkout(
        self, api: httpx.AsyncClient
    ) -> None:
        order = await create_order(api)

        answer = (await pay(api, order["id"], "success")).json()

        assert set(answer) == {
            "razorpay_order_id",
            "razorpay_payment_id",
            "razorpay_signature",
        }
        message = f"{order['id']}|{answer['razorpay_payment_id']}".encode()
        assert answer["razorpay_signature"] == hex_hmac(KEY_SECRET, message)

    async def test_success_marks_order_paid_and_payment_captured(
        self, api: httpx.AsyncClient
    ) -> None:
        order = await create_order(api)

        answer = (await pay(api, order["id"], "success")).json()

        paid = (await api.get(f"/v1/orders/{order['id']}")).json()
        payment = (
            await api.get(f"/v1/payments/{answer['razorpay_payment_id']}")
        ).json()
        assert (paid["status"], paid["amount_paid"], paid["amount_due"]) == (
            "paid",
            270000,
            0,
        )
        assert (payment["status"], payment["order_id"], payment["amount"]) == (
            "captured",
            order["id"],
            270000,
        )

    async def test_failure_leaves_order_attempted_with_checkout_error(
        self, api: httpx.AsyncClient
    ) -> None:
        order = await create_order(api)

        answer = (await pay(api, order["id"], "failure")).json()

        assert answer["error"]["metadata"]["order_id"] == order["id"]
        attempted = (await api.get(f"/v1/orders/{order['id']}")).json()
        assert (attempted["status"], attempted["attempts"]) == ("attempted", 1)

    async def test_paid_order_cannot_be_paid_again(
        self, api: httpx.AsyncClient
    ) -> None:
        order = await create_order(api)
        await pay(api, order["id"], "success")

        response = await pay(api, order["id"], "success")

        assert response.status_code == 400


class TestWebhooks:
    async def test_success_sends_captured_then_order_paid(
        self, api: httpx.AsyncClient, webhooks: WebhookReceiver
    ) -> None:
        order = await create_order(api)

        await pay(api, order["id"], "success")

        assert [delivery.event for delivery in webhooks.deliveries] == [
            "payment.captured",
            "order.paid",
        ]
        order_paid = json.loads(webhooks.deliveries[1].body)
        assert order_paid["contains"] == ["payment", "order"]
        assert order_paid["payload"]["order"]["entity"]["status"] == "paid"

    async def test_failure_sends_payment_failed(
        self, api: httpx.AsyncClient, webhooks: WebhookReceiver
    ) -> None:
        order = await create_order(api)

        await pay(api, order["id"], "failure")

        [delivery] = webhooks.deliveries
        payment = json.loads(delivery.body)["payload"]["payment"]["entity"]
        assert (delivery.event, payment["status"]) == ("payment.failed", "failed")

    async def test_webhook_is_signed_over_its_raw_body_with_the_webhook_secret(
        self, api: httpx.AsyncClient, webhooks: WebhookReceiver
    ) -> None:
        order = await create_order(api)

        await pay(api, order["id"], "success")

        for delivery in webhooks.deliveries:
            assert delivery.headers["x-razorpay-signature"] == hex_hmac(
                WEBHOOK_SECRET, delivery.body
            )

    async def test_redelivery_keeps_the_event_id(
        self, api: httpx.AsyncClient, webhooks: WebhookReceiver
    ) -> None:
        await api.post("/simulator/faults", json={"redeliver_webhooks": 1})
        order = await create_order(api)

        await pay(api, order["id"], "failure")

        first, again = webhooks.deliveries
        assert first.headers["x-razorpay-event-id"]
        assert (
            again.headers["x-razorpay-event-id"]
            == (first.headers["x-razorpay-event-id"])
        )
        assert again.body == first.body

    async def test_events_get_distinct_ids(
        self, api: httpx.AsyncClient, webhooks: WebhookReceiver
    ) -> None:
        order = await create_order(api)

        await pay(api, order["id"], "success")

        ids = {
            delivery.headers["x-razorpay-event-id"] for delivery in webhooks.deliveries
        }
        assert len(ids) == 2

    async def test_refused_delivery_is_sent_again_on_request(
        self, api: httpx.AsyncClient, webhooks: WebhookReceiver
    ) -> None:
        webhooks.status = 500
        order = await create_order(api)
        await pay(api, order["id"], "failure")
        webhooks.status = 200

        resent = (await api.post("/simulator/webhooks/deliver", json={})).json()

        [event] = resent["items"]
        assert (event["deliveries"], event["delivered"]) == (["500", "200"], True)
        assert [d.headers["x-razorpay-event-id"] for d in webhooks.deliveries] == [
            event["id"],
            event["id"],
        ]

    async def test_held_webhooks_are_recorded_but_not_sent(
        self, api: httpx.AsyncClient, webhooks: WebhookReceiver
    ) -> None:
        await api.post("/simulator/faults", json={"hold_webhooks": True})
        order = await create_order(api)

        await pay(api, order["id"], "success")

        recorded = (await api.get("/simulator/webhooks")).json()["items"]
        assert [event["event"] for event in recorded] == [
            "payment.captured",
            "order.paid",
        ]
        assert webhooks.deliveries == []
