"""The Razorpay client against the Razorpay simulator served on loopback."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from deploy.simulators.razorpay import create_app
from libs.errors import InvalidArgument, NotConfigured, PaymentFailed, Unavailable
from services.billing.razorpay import (
    RazorpayClient,
    WebhookEvent,
    checkout_signature,
    parse_webhook,
    verify_checkout_signature,
    verify_webhook_signature,
    webhook_signature,
)
from tests.suite import ServedApp, free_port, serve_asgi

KEY_ID = "rzp_test_omnihub"
KEY_SECRET = "key-secret-for-tests"
WEBHOOK_SECRET = "webhook-secret-for-tests"


@pytest.fixture
async def razorpay() -> AsyncIterator[ServedApp]:
    """A fresh simulator per test, so faults and orders never leak."""
    served = await serve_asgi(create_app(KEY_ID, KEY_SECRET, WEBHOOK_SECRET, None))
    yield served
    await served.stop()


@pytest.fixture
async def client(razorpay: ServedApp) -> AsyncIterator[RazorpayClient]:
    client = RazorpayClient(
        razorpay.url, KEY_ID, KEY_SECRET, WEBHOOK_SECRET, retry_backoff=0.01
    )
    yield client
    await client.close()


async def set_faults(razorpay: ServedApp, **faults: object) -> None:
    async with razorpay.client() as http:
        response = await http.post("/simulator/faults", json=faults)
        response.raise_for_status()


async def requests_seen(razorpay: ServedApp) -> dict[str, int]:
    async with razorpay.client() as http:
        counts: dict[str, int] = (await http.get("/simulator/requests")).json()
        return counts


async def pay(razorpay: ServedApp, order_id: str, outcome: str) -> dict[str, Any]:
    async with razorpay.client() as http:
        response = await http.post(
            f"/simulator/checkout/{order_id}/pay", json={"outcome": outcome}
        )
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer


async def recorded_bodies(razorpay: ServedApp) -> dict[str, bytes]:
    """Raw webhook bodies the simulator produced, by event name."""
    async with razorpay.client() as http:
        events = (await http.get("/simulator/webhooks")).json()["items"]
    return {event["event"]: event["body"].encode() for event in events}


async def paid_order(client: RazorpayClient, razorpay: ServedApp) -> dict[str, Any]:
    order = await client.create_order(135000, "INR", "receipt-paid", {})
    return await pay(razorpay, order.id, "success")


class TestCreateOrder:
    async def test_returns_the_order_razorpay_created(
        self, client: RazorpayClient, razorpay: ServedApp
    ) -> None:
        order = await client.create_order(
            135000, "INR", "receipt-1", {"userId": "u-1", "planId": "starter"}
        )

        assert order.id.startswith("order_")
        assert (order.amount, order.currency, order.status, order.receipt) == (
            135000,
            "INR",
            "created",
            "receipt-1",
        )
        async with razorpay.client(auth=(KEY_ID, KEY_SECRET)) as http:
            stored = (await http.get(f"/v1/orders/{order.id}")).json()
        assert stored["notes"] == {"userId": "u-1", "planId": "starter"}

    async def test_rejected_keys_raise_not_configured(
        self, razorpay: ServedApp
    ) -> None:
        client = RazorpayClient(razorpay.url, KEY_ID, "wrong-secret", WEBHOOK_SECRET)

        with pytest.raises(NotConfigured):
            await client.create_order(135000, "INR", "receipt-1", {})
        await client.close()

    async def test_invalid_order_carries_razorpay_description_and_field(
        self, client: RazorpayClient
    ) -> None:
        with pytest.raises(InvalidArgument) as raised:
            await client.create_order(99, "INR", "receipt-1", {})

        assert raised.value.message == "The amount must be at least INR 1.00"
        assert [violation.field for violation in raised.value.violations] == ["amount"]

    async def test_server_error_is_unavailable_and_not_retried(
        self, client: RazorpayClient, razorpay: ServedApp
    ) -> None:
        await set_faults(razorpay, orders="error_500")

        with pytest.raises(Unavailable):
            await client.create_order(135000, "INR", "receipt-1", {})

        assert (await requests_seen(razorpay))["POST /v1/orders"] == 1

    async def test_timeout_is_unavailable_within_the_total_timeout(
        self, razorpay: ServedApp
    ) -> None:
        await set_faults(razorpay, orders="timeout")
        client = RazorpayClient(
            razorpay.url, KEY_ID, KEY_SECRET, WEBHOOK_SECRET, total_timeout=0.5
        )
        started = time.monotonic()

        with pytest.raises(Unavailable):
            await client.create_order(135000, "INR", "receipt-1", {})

        assert time.monotonic() - started < 1.5
        await client.close()

    async def test_malformed_body_is_unavailable(
        self, client: RazorpayClient, razorpay: ServedApp
    ) -> None:
        await set_faults(razorpay, orders="malformed")

        with pytest.raises(Unavailable):
            await client.create_order(135000, "INR", "receipt-1", {})


class TestFetchPayment:
    async def test_returns_the_captured_payment_of_the_order(
        self, client: RazorpayClient, razorpay: ServedApp
    ) -> None:
        checkout = await paid_order(client, razorpay)

        payment = await client.fetch_payment(checkout["razorpay_payment_id"])

        assert payment.id == checkout["razorpay_payment_id"]
        assert payment.order_id == checkout["razorpay_order_id"]
        assert (payment.status, payment.amount, payment.currency) == (
            "captured",
            135000,
            "INR",
        )

    async def test_unknown_payment_is_payment_failed(
        self, client: RazorpayClient
    ) -> None:
        with pytest.raises(PaymentFailed, match="does not exist"):
            await client.fetch_payment("pay_Nonexistent0000")

    async def test_id_that_would_change_the_path_is_refused_unsent(
        self, client: RazorpayClient, razorpay: ServedApp
    ) -> None:
        with pytest.raises(PaymentFailed):
            await client.fetch_payment("pay_x/../../orders")

        assert await requests_seen(razorpay) == {}

    async def test_server_errors_are_retried_until_an_answer(
        self, client: RazorpayClient, razorpay: ServedApp
    ) -> None:
        checkout = await paid_order(client, razorpay)
        await set_faults(razorpay, payments="error_500", times=2)

        payment = await client.fetch_payment(checkout["razorpay_payment_id"])

        assert payment.status == "captured"
        assert (await requests_seen(razorpay))["GET /v1/payments/{id}"] == 3

    async def test_server_error_on_every_attempt_is_unavailable(
        self, client: RazorpayClient, razorpay: ServedApp
    ) -> None:
        await set_faults(razorpay, payments="error_500")

        with pytest.raises(Unavailable):
            await client.fetch_payment("pay_Anything000000")

        assert (await requests_seen(razorpay))["GET /v1/payments/{id}"] == 3

    async def test_unreachable_razorpay_is_unavailable(self) -> None:
        client = RazorpayClient(
            f"http://127.0.0.1:{free_port()}",
            KEY_ID,
            KEY_SECRET,
            WEBHOOK_SECRET,
            retry_backoff=0.01,
        )

        with pytest.raises(Unavailable):
            await client.fetch_payment("pay_Anything000000")
        await client.close()


class TestCheckoutSignature:
    async def test_signature_from_checkout_verifies(
        self, client: RazorpayClient, razorpay: ServedApp
    ) -> None:
        checkout = await paid_order(client, razorpay)

        assert client.verify_checkout(
            checkout["razorpay_order_id"],
            checkout["razorpay_payment_id"],
            checkout["razorpay_signature"],
        )

    def test_signature_is_hex_hmac_of_order_and_payment(self) -> None:
        expected = hmac.new(b"secret", b"order_A|pay_B", hashlib.sha256).hexdigest()

        assert checkout_signature("order_A", "pay_B", "secret") == expected

    def test_forged_signature_is_refused(self) -> None:
        forged = checkout_signature("order_A", "pay_B", "guessed-secret")

        assert not verify_checkout_signature("order_A", "pay_B", forged, KEY_SECRET)

    def test_signature_for_another_order_is_refused(self) -> None:
        signature = checkout_signature("order_Other", "pay_B", KEY_SECRET)

        assert not verify_checkout_signature("order_A", "pay_B", signature, KEY_SECRET)

    @pytest.mark.parametrize("signature", ["", "not-hex", "é" * 64, "0" * 64])
    def test_non_matching_text_is_refused(self, signature: str) -> None:
        assert not verify_checkout_signature("order_A", "pay_B", signature, KEY_SECRET)

    def test_empty_key_secret_never_verifies(self) -> None:
        signature = checkout_signature("order_A", "pay_B", "")

        assert not verify_checkout_signature("order_A", "pay_B", signature, "")


class TestWebhookSignature:
    async def test_signature_over_the_raw_body_verifies(
        self, client: RazorpayClient, razorpay: ServedApp
    ) -> None:
        await paid_order(client, razorpay)
        body = (await recorded_bodies(razorpay))["payment.captured"]

        assert client.verify_webhook(body, webhook_signature(body, WEBHOOK_SECRET))

    def test_reserialised_body_fails_verification(self) -> None:
        raw = b'{"entity":"event","event":"payment.captured","payload":{}}'
        signature = webhook_signature(raw, WEBHOOK_SECRET)
        reserialised = json.dumps(json.loads(raw), indent=2).encode()

        assert verify_webhook_signature(raw, signature, WEBHOOK_SECRET)
        assert not verify_webhook_signature(reserialised, signature, WEBHOOK_SECRET)

    def test_signature_made_with_the_key_secret_is_refused(self) -> None:
        raw = b'{"event":"payment.captured"}'
        signature = webhook_signature(raw, KEY_SECRET)

        assert not verify_webhook_signature(raw, signature, WEBHOOK_SECRET)

    def test_empty_webhook_secret_never_verifies(self) -> None:
        raw = b'{"event":"payment.captured"}'

        assert not verify_webhook_signature(raw, webhook_signature(raw, ""), "")


class TestParseWebhook:
    async def test_payment_captured_names_payment_order_and_amount(
        self, client: RazorpayClient, razorpay: ServedApp
    ) -> None:
        checkout = await paid_order(client, razorpay)
        body = (await recorded_bodies(razorpay))["payment.captured"]

        assert parse_webhook(body) == WebhookEvent(
            event="payment.captured",
            payment_id=checkout["razorpay_payment_id"],
            order_id=checkout["razorpay_order_id"],
            amount=135000,
            status="captured",
        )

    async def test_order_paid_names_payment_and_order(
        self, client: RazorpayClient, razorpay: ServedApp
    ) -> None:
        checkout = await paid_order(client, razorpay)
        body = (await recorded_bodies(razorpay))["order.paid"]

        event = parse_webhook(body)

        assert (event.event, event.payment_id, event.order_id) == (
            "order.paid",
            checkout["razorpay_payment_id"],
            checkout["razorpay_order_id"],
        )

    async def test_payment_failed_reports_failed_status(
        self, client: RazorpayClient, razorpay: ServedApp
    ) -> None:
        order = await client.create_order(135000, "INR", "receipt-1", {})
        await pay(razorpay, order.id, "failure")
        body = (await recorded_bodies(razorpay))["payment.failed"]

        event = parse_webhook(body)

        assert (event.order_id, event.status) == (order.id, "failed")

    def test_unknown_event_parses_to_its_name(self) -> None:
        body = json.dumps(
            {
                "entity": "event",
                "event": "refund.processed",
                "contains": ["refund"],
                "payload": {"refund": {"entity": {"id": "rfnd_1"}}},
            }
        ).encode()

        assert parse_webhook(body) == WebhookEvent(
            "refund.processed", None, None, None, None
        )

    @pytest.mark.parametrize(
        "body",
        [
            b"not json",
            b"\xff\xfe",
            b"[]",
            b'{"payload": {}}',
            b'{"event": "payment.captured", "payload": []}',
            b'{"event": "payment.captured", "payload": {"payment": {}}}',
            b'{"event": "payment.captured", "payload": {"payment": '
            b'{"entity": {"id": "pay_1", "amount": "100"}}}}',
        ],
    )
    def test_body_that_is_not_a_razorpay_event_is_invalid(self, body: bytes) -> None:
        with pytest.raises(InvalidArgument):
            parse_webhook(body)


async def test_client_repr_leaves_out_the_secrets() -> None:
    client = RazorpayClient("http://127.0.0.1:1", KEY_ID, KEY_SECRET, WEBHOOK_SECRET)

    assert KEY_SECRET not in repr(client)
    assert WEBHOOK_SECRET not in repr(client)
    await client.close()
