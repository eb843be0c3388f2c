"""Razorpay webhooks through HandleWebhook, and the races between them and
the browser's VerifyPayment: whoever reports a payment, and however often,
its credits are granted once.

Webhook bodies are the exact bytes the Razorpay simulator recorded (and
signed) for a payment, or bodies built here and signed with the webhook
secret for events the simulator would not send.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from omnihub.billing.v1 import billing_pb2
from sqlalchemy import select

from libs.config import Settings
from libs.errors import InvalidArgument, NotConfigured, PaymentFailed
from services.auth.main import AuthProcess
from services.billing.models import WebhookEvent
from services.billing.razorpay import webhook_signature
from tests.services.billing.factories import CREDIT, BillingClient, failure
from tests.services.billing.test_payments import (
    WEBHOOK_SECRET,
    PaymentsHarness,
    Sessions,
    new_user,
    payments_running,
)


@pytest.fixture(scope="module")
async def payments(
    settings: Settings, billing_db: Sessions, auth_service: AuthProcess
) -> AsyncIterator[PaymentsHarness]:
    async with payments_running(settings, billing_db) as harness:
        yield harness


def webhook(
    body: bytes, event_id: str | None = None, signature: str | None = None
) -> billing_pb2.HandleWebhookRequest:
    return billing_pb2.HandleWebhookRequest(
        body=body,
        signature=signature or webhook_signature(body, WEBHOOK_SECRET),
        event_id=uuid.uuid4().hex if event_id is None else event_id,
    )


def recorded(event: dict[str, Any]) -> billing_pb2.HandleWebhookRequest:
    """A delivery of an event the simulator recorded, as Razorpay sends it."""
    return webhook(event["body"].encode(), event["id"])


def crafted_body(
    event: str, order_id: str, amount: int, status: str = "captured"
) -> bytes:
    payment = {
        "id": f"pay_{uuid.uuid4().hex[:14]}",
        "entity": "payment",
        "order_id": order_id,
        "amount": amount,
        "currency": "INR",
        "status": status,
    }
    document = {
        "entity": "event",
        "event": event,
        "contains": ["payment"],
        "payload": {"payment": {"entity": payment}},
        "created_at": int(time.time()),
    }
    return json.dumps(document).encode()


async def deliver(
    payments: PaymentsHarness, request: billing_pb2.HandleWebhookRequest
) -> bool:
    reply = await payments.billing.stub.HandleWebhook(
        request, metadata=payments.billing.service
    )
    return reply.applied


async def outcome_of(payments: PaymentsHarness, event_id: str) -> str | None:
    async with payments.sessions() as db:
        statement = select(WebhookEvent.outcome).where(
            WebhookEvent.event_id == event_id
        )
        return (await db.execute(statement)).scalar_one_or_none()


async def paid_order(
    payments: PaymentsHarness, user_id: str, credits: int = 100
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A credit order paid in the simulator: what Checkout handed back, and
    the payment.captured and order.paid events Razorpay would deliver."""
    paid = await payments.paid_credit_order(user_id, credits)
    captured, order_paid = await payments.events(paid["razorpay_order_id"])
    return paid, captured, order_paid


class TestHandleWebhook:
    async def test_captured_payment_is_granted_by_the_webhook_alone(
        self, payments: PaymentsHarness
    ) -> None:
        user_id = new_user()
        paid, captured, _ = await paid_order(payments, user_id, credits=70)

        applied = await deliver(payments, recorded(captured))

        assert applied
        assert await payments.balance(user_id) == 70 * CREDIT
        payment = await payments.payment(paid["razorpay_order_id"])
        assert payment is not None
        assert (payment.status, payment.payment_id) == (
            "completed",
            paid["razorpay_payment_id"],
        )
        assert await outcome_of(payments, captured["id"]) == "completed"

    async def test_order_paid_after_payment_captured_changes_nothing(
        self, payments: PaymentsHarness
    ) -> None:
        user_id = new_user()
        _, captured, order_paid = await paid_order(payments, user_id)

        first = await deliver(payments, recorded(captured))
        second = await deliver(payments, recorded(order_paid))

        assert (first, second) == (True, False)
        assert await outcome_of(payments, order_paid["id"]) == "already_completed"
        assert len(await payments.purchases(user_id)) == 1

    async def test_verify_after_the_webhook_answers_with_its_grant(
        self, payments: PaymentsHarness
    ) -> None:
        user_id = new_user()
        paid, captured, _ = await paid_order(payments, user_id, credits=30)
        await deliver(payments, recorded(captured))

        reply = await payments.verify(user_id, paid)

        assert (reply.credits_added_micros, reply.balance_micros) == (
            30 * CREDIT,
            30 * CREDIT,
        )
        assert len(await payments.purchases(user_id)) == 1

    async def test_bad_signature_is_refused_and_not_recorded(
        self, payments: PaymentsHarness
    ) -> None:
        user_id = new_user()
        paid, captured, _ = await paid_order(payments, user_id)
        body = captured["body"].encode()
        forged = webhook(body, captured["id"], webhook_signature(body, "guessed"))

        status, error = await failure(
            payments.billing.stub.HandleWebhook(
                forged, metadata=payments.billing.service
            )
        )

        assert status == grpc.StatusCode.INVALID_ARGUMENT
        assert isinstance(error, PaymentFailed)
        assert error.message == "Invalid webhook signature."
        assert await payments.balance(user_id) == 0
        assert await outcome_of(payments, captured["id"]) is None
        payment = await payments.payment(paid["razorpay_order_id"])
        assert payment is not None
        assert payment.status == "pending"

    async def test_replayed_event_is_acknowledged_and_not_applied_again(
        self, payments: PaymentsHarness
    ) -> None:
        user_id = new_user()
        _, captured, _ = await paid_order(payments, user_id, credits=5)

        first = await deliver(payments, recorded(captured))
        replay = await deliver(payments, recorded(captured))

        assert (first, replay) == (True, False)
        assert await payments.balance(user_id) == 5 * CREDIT

    async def test_event_for_an_unknown_order_is_recorded_and_not_applied(
        self, payments: PaymentsHarness
    ) -> None:
        request = webhook(
            crafted_body("payment.captured", "order_UnknownToUs1", 10_000)
        )

        applied = await deliver(payments, request)

        assert not applied
        assert await outcome_of(payments, request.event_id) == "unknown_order"

    async def test_event_billing_does_not_act_on_is_recorded_and_not_applied(
        self, payments: PaymentsHarness
    ) -> None:
        user_id = new_user()
        order = await payments.credit_order(user_id)
        request = webhook(crafted_body("refund.processed", order.order_id, 10_000))

        applied = await deliver(payments, request)

        assert not applied
        assert await outcome_of(payments, request.event_id) == "ignored"
        assert await payments.balance(user_id) == 0

    async def test_declined_payment_marks_the_order_failed(
        self, payments: PaymentsHarness
    ) -> None:
        user_id = new_user()
        order = await payments.credit_order(user_id)
        await payments.checkout(order.order_id, outcome="failure")
        [declined] = await payments.events(order.order_id)

        applied = await deliver(payments, recorded(declined))

        assert applied
        payment = await payments.payment(order.order_id)
        assert payment is not None
        assert payment.status == "failed"

    async def test_decline_reported_after_the_capture_changes_nothing(
        self, payments: PaymentsHarness
    ) -> None:
        user_id = new_user()
        paid, captured, _ = await paid_order(payments, user_id)
        await deliver(payments, recorded(captured))
        late = webhook(
            crafted_body(
                "payment.failed", paid["razorpay_order_id"], 10_000, status="failed"
            )
        )

        applied = await deliver(payments, late)

        assert not applied
        assert await outcome_of(payments, late.event_id) == "not_pending"
        payment = await payments.payment(paid["razorpay_order_id"])
        assert payment is not None
        assert payment.status == "completed"

    async def test_capture_of_another_amount_is_not_granted(
        self, payments: PaymentsHarness
    ) -> None:
        user_id = new_user()
        order = await payments.credit_order(user_id, credits=100)
        request = webhook(
            crafted_body("payment.captured", order.order_id, order.amount - 100)
        )

        applied = await deliver(payments, request)

        assert not applied
        assert await outcome_of(payments, request.event_id) == "amount_mismatch"
        assert await payments.balance(user_id) == 0

    async def test_event_without_an_event_id_is_told_apart_by_its_body(
        self, payments: PaymentsHarness
    ) -> None:
        user_id = new_user()
        _, captured, _ = await paid_order(payments, user_id)
        body = captured["body"].encode()

        first = await deliver(payments, webhook(body, event_id=""))
        again = await deliver(payments, webhook(body, event_id=""))

        assert (first, again) == (True, False)
        assert len(await payments.purchases(user_id)) == 1

    async def test_signed_body_that_is_not_an_event_is_refused(
        self, payments: PaymentsHarness
    ) -> None:
        status, error = await failure(
            payments.billing.stub.HandleWebhook(
                webhook(b"[1, 2, 3]"), metadata=payments.billing.service
            )
        )

        assert status == grpc.StatusCode.INVALID_ARGUMENT
        assert isinstance(error, InvalidArgument)

    async def test_without_a_webhook_secret_webhooks_are_not_configured(
        self, billing: BillingClient
    ) -> None:
        status, error = await failure(
            billing.stub.HandleWebhook(webhook(b"{}"), metadata=billing.service)
        )

        assert status == grpc.StatusCode.UNIMPLEMENTED
        assert isinstance(error, NotConfigured)

    async def test_a_user_may_not_deliver_webhooks(
        self, payments: PaymentsHarness
    ) -> None:
        user_id = new_user()
        _, captured, _ = await paid_order(payments, user_id)

        status, _ = await failure(
            payments.billing.stub.HandleWebhook(
                recorded(captured), metadata=payments.billing.user(user_id)
            )
        )

        assert status == grpc.StatusCode.PERMISSION_DENIED
        assert await payments.balance(user_id) == 0


class TestRaces:
    async def test_verify_and_webhooks_racing_grant_once(
        self, payments: PaymentsHarness
    ) -> None:
        users = [new_user() for _ in range(5)]
        orders = [await paid_order(payments, user, credits=20) for user in users]

        results = await asyncio.gather(
            *(
                call
                for user, (paid, captured, order_paid) in zip(
                    users, orders, strict=True
                )
                for call in (
                    payments.verify(user, paid),
                    deliver(payments, recorded(captured)),
                    deliver(payments, recorded(order_paid)),
                )
            )
        )

        for user in users:
            assert len(await payments.purchases(user)) == 1
            assert await payments.balance(user) == 20 * CREDIT
        verified = results[0::3]
        assert all(reply.balance_micros == 20 * CREDIT for reply in verified)

    async def test_subscription_reported_three_ways_at_once_extends_once(
        self, payments: PaymentsHarness
    ) -> None:
        user_id = new_user()
        order = await payments.order(user_id, plan_id="professional")
        paid = await payments.checkout(order.order_id)
        captured, order_paid = await payments.events(order.order_id)

        reply, *_ = await asyncio.gather(
            payments.verify(user_id, paid),
            deliver(payments, recorded(captured)),
            deliver(payments, recorded(order_paid)),
        )

        assert reply.balance_micros == 90_000 * CREDIT
        subscription = await payments.subscription(user_id)
        assert subscription is not None
        in_a_month = datetime.now(UTC) + timedelta(days=31)
        assert subscription.current_period_end < in_a_month
        assert reply.period_end.ToDatetime(tzinfo=UTC) == (
            subscription.current_period_end
        )

    async def test_webhook_redelivered_five_times_at_once_applies_once(
        self, payments: PaymentsHarness
    ) -> None:
        user_id = new_user()
        _, captured, _ = await paid_order(payments, user_id, credits=15)

        applied = await asyncio.gather(
            *(deliver(payments, recorded(captured)) for _ in range(5))
        )

        assert sorted(applied) == [False, False, False, False, True]
        assert await outcome_of(payments, captured["id"]) == "completed"
        assert await payments.balance(user_id) == 15 * CREDIT
        assert len(await payments.purchases(user_id)) == 1
