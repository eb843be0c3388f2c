"""gateway/routers/payments.py over real HTTP: plans, orders, checkout,
verification, webhooks and history in front of a real billing service,
PostgreSQL and the Razorpay simulator.

The module runs its own billing service with the simulator's keys, and a
gateway on a port chosen up front, so the simulator can send its signed
webhooks to that gateway as Razorpay would. Users are fresh ids with tokens
signed like auth's, so no sign-up grant shows in their balances. Routes that
need the suite's catalog, or a billing without keys, use the suite's gateway.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest
from omnihub.billing.v1 import billing_pb2

from deploy.simulators.razorpay import create_app as create_simulator
from gateway.app import create_app
from libs.config import Settings
from libs.db import create_engine, session_factory
from services.auth.main import AuthProcess
from services.billing import repository
from services.billing.main import BillingProcess, describe
from services.billing.models import SCHEMA
from services.billing.razorpay import webhook_signature
from services.catalog.main import CatalogProcess
from tests.gateway.factories import assert_error, bearer, sibling_settings
from tests.services.billing.factories import BillingClient
from tests.suite import ServedApp, free_port, run_service, serve_asgi

KEY_ID = "rzp_test_gateway"
KEY_SECRET = "gateway-key-secret"
WEBHOOK_SECRET = "gateway-webhook-secret"
PLAN_FIELDS = {
    "id",
    "name",
    "priceMonthly",
    "priceYearly",
    "creditsPerMonth",
    "features",
    "isPopular",
    "displayOrder",
}
ORDER_FIELDS = {"orderId", "amount", "currency", "key", "simulated"}


@dataclass
class PaymentsApi:
    gateway: ServedApp
    razorpay: ServedApp
    billing: BillingClient

    def http(self) -> httpx.AsyncClient:
        return self.gateway.client()

    def user(self) -> dict[str, str]:
        """Headers that sign in a fresh user."""
        return bearer(self.billing.user_token(str(uuid.uuid4())))

    async def order(self, headers: dict[str, str], **body: Any) -> dict[str, Any]:
        async with self.http() as http:
            response = await http.post(
                "/api/payments/create-order", json=body, headers=headers
            )
        assert response.status_code == 201, response.text
        order: dict[str, Any] = response.json()
        return order

    async def checkout(
        self, headers: dict[str, str], order_id: str, outcome: str = "success"
    ) -> httpx.Response:
        async with self.http() as http:
            return await http.post(
                "/api/payments/simulated-checkout",
                json={"orderId": order_id, "outcome": outcome},
                headers=headers,
            )

    async def paid(self, headers: dict[str, str], **body: Any) -> dict[str, Any]:
        """An order paid in the simulated Checkout: what Checkout hands back."""
        order = await self.order(headers, **body)
        response = await self.checkout(headers, order["orderId"])
        assert response.status_code == 200, response.text
        paid: dict[str, Any] = response.json()
        return paid

    async def verify(
        self, headers: dict[str, str], paid: dict[str, Any], **extra: Any
    ) -> httpx.Response:
        async with self.http() as http:
            return await http.post(
                "/api/payments/verify", json={**paid, **extra}, headers=headers
            )

    async def balance(self, headers: dict[str, str]) -> float:
        async with self.http() as http:
            response = await http.get("/api/credits/balance", headers=headers)
        assert response.status_code == 200, response.text
        credits: float = response.json()["credits"]
        return credits

    async def history(self, headers: dict[str, str], **params: Any) -> dict[str, Any]:
        async with self.http() as http:
            response = await http.get(
                "/api/payments/history", params=params, headers=headers
            )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def events(self, order_id: str) -> list[dict[str, Any]]:
        async with self.razorpay.client() as http:
            items = (await http.get("/simulator/webhooks")).json()["items"]
        return [item for item in items if order_id in item["body"]]

    async def faults(self, **faults: object) -> None:
        async with self.razorpay.client() as http:
            response = await http.post("/simulator/faults", json=faults)
        assert response.status_code == 200, response.text


@pytest.fixture(scope="module", autouse=True)
async def books_balance(settings: Settings) -> AsyncIterator[None]:
    yield
    engine = create_engine(settings, SCHEMA)
    try:
        async with session_factory(engine)() as db:
            unbalanced = await repository.unbalanced_accounts(db)
    finally:
        await engine.dispose()
    assert not unbalanced, "\n".join(describe(account) for account in unbalanced)


@pytest.fixture(scope="module")
async def api(
    settings: Settings, auth_service: AuthProcess
) -> AsyncIterator[PaymentsApi]:
    gateway_port = free_port()
    webhook_url = f"http://127.0.0.1:{gateway_port}/api/payments/webhook"
    razorpay = await serve_asgi(
        create_simulator(KEY_ID, KEY_SECRET, WEBHOOK_SECRET, webhook_url)
    )
    own = sibling_settings(
        settings,
        razorpay_base_url=razorpay.url,
        razorpay_key_id=KEY_ID,
        razorpay_key_secret=KEY_SECRET,
        razorpay_webhook_secret=WEBHOOK_SECRET,
    )
    billing_service = await run_service(BillingProcess(), own)
    gateway = await serve_asgi(create_app(own), port=gateway_port)
    client = BillingClient(own)
    yield PaymentsApi(gateway, razorpay, client)
    await client.close()
    await gateway.stop()
    await billing_service.stop(grace=0)
    await razorpay.stop()


@pytest.fixture(autouse=True)
async def no_faults(api: PaymentsApi) -> AsyncIterator[None]:
    yield
    await api.faults(orders="ok", payments="ok")


@pytest.fixture
def suite_user(settings: Settings) -> dict[str, str]:
    """A user of the suite's own gateway (whose billing has no keys)."""
    client = BillingClient(settings)
    return bearer(client.user_token(str(uuid.uuid4())))


class TestPlans:
    async def test_plans_are_a_bare_array_in_the_web_clients_shape(
        self, api: PaymentsApi
    ) -> None:
        async with api.http() as http:
            response = await http.get("/api/subscription-plans")

        assert response.status_code == 200, response.text
        plans = response.json()
        assert [plan.keys() for plan in plans] == [PLAN_FIELDS] * 3
        standard = plans[1]
        assert standard["id"] == "standard"
        assert (standard["priceMonthly"], standard["priceYearly"]) == (2700, 25920)
        assert (standard["creditsPerMonth"], standard["isPopular"]) == (24000, 1)
        assert [plan["isPopular"] for plan in plans] == [0, 1, 0]
        assert all(isinstance(text, str) for text in standard["features"])


class TestCreateOrder:
    async def test_credit_order_answers_what_checkout_needs(
        self, api: PaymentsApi
    ) -> None:
        order = await api.order(api.user(), type="credits", credits=100)

        assert order.keys() == ORDER_FIELDS
        assert order["orderId"].startswith("order_")
        assert (order["amount"], order["currency"], order["key"]) == (
            10_000,
            "INR",
            KEY_ID,
        )
        assert order["simulated"] is True

    async def test_web_clients_subscription_order_is_priced_in_paise(
        self, api: PaymentsApi
    ) -> None:
        order = await api.order(
            api.user(), planId="standard", billingCycle="yearly", type="subscription"
        )

        assert order["amount"] == 25920 * 100

    @pytest.mark.parametrize(
        "credits", [0, -1, 1.5, 10**30, "100", 100_001, True, None]
    )
    async def test_credits_that_are_not_a_sensible_count_are_refused(
        self, api: PaymentsApi, credits: object
    ) -> None:
        headers = api.user()

        async with api.http() as http:
            response = await http.post(
                "/api/payments/create-order",
                json={"type": "credits", "credits": credits},
                headers=headers,
            )

        body = assert_error(response, 400, "invalid_argument")
        assert [detail["field"] for detail in body["details"]] == ["credits"]
        assert (await api.history(headers))["payments"] == []

    async def test_unknown_plan_is_refused_naming_plan_id(
        self, api: PaymentsApi
    ) -> None:
        async with api.http() as http:
            response = await http.post(
                "/api/payments/create-order",
                json={"planId": "platinum", "billingCycle": "monthly"},
                headers=api.user(),
            )

        body = assert_error(response, 400, "invalid_argument")
        assert body["details"] == [
            {"field": "planId", "message": 'There is no plan "platinum".'}
        ]

    async def test_keys_the_route_does_not_know_are_refused(
        self, api: PaymentsApi
    ) -> None:
        async with api.http() as http:
            response = await http.post(
                "/api/payments/create-order",
                json={"type": "credits", "credits": 5, "amount": 1},
                headers=api.user(),
            )

        body = assert_error(response, 400, "invalid_argument")
        assert [detail["field"] for detail in body["details"]] == ["amount"]

    async def test_needs_a_signed_in_user(self, api: PaymentsApi) -> None:
        async with api.http() as http:
            response = await http.post(
                "/api/payments/create-order", json={"type": "credits", "credits": 5}
            )

        assert_error(response, 401, "unauthenticated")

    async def test_razorpay_failure_is_503_and_leaves_no_payment(
        self, api: PaymentsApi
    ) -> None:
        headers = api.user()
        await api.faults(orders="error_500", times=1)

        async with api.http() as http:
            response = await http.post(
                "/api/payments/create-order",
                json={"type": "credits", "credits": 5},
                headers=headers,
            )

        assert_error(response, 503, "unavailable")
        assert (await api.history(headers))["payments"] == []

    async def test_without_keys_payments_are_not_configured(
        self, gateway: ServedApp, suite_user: dict[str, str]
    ) -> None:
        async with gateway.client() as http:
            response = await http.post(
                "/api/payments/create-order",
                json={"type": "credits", "credits": 5},
                headers=suite_user,
            )

        body = assert_error(response, 503, "not_configured")
        assert body["error"] == "Payments are not configured on this server."


class TestVerify:
    async def test_buys_credits_end_to_end(self, api: PaymentsApi) -> None:
        headers = api.user()
        paid = await api.paid(headers, type="credits", credits=250)

        response = await api.verify(headers, paid, type="credits")

        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["success"], body["credits"], body["creditsAdded"]) == (
            True,
            250,
            250,
        )
        assert body["subscription"] is None
        assert await api.balance(headers) == 250
        [payment] = (await api.history(headers))["payments"]
        assert (payment["status"], payment["credits"], payment["amount"]) == (
            "completed",
            250,
            25_000,
        )

    async def test_subscription_purchase_reports_the_plan(
        self, api: PaymentsApi
    ) -> None:
        headers = api.user()
        paid = await api.paid(headers, planId="starter", billingCycle="monthly")

        response = await api.verify(
            headers, paid, planId="starter", billingCycle="monthly", type="subscription"
        )

        body = response.json()
        assert body["credits"] == 12000
        subscription = body["subscription"]
        assert (subscription["planId"], subscription["planName"]) == (
            "starter",
            "Starter",
        )
        assert (subscription["billingCycle"], subscription["creditsAdded"]) == (
            "monthly",
            12000,
        )
        assert datetime.fromisoformat(subscription["periodEnd"]) > datetime.now(
            datetime.fromisoformat(subscription["periodEnd"]).tzinfo
        )

    async def test_verifying_again_gives_the_same_answer(
        self, api: PaymentsApi
    ) -> None:
        headers = api.user()
        paid = await api.paid(headers, type="credits", credits=3)
        first = await api.verify(headers, paid)

        again = await api.verify(headers, paid)

        assert again.json() == first.json()
        assert await api.balance(headers) == 3

    async def test_forged_signature_is_refused_and_grants_nothing(
        self, api: PaymentsApi
    ) -> None:
        headers = api.user()
        order = await api.order(headers, type="credits", credits=9)
        forged = {
            "razorpay_order_id": order["orderId"],
            "razorpay_payment_id": "pay_AnythingAtAll1",
            "razorpay_signature": "ab" * 32,
        }

        response = await api.verify(headers, forged)

        assert_error(response, 400, "payment_failed")
        assert await api.balance(headers) == 0

    async def test_someone_elses_order_is_not_found(self, api: PaymentsApi) -> None:
        owner = api.user()
        paid = await api.paid(owner, type="credits", credits=8)

        response = await api.verify(api.user(), paid)

        assert_error(response, 404, "not_found")

    async def test_camel_case_keys_are_refused(self, api: PaymentsApi) -> None:
        async with api.http() as http:
            response = await http.post(
                "/api/payments/verify",
                json={
                    "razorpayOrderId": "order_Something1234",
                    "razorpayPaymentId": "pay_Something12345",
                    "razorpaySignature": "00",
                },
                headers=api.user(),
            )

        body = assert_error(response, 400, "invalid_argument")
        assert {detail["field"] for detail in body["details"]} >= {
            "razorpay_order_id",
            "razorpayOrderId",
        }


class TestWebhook:
    async def test_simulators_webhooks_grant_before_the_browser_verifies(
        self, api: PaymentsApi
    ) -> None:
        headers = api.user()

        paid = await api.paid(headers, type="credits", credits=12)

        assert await api.balance(headers) == 12
        events = await api.events(paid["razorpay_order_id"])
        assert [(e["event"], e["deliveries"]) for e in events] == [
            ("payment.captured", ["200"]),
            ("order.paid", ["200"]),
        ]

    async def test_redelivered_webhook_is_accepted_and_not_applied_again(
        self, api: PaymentsApi
    ) -> None:
        headers = api.user()
        paid = await api.paid(headers, type="credits", credits=4)
        [captured, _] = await api.events(paid["razorpay_order_id"])

        async with api.razorpay.client() as http:
            response = await http.post(
                "/simulator/webhooks/deliver", json={"event_id": captured["id"]}
            )

        [redelivered] = response.json()["items"]
        assert redelivered["deliveries"] == ["200", "200"]
        assert await api.balance(headers) == 4

    async def test_bad_signature_is_400_in_the_error_shape(
        self, api: PaymentsApi
    ) -> None:
        body = b'{"event":"payment.captured","payload":{}}'

        async with api.http() as http:
            response = await http.post(
                "/api/payments/webhook",
                content=body,
                headers={
                    "X-Razorpay-Signature": webhook_signature(body, "not-the-secret"),
                    "X-Razorpay-Event-Id": uuid.uuid4().hex,
                },
            )

        error = assert_error(response, 400, "payment_failed")
        assert error["error"] == "Invalid webhook signature."

    async def test_body_changed_in_transit_fails_the_signature(
        self, api: PaymentsApi
    ) -> None:
        """The signature covers the bytes: the same JSON written differently
        is refused, so the gateway must pass the body on untouched."""
        headers = api.user()
        order = await api.order(headers, type="credits", credits=6)
        async with api.razorpay.client() as http:
            await http.post("/simulator/faults", json={"hold_webhooks": True})
            try:
                await http.post(
                    f"/simulator/checkout/{order['orderId']}/pay",
                    json={"outcome": "success"},
                )
            finally:
                await http.post("/simulator/faults", json={"hold_webhooks": False})
        [captured, _] = await api.events(order["orderId"])
        exact = captured["body"].encode()
        rewritten = json.dumps(json.loads(exact), indent=2).encode()
        signed = {
            "X-Razorpay-Signature": webhook_signature(exact, WEBHOOK_SECRET),
            "X-Razorpay-Event-Id": captured["id"],
        }

        async with api.http() as http:
            refused = await http.post(
                "/api/payments/webhook", content=rewritten, headers=signed
            )
            accepted = await http.post(
                "/api/payments/webhook", content=exact, headers=signed
            )

        assert_error(refused, 400, "payment_failed")
        assert (accepted.status_code, accepted.json()) == (200, {"received": True})
        assert await api.balance(headers) == 6

    async def test_webhook_for_an_unknown_order_is_accepted(
        self, api: PaymentsApi
    ) -> None:
        document = {
            "entity": "event",
            "event": "payment.captured",
            "payload": {
                "payment": {
                    "entity": {
                        "id": "pay_NotOurs12345678",
                        "order_id": "order_NotOurs1234567",
                        "amount": 5000,
                        "currency": "INR",
                        "status": "captured",
                    }
                }
            },
            "created_at": int(time.time()),
        }
        body = json.dumps(document).encode()

        async with api.http() as http:
            response = await http.post(
                "/api/payments/webhook",
                content=body,
                headers={
                    "X-Razorpay-Signature": webhook_signature(body, WEBHOOK_SECRET),
                    "X-Razorpay-Event-Id": uuid.uuid4().hex,
                },
            )

        assert (response.status_code, response.json()) == (200, {"received": True})


class TestSimulatedCheckout:
    async def test_declined_payment_is_400_and_the_order_is_failed(
        self, api: PaymentsApi
    ) -> None:
        headers = api.user()
        order = await api.order(headers, type="credits", credits=2)

        response = await api.checkout(headers, order["orderId"], outcome="failure")

        assert_error(response, 400, "payment_failed")
        [payment] = (await api.history(headers))["payments"]
        assert payment["status"] == "failed"
        assert await api.balance(headers) == 0

    async def test_someone_elses_order_is_not_found(self, api: PaymentsApi) -> None:
        order = await api.order(api.user(), type="credits", credits=2)

        response = await api.checkout(api.user(), order["orderId"])

        assert_error(response, 404, "not_found")
        assert await api.events(order["orderId"]) == []

    async def test_not_available_where_razorpay_is_not_simulated(
        self, gateway: ServedApp, suite_user: dict[str, str]
    ) -> None:
        async with gateway.client() as http:
            response = await http.post(
                "/api/payments/simulated-checkout",
                json={"orderId": "order_Anything12345"},
                headers=suite_user,
            )

        assert_error(response, 404, "not_found")


class TestHistory:
    async def test_history_pages_newest_first(self, api: PaymentsApi) -> None:
        headers = api.user()
        for credits in (1, 2, 3):
            await api.order(headers, type="credits", credits=credits)

        first = await api.history(headers, limit=2)
        second = await api.history(headers, limit=2, cursor=first["nextCursor"])

        assert [p["credits"] for p in first["payments"]] == [3, 2]
        assert [p["credits"] for p in second["payments"]] == [1]
        assert second["nextCursor"] is None
        assert first["payments"][0]["status"] == "pending"
        assert first["payments"][0]["paymentId"] is None

    async def test_history_needs_a_signed_in_user(self, api: PaymentsApi) -> None:
        async with api.http() as http:
            response = await http.get("/api/payments/history")

        assert_error(response, 401, "unauthenticated")


class TestRazorpayKey:
    async def test_key_id_is_public(self, api: PaymentsApi) -> None:
        async with api.http() as http:
            response = await http.get("/api/settings/razorpay-key")

        assert response.json() == {"keyId": KEY_ID}

    async def test_key_id_is_null_without_keys(self, gateway: ServedApp) -> None:
        async with gateway.client() as http:
            response = await http.get("/api/settings/razorpay-key")

        assert response.json() == {"keyId": None}


class TestPricingSettings:
    async def test_free_credits_come_from_billing(
        self, gateway: ServedApp, settings: Settings
    ) -> None:
        client = BillingClient(settings)
        expected = await client.stub.GetBillingSettings(
            billing_pb2.GetBillingSettingsRequest()
        )
        await client.close()

        async with gateway.client() as http:
            response = await http.get("/api/pricing-settings")

        body = response.json()
        assert body["freeCredits"] == expected.signup_credits_micros / 1_000_000
        assert body["creditPrice"] > 0

    async def test_prices_still_show_while_billing_is_unreachable(
        self, settings: Settings, catalog_service: CatalogProcess
    ) -> None:
        unreachable = settings.model_copy(
            update={"billing_address": f"127.0.0.1:{free_port()}"}
        )
        served = await serve_asgi(create_app(unreachable))
        try:
            async with served.client() as http:
                response = await http.get("/api/pricing-settings")
        finally:
            await served.stop()

        assert response.status_code == 200, response.text
        assert "freeCredits" not in response.json()
        assert "creditPrice" in response.json()
