"""services/billing/payments.py over real gRPC: plans, orders, the
browser's verification, payment history and the simulated Checkout.

The module runs a billing service of its own, configured with keys for the
Razorpay simulator served on loopback. The simulator sends no webhooks here
(it has no webhook URL); tests that want them deliver the events it recorded
themselves (see test_payments_webhooks.py). Accounts are fresh users with
tokens signed like auth's, so no sign-up grant or other test's credits show.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from omnihub.billing.v1 import billing_pb2
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from deploy.simulators.razorpay import create_app
from libs.config import Settings
from libs.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotConfigured,
    NotFound,
    PaymentFailed,
    Unauthenticated,
    Unavailable,
)
from libs.grpc.identity import Caller
from libs.tokens import Audience
from services.auth.main import AuthProcess
from services.billing import repository
from services.billing.main import BillingProcess
from services.billing.models import Payment, Subscription
from services.billing.payments import OrderRequest, PaymentService
from services.billing.razorpay import RazorpayClient, checkout_signature
from services.billing.service import BillingService
from tests.gateway.factories import sibling_settings
from tests.services.billing.factories import (
    CREDIT,
    BillingClient,
    failure,
    fields_of,
    user_account,
)
from tests.suite import ServedApp, run_service, serve_asgi

Sessions = async_sessionmaker[AsyncSession]

KEY_ID = "rzp_test_payments"
KEY_SECRET = "payments-key-secret"
WEBHOOK_SECRET = "payments-webhook-secret"
STANDARD_MONTHLY_PAISE = 2700 * 100
STANDARD_CREDITS = 24_000


@dataclass
class PaymentsHarness:
    """A billing service that takes payments, its Razorpay simulator, and
    the billing schema to look at what they stored."""

    billing: BillingClient
    razorpay: ServedApp
    sessions: Sessions

    async def order(
        self, user_id: str, **fields: Any
    ) -> billing_pb2.CreateOrderResponse:
        return await self.billing.stub.CreateOrder(
            billing_pb2.CreateOrderRequest(**fields),
            metadata=self.billing.user(user_id),
        )

    async def credit_order(
        self, user_id: str, credits: int = 100
    ) -> billing_pb2.CreateOrderResponse:
        return await self.order(user_id, type="credits", credits=credits)

    async def checkout(self, order_id: str, outcome: str = "success") -> dict[str, Any]:
        """Pay in the simulator as the customer would in Checkout."""
        async with self.razorpay.client() as http:
            response = await http.post(
                f"/simulator/checkout/{order_id}/pay", json={"outcome": outcome}
            )
        assert response.status_code == 200, response.text
        paid: dict[str, Any] = response.json()
        return paid

    def verify_request(
        self, paid: dict[str, Any], **changes: str
    ) -> billing_pb2.VerifyPaymentRequest:
        fields = {
            "order_id": paid["razorpay_order_id"],
            "payment_id": paid["razorpay_payment_id"],
            "signature": paid["razorpay_signature"],
            **changes,
        }
        return billing_pb2.VerifyPaymentRequest(**fields)

    async def verify(
        self, user_id: str, paid: dict[str, Any], **changes: str
    ) -> billing_pb2.VerifyPaymentResponse:
        return await self.billing.stub.VerifyPayment(
            self.verify_request(paid, **changes), metadata=self.billing.user(user_id)
        )

    async def faults(self, **faults: object) -> None:
        async with self.razorpay.client() as http:
            response = await http.post("/simulator/faults", json=faults)
        assert response.status_code == 200, response.text

    async def events(self, order_id: str) -> list[dict[str, Any]]:
        """Webhook events the simulator recorded for an order, oldest first."""
        async with self.razorpay.client() as http:
            items = (await http.get("/simulator/webhooks")).json()["items"]
        return [event for event in items if _order_of(event) == order_id]

    async def payment(self, order_id: str) -> Payment | None:
        async with self.sessions() as db:
            return await repository.payment_by_order(db, order_id)

    async def payments_of(self, user_id: str) -> list[Payment]:
        async with self.sessions() as db:
            statement = select(Payment).where(Payment.user_id == uuid.UUID(user_id))
            return list((await db.execute(statement)).scalars())

    async def subscription(self, user_id: str) -> Subscription | None:
        async with self.sessions() as db:
            statement = select(Subscription).where(
                Subscription.user_id == uuid.UUID(user_id)
            )
            return (await db.execute(statement)).scalar_one_or_none()

    async def balance(self, user_id: str) -> int:
        balance, _ = await self.billing.balance(user_account(user_id))
        return balance

    async def purchases(self, user_id: str) -> list[billing_pb2.LedgerEntry]:
        entries = await self.billing.entries(user_account(user_id))
        return [e for e in entries if e.kind == billing_pb2.ENTRY_KIND_PURCHASE]

    async def paid_credit_order(
        self, user_id: str, credits: int = 100
    ) -> dict[str, Any]:
        order = await self.credit_order(user_id, credits)
        return await self.checkout(order.order_id)


def _order_of(event: dict[str, Any]) -> str | None:
    payload = json.loads(event["body"])["payload"]
    entity = payload.get("payment", payload.get("order", {}))["entity"]
    order_id = entity.get("order_id") or entity.get("id")
    return str(order_id) if order_id else None


def new_user() -> str:
    return str(uuid.uuid4())


@asynccontextmanager
async def payments_running(
    settings: Settings, sessions: Sessions, **overrides: object
) -> AsyncIterator[PaymentsHarness]:
    """A Razorpay simulator on loopback and a billing service with its keys."""
    razorpay = await serve_asgi(create_app(KEY_ID, KEY_SECRET, WEBHOOK_SECRET, None))
    keys: dict[str, object] = {
        "razorpay_base_url": razorpay.url,
        "razorpay_key_id": KEY_ID,
        "razorpay_key_secret": KEY_SECRET,
        "razorpay_webhook_secret": WEBHOOK_SECRET,
    }
    own = sibling_settings(settings, **{**keys, **overrides})
    running = await run_service(BillingProcess(), own)
    client = BillingClient(own)
    try:
        yield PaymentsHarness(client, razorpay, sessions)
    finally:
        await client.close()
        await running.stop(grace=0)
        await razorpay.stop()


@pytest.fixture(scope="module")
async def payments(
    settings: Settings, billing_db: Sessions, auth_service: AuthProcess
) -> AsyncIterator[PaymentsHarness]:
    async with payments_running(settings, billing_db) as harness:
        yield harness


@pytest.fixture(autouse=True)
async def no_faults(payments: PaymentsHarness) -> AsyncIterator[None]:
    yield
    await payments.faults(orders="ok", payments="ok")


class TestListPlans:
    async def test_anyone_sees_the_three_plans_in_display_order(
        self, payments: PaymentsHarness
    ) -> None:
        reply = await payments.billing.stub.ListPlans(billing_pb2.ListPlansRequest())

        plans = [
            (p.id, p.price_monthly, p.price_yearly, p.credits_per_month, p.is_popular)
            for p in reply.plans
        ]
        assert plans == [
            ("starter", 1350, 12960, 12000, False),
            ("standard", 2700, 25920, 24000, True),
            ("professional", 9000, 86400, 90000, False),
        ]
        assert all(len(plan.features) >= 5 for plan in reply.plans)


class TestCheckoutConfig:
    async def test_reports_the_key_id_and_that_razorpay_is_simulated(
        self, payments: PaymentsHarness
    ) -> None:
        reply = await payments.billing.stub.GetCheckoutConfig(
            billing_pb2.GetCheckoutConfigRequest()
        )

        assert (reply.key_id, reply.simulated) == (KEY_ID, True)

    async def test_without_keys_the_key_id_is_empty(
        self, billing: BillingClient
    ) -> None:
        reply = await billing.stub.GetCheckoutConfig(
            billing_pb2.GetCheckoutConfigRequest()
        )

        assert (reply.key_id, reply.simulated) == ("", False)

    async def test_razorpays_own_api_is_not_simulated(
        self, settings: Settings, billing_db: Sessions
    ) -> None:
        async with payments_running(
            settings,
            billing_db,
            razorpay_base_url="https://api.razorpay.com",
        ) as real:
            reply = await real.billing.stub.GetCheckoutConfig(
                billing_pb2.GetCheckoutConfigRequest()
            )

        assert (reply.key_id, reply.simulated) == (KEY_ID, False)


class TestGetBillingSettings:
    async def test_anyone_sees_signup_credits_and_the_credit_price(
        self, payments: PaymentsHarness
    ) -> None:
        async with payments.sessions() as db:
            stored = await repository.public_settings(db)

        reply = await payments.billing.stub.GetBillingSettings(
            billing_pb2.GetBillingSettingsRequest()
        )

        assert reply.signup_credits_micros == stored.signup_credits_micros
        assert reply.credit_price_paise == 100


class TestCreateOrder:
    async def test_subscription_order_is_priced_in_paise_and_stored_pending(
        self, payments: PaymentsHarness
    ) -> None:
        user_id = new_user()

        reply = await payments.order(
            user_id, type="subscription", plan_id="standard", billing_cycle="yearly"
        )

        assert (reply.amount, reply.currency, reply.key_id) == (2592000, "INR", KEY_ID)
        assert reply.simulated
        payment = await payments.payment(reply.order_id)
        assert payment is not None
        assert (str(payment.user_id), payment.status, payment.amount_paise) == (
            user_id,
            "pending",
            2592000,
        )
        assert (payment.plan_id, payment.billing_cycle) == ("standard", "yearly")
        assert payment.credits_micros == STANDARD_CREDITS * CREDIT

    async def test_razorpay_order_carries_the_payment_id_as_receipt_and_notes(
        self, payments: PaymentsHarness
    ) -> None:
        user_id = new_user()
        reply = await payments.order(user_id, plan_id="starter")

        async with payments.razorpay.client(auth=(KEY_ID, KEY_SECRET)) as http:
            order = (await http.get(f"/v1/orders/{reply.order_id}")).json()

        payment = await payments.payment(reply.order_id)
        assert payment is not None
        assert order["receipt"] == str(payment.id)
        assert order["notes"] == {
            "user_id": user_id,
            "type": "subscription",
            "plan_id": "starter",
        }

    async def test_subscription_is_monthly_unless_asked_otherwise(
        self, payments: PaymentsHarness
    ) -> None:
        reply = await payments.order(new_user(), plan_id="standard")

        payment = await payments.payment(reply.order_id)
        assert payment is not None
        assert (reply.amount, payment.billing_cycle) == (
            STANDARD_MONTHLY_PAISE,
            "monthly",
        )

    async def test_credit_order_costs_the_credit_price_per_credit(
        self, payments: PaymentsHarness
    ) -> None:
        reply = await payments.credit_order(new_user(), credits=250)

        payment = await payments.payment(reply.order_id)
        assert payment is not None
        assert (reply.amount, payment.credits_micros) == (25_000, 250 * CREDIT)
        assert (payment.type, payment.plan_id) == ("credits", None)

    @pytest.mark.parametrize("credits", [0, -5, 100_001, 10**15])
    async def test_credits_outside_one_to_a_hundred_thousand_are_refused(
        self, payments: PaymentsHarness, credits: int
    ) -> None:
        user_id = new_user()

        status, error = await failure(payments.credit_order(user_id, credits))

        assert status == grpc.StatusCode.INVALID_ARGUMENT
        assert fields_of(error) == {"credits"}
        assert await payments.payments_of(user_id) == []

    async def test_unknown_plan_is_refused(self, payments: PaymentsHarness) -> None:
        user_id = new_user()

        status, error = await failure(payments.order(user_id, plan_id="platinum"))

        assert status == grpc.StatusCode.INVALID_ARGUMENT
        assert fields_of(error) == {"plan_id"}
        assert error.message == 'There is no plan "platinum".'
        assert await payments.payments_of(user_id) == []

    @pytest.mark.parametrize(
        ("fields", "field"),
        [
            ({"type": "gift"}, "type"),
            ({"plan_id": "standard", "billing_cycle": "weekly"}, "billing_cycle"),
            ({"billing_cycle": "monthly"}, "plan_id"),
            ({"type": "credits", "credits": 5, "plan_id": "standard"}, "plan_id"),
            ({"plan_id": "standard", "credits": 5}, "credits"),
        ],
    )
    async def test_inconsistent_order_is_refused_naming_the_field(
        self, payments: PaymentsHarness, fields: dict[str, Any], field: str
    ) -> None:
        status, error = await failure(payments.order(new_user(), **fields))

        assert status == grpc.StatusCode.INVALID_ARGUMENT
        assert isinstance(error, InvalidArgument)
        assert fields_of(error) == {field}

    async def test_without_keys_payments_are_not_configured(
        self, billing: BillingClient
    ) -> None:
        status, error = await failure(
            billing.stub.CreateOrder(
                billing_pb2.CreateOrderRequest(type="credits", credits=10),
                metadata=billing.user(new_user()),
            )
        )

        assert status == grpc.StatusCode.UNIMPLEMENTED
        assert isinstance(error, NotConfigured)
        assert error.message == "Payments are not configured on this server."

    async def test_a_service_alone_may_not_order(
        self, payments: PaymentsHarness
    ) -> None:
        status, error = await failure(
            payments.billing.stub.CreateOrder(
                billing_pb2.CreateOrderRequest(type="credits", credits=10),
                metadata=payments.billing.service,
            )
        )

        assert status == grpc.StatusCode.UNAUTHENTICATED
        assert isinstance(error, Unauthenticated)

    async def test_razorpay_server_error_is_unavailable_and_stores_nothing(
        self, payments: PaymentsHarness
    ) -> None:
        user_id = new_user()
        await payments.faults(orders="error_500", times=1)

        status, error = await failure(payments.credit_order(user_id))

        assert status == grpc.StatusCode.UNAVAILABLE
        assert isinstance(error, Unavailable)
        assert await payments.payments_of(user_id) == []

    async def test_razorpay_timeout_is_unavailable_and_stores_nothing(
        self, payments: PaymentsHarness
    ) -> None:
        user_id = new_user()
        await payments.faults(orders="timeout", times=1)
        razorpay = RazorpayClient(
            payments.razorpay.url, KEY_ID, KEY_SECRET, "", total_timeout=0.5
        )
        service = PaymentService(BillingService(), payments.sessions, razorpay)
        token = payments.billing.user_token(user_id)
        caller = Caller(user=payments.billing.signer.verify(token, Audience.USER))
        started = time.monotonic()

        with pytest.raises(Unavailable):
            await service.create_order(caller, OrderRequest("credits", "", "", 10))

        await razorpay.close()
        assert time.monotonic() - started < 2
        assert await payments.payments_of(user_id) == []


class TestVerifyPayment:
    async def test_verified_credit_purchase_adds_the_credits(
        self, payments: PaymentsHarness
    ) -> None:
        user_id = new_user()
        order = await payments.credit_order(user_id, credits=300)
        paid = await payments.checkout(order.order_id)

        reply = await payments.verify(user_id, paid)

        assert (reply.credits_added_micros, reply.balance_micros) == (
            300 * CREDIT,
            300 * CREDIT,
        )
        assert (reply.type, reply.plan_id, reply.HasField("period_end")) == (
            "credits",
            "",
            False,
        )
        payment = await payments.payment(order.order_id)
        assert payment is not None
        assert payment.status == "completed"
        assert payment.payment_id == paid["razorpay_payment_id"]
        [entry] = await payments.purchases(user_id)
        assert (entry.amount_micros, entry.reference) == (300 * CREDIT, str(payment.id))
        assert entry.tags["order_id"] == order.order_id

    async def test_purchase_adds_to_credits_already_there(
        self, payments: PaymentsHarness
    ) -> None:
        user_id = new_user()
        await payments.billing.grant(user_account(user_id), 7 * CREDIT)
        paid = await payments.paid_credit_order(user_id, credits=5)

        reply = await payments.verify(user_id, paid)

        assert reply.balance_micros == 12 * CREDIT

    async def test_verified_subscription_grants_the_plan_credits_for_a_month(
        self, payments: PaymentsHarness
    ) -> None:
        user_id = new_user()
        order = await payments.order(user_id, plan_id="standard")
        paid = await payments.checkout(order.order_id)

        reply = await payments.verify(user_id, paid)

        assert reply.credits_added_micros == STANDARD_CREDITS * CREDIT
        assert (reply.plan_id, reply.plan_name, reply.billing_cycle) == (
            "standard",
            "Standard",
            "monthly",
        )
        period_end = reply.period_end.ToDatetime(tzinfo=UTC)
        in_a_month = datetime.now(UTC) + timedelta(days=31)
        assert in_a_month - timedelta(days=4) < period_end < in_a_month
        subscription = await payments.subscription(user_id)
        assert subscription is not None
        assert (subscription.plan_id, subscription.status) == ("standard", "active")
        assert subscription.current_period_end == period_end

    async def test_second_subscription_payment_extends_the_period(
        self, payments: PaymentsHarness
    ) -> None:
        user_id = new_user()
        first = await payments.order(user_id, plan_id="starter")
        first_end = (
            await payments.verify(user_id, await payments.checkout(first.order_id))
        ).period_end.ToDatetime(tzinfo=UTC)
        second = await payments.order(
            user_id, plan_id="starter", billing_cycle="yearly"
        )

        reply = await payments.verify(user_id, await payments.checkout(second.order_id))

        async with payments.sessions() as db:
            a_year_on = await db.scalar(
                text("SELECT CAST(:end AS timestamptz) + interval '1 year'"),
                {"end": first_end},
            )
        assert reply.period_end.ToDatetime(tzinfo=UTC) == a_year_on
        assert reply.balance_micros == 2 * 12_000 * CREDIT

    async def test_verifying_again_answers_the_same_and_grants_nothing_more(
        self, payments: PaymentsHarness
    ) -> None:
        user_id = new_user()
        order = await payments.order(user_id, plan_id="starter")
        paid = await payments.checkout(order.order_id)
        first = await payments.verify(user_id, paid)

        again = await payments.verify(user_id, paid)

        assert again == first
        assert len(await payments.purchases(user_id)) == 1
        assert await payments.balance(user_id) == 12_000 * CREDIT

    async def test_forged_signature_is_refused_and_grants_nothing(
        self, payments: PaymentsHarness
    ) -> None:
        user_id = new_user()
        order = await payments.credit_order(user_id)
        paid = await payments.checkout(order.order_id)

        status, error = await failure(
            payments.verify(user_id, paid, signature="0" * 64)
        )

        assert status == grpc.StatusCode.INVALID_ARGUMENT
        assert isinstance(error, PaymentFailed)
        assert error.message == "Invalid payment signature."
        assert await payments.balance(user_id) == 0
        payment = await payments.payment(order.order_id)
        assert payment is not None
        assert payment.status == "pending"

    async def test_signature_of_another_order_is_refused(
        self, payments: PaymentsHarness
    ) -> None:
        user_id = new_user()
        paid = await payments.paid_credit_order(user_id)
        other = await payments.credit_order(user_id)

        status, error = await failure(
            payments.verify(user_id, paid, order_id=other.order_id)
        )

        assert status == grpc.StatusCode.INVALID_ARGUMENT
        assert isinstance(error, PaymentFailed)
        assert await payments.balance(user_id) == 0

    async def test_someone_elses_order_is_not_found(
        self, payments: PaymentsHarness
    ) -> None:
        owner = new_user()
        paid = await payments.paid_credit_order(owner)

        status, error = await failure(payments.verify(new_user(), paid))

        assert status == grpc.StatusCode.NOT_FOUND
        assert isinstance(error, NotFound)
        assert await payments.balance(owner) == 0

    async def test_unknown_order_is_not_found(self, payments: PaymentsHarness) -> None:
        status, _ = await failure(
            payments.billing.stub.VerifyPayment(
                billing_pb2.VerifyPaymentRequest(
                    order_id="order_NoSuchOrder123",
                    payment_id="pay_NoSuchPayment12",
                    signature="f" * 64,
                ),
                metadata=payments.billing.user(new_user()),
            )
        )

        assert status == grpc.StatusCode.NOT_FOUND

    async def test_signed_payment_razorpay_does_not_know_is_refused(
        self, payments: PaymentsHarness
    ) -> None:
        """A correct signature (say, from a leaked key secret) is not enough:
        Razorpay must confirm the payment."""
        user_id = new_user()
        order = await payments.credit_order(user_id)
        payment_id = "pay_NeverMadeAtAll"
        signature = checkout_signature(order.order_id, payment_id, KEY_SECRET)

        status, error = await failure(
            payments.billing.stub.VerifyPayment(
                billing_pb2.VerifyPaymentRequest(
                    order_id=order.order_id, payment_id=payment_id, signature=signature
                ),
                metadata=payments.billing.user(user_id),
            )
        )

        assert status == grpc.StatusCode.INVALID_ARGUMENT
        assert isinstance(error, PaymentFailed)
        assert await payments.balance(user_id) == 0

    async def test_signed_payment_of_a_cheaper_order_is_refused(
        self, payments: PaymentsHarness
    ) -> None:
        user_id = new_user()
        cheap = await payments.paid_credit_order(user_id, credits=1)
        dear = await payments.credit_order(user_id, credits=1000)
        payment_id = cheap["razorpay_payment_id"]
        signature = checkout_signature(dear.order_id, payment_id, KEY_SECRET)

        status, error = await failure(
            payments.verify(user_id, cheap, order_id=dear.order_id, signature=signature)
        )

        assert status == grpc.StatusCode.INVALID_ARGUMENT
        assert error.message == "Razorpay does not confirm this payment."
        assert await payments.balance(user_id) == 0

    async def test_order_paid_after_a_declined_attempt_is_granted(
        self, payments: PaymentsHarness
    ) -> None:
        user_id = new_user()
        order = await payments.credit_order(user_id, credits=40)
        await payments.checkout(order.order_id, outcome="failure")
        paid = await payments.checkout(order.order_id)

        reply = await payments.verify(user_id, paid)

        assert reply.balance_micros == 40 * CREDIT

    async def test_razorpay_unreachable_leaves_the_payment_pending(
        self, payments: PaymentsHarness
    ) -> None:
        user_id = new_user()
        order = await payments.credit_order(user_id)
        paid = await payments.checkout(order.order_id)
        await payments.faults(payments="error_500")

        status, _ = await failure(payments.verify(user_id, paid))

        assert status == grpc.StatusCode.UNAVAILABLE
        payment = await payments.payment(order.order_id)
        assert payment is not None
        assert payment.status == "pending"
        assert await payments.balance(user_id) == 0

    async def test_concurrent_verifications_grant_once(
        self, payments: PaymentsHarness
    ) -> None:
        user_id = new_user()
        paid = await payments.paid_credit_order(user_id, credits=60)

        replies = await asyncio.gather(
            *(payments.verify(user_id, paid) for _ in range(5))
        )

        assert {reply.balance_micros for reply in replies} == {60 * CREDIT}
        assert len(await payments.purchases(user_id)) == 1


class TestListPayments:
    async def test_lists_the_callers_payments_newest_first_in_pages(
        self, payments: PaymentsHarness
    ) -> None:
        user_id = new_user()
        orders = [
            (await payments.credit_order(user_id, credits)).order_id
            for credits in (1, 2, 3)
        ]
        await payments.credit_order(new_user())
        metadata = payments.billing.user(user_id)

        first = await payments.billing.stub.ListPayments(
            billing_pb2.ListPaymentsRequest(page_size=2), metadata=metadata
        )
        second = await payments.billing.stub.ListPayments(
            billing_pb2.ListPaymentsRequest(
                page_size=2, page_token=first.next_page_token
            ),
            metadata=metadata,
        )

        listed = [p.order_id for p in (*first.payments, *second.payments)]
        assert listed == orders[::-1]
        assert second.next_page_token == ""
        assert first.payments[0].credits_micros == 3 * CREDIT
        assert first.payments[0].status == "pending"

    async def test_completed_payment_shows_its_razorpay_payment(
        self, payments: PaymentsHarness
    ) -> None:
        user_id = new_user()
        paid = await payments.paid_credit_order(user_id)
        await payments.verify(user_id, paid)

        reply = await payments.billing.stub.ListPayments(
            billing_pb2.ListPaymentsRequest(), metadata=payments.billing.user(user_id)
        )

        [payment] = reply.payments
        assert (payment.status, payment.payment_id) == (
            "completed",
            paid["razorpay_payment_id"],
        )
        assert payment.HasField("completed_at")

    @pytest.mark.parametrize("token", ["nonsense", "12.not-a-uuid", "-1." + "0" * 32])
    async def test_page_token_not_issued_here_is_refused(
        self, payments: PaymentsHarness, token: str
    ) -> None:
        status, error = await failure(
            payments.billing.stub.ListPayments(
                billing_pb2.ListPaymentsRequest(page_token=token),
                metadata=payments.billing.user(new_user()),
            )
        )

        assert status == grpc.StatusCode.INVALID_ARGUMENT
        assert fields_of(error) == {"page_token"}


class TestSimulateCheckout:
    async def test_pays_the_callers_order_and_answers_like_checkout(
        self, payments: PaymentsHarness
    ) -> None:
        user_id = new_user()
        order = await payments.credit_order(user_id)

        paid = await payments.billing.stub.SimulateCheckout(
            billing_pb2.SimulateCheckoutRequest(order_id=order.order_id),
            metadata=payments.billing.user(user_id),
        )

        assert paid.order_id == order.order_id
        assert paid.signature == checkout_signature(
            order.order_id, paid.payment_id, KEY_SECRET
        )
        [captured, order_paid] = await payments.events(order.order_id)
        assert (captured["event"], order_paid["event"]) == (
            "payment.captured",
            "order.paid",
        )

    async def test_declined_payment_is_payment_failed(
        self, payments: PaymentsHarness
    ) -> None:
        user_id = new_user()
        order = await payments.credit_order(user_id)

        status, error = await failure(
            payments.billing.stub.SimulateCheckout(
                billing_pb2.SimulateCheckoutRequest(
                    order_id=order.order_id, outcome="failure"
                ),
                metadata=payments.billing.user(user_id),
            )
        )

        assert status == grpc.StatusCode.INVALID_ARGUMENT
        assert isinstance(error, PaymentFailed)

    async def test_someone_elses_order_is_not_found(
        self, payments: PaymentsHarness
    ) -> None:
        order = await payments.credit_order(new_user())

        status, _ = await failure(
            payments.billing.stub.SimulateCheckout(
                billing_pb2.SimulateCheckoutRequest(order_id=order.order_id),
                metadata=payments.billing.user(new_user()),
            )
        )

        assert status == grpc.StatusCode.NOT_FOUND
        assert await payments.events(order.order_id) == []

    async def test_paid_order_cannot_be_paid_again(
        self, payments: PaymentsHarness
    ) -> None:
        user_id = new_user()
        paid = await payments.paid_credit_order(user_id)
        await payments.verify(user_id, paid)

        status, error = await failure(
            payments.billing.stub.SimulateCheckout(
                billing_pb2.SimulateCheckoutRequest(order_id=paid["razorpay_order_id"]),
                metadata=payments.billing.user(user_id),
            )
        )

        assert status == grpc.StatusCode.FAILED_PRECONDITION
        assert isinstance(error, FailedPrecondition)

    async def test_not_available_without_the_simulator(
        self, billing: BillingClient
    ) -> None:
        status, _ = await failure(
            billing.stub.SimulateCheckout(
                billing_pb2.SimulateCheckoutRequest(order_id="order_Anything12345"),
                metadata=billing.user(new_user()),
            )
        )

        assert status == grpc.StatusCode.NOT_FOUND
