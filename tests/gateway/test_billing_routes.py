"""gateway/routers/billing.py over real HTTP: /api/credits in front of a real
billing service and PostgreSQL.

The module runs its own billing service and gateway on ports of their own,
and signs user tokens with the suite's secret the way auth does, so the
accounts here see no sign-up grant or other test's credits.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import httpx
import pytest
from omnihub.billing.v1 import billing_pb2

from gateway.app import create_app
from gateway.routers import billing as billing_routes
from libs.config import Settings
from libs.tokens import Audience
from services.auth.main import AuthProcess
from services.billing.main import BillingProcess
from tests.gateway.factories import assert_error, bearer, sibling_settings
from tests.services.billing.factories import CREDIT, BillingClient, user_account
from tests.suite import ServedApp, run_service, serve_asgi

TRANSACTION_FIELDS = {
    "id",
    "type",
    "amount",
    "balanceAfter",
    "description",
    "reference",
    "createdAt",
}


@dataclass
class CreditsApi:
    gateway: ServedApp
    billing: BillingClient

    def http(self) -> httpx.AsyncClient:
        return self.gateway.client()

    def user(self) -> tuple[billing_pb2.AccountRef, dict[str, str]]:
        """A fresh user's account and the headers that sign them in."""
        account = user_account()
        return account, bearer(self.billing.user_token(account.owner_id))


@pytest.fixture(scope="module")
async def api(
    settings: Settings, auth_service: AuthProcess
) -> AsyncIterator[CreditsApi]:
    own = sibling_settings(settings)
    billing_service = await run_service(BillingProcess(), own)
    app = create_app(own)
    app.include_router(billing_routes.router)
    gateway = await serve_asgi(app)
    client = BillingClient(own)
    yield CreditsApi(gateway, client)
    await client.close()
    await gateway.stop()
    await billing_service.stop(grace=0)


async def _capture(billing: BillingClient, hold_id: str, amount: int) -> None:
    await billing.stub.Capture(
        billing_pb2.CaptureRequest(
            hold_id=hold_id,
            amount_micros=amount,
            idempotency_key=f"test:capture:{uuid.uuid4()}",
        ),
        metadata=billing.service,
    )


class TestBalance:
    async def test_balance_shows_spendable_and_held_credits_as_numbers(
        self, api: CreditsApi
    ) -> None:
        account, headers = api.user()
        await api.billing.grant(account, 12_500_000)
        await api.billing.hold(account, 2_250_000)

        async with api.http() as http:
            response = await http.get("/api/credits/balance", headers=headers)

        assert response.status_code == 200, response.text
        assert response.json() == {"credits": 10.25, "held": 2.25}
        assert response.headers["cache-control"] == "no-store"

    async def test_new_user_has_no_credits(self, api: CreditsApi) -> None:
        _, headers = api.user()

        async with api.http() as http:
            response = await http.get("/api/credits/balance", headers=headers)

        assert response.json() == {"credits": 0, "held": 0}

    async def test_balance_needs_a_signed_in_user(self, api: CreditsApi) -> None:
        async with api.http() as http:
            response = await http.get("/api/credits/balance")

        assert_error(response, 401, "unauthenticated")

    async def test_operator_token_is_refused(self, api: CreditsApi) -> None:
        token = api.billing.signer.issue(
            Audience.ADMIN, str(uuid.uuid4()), 900, session_id=str(uuid.uuid4())
        )

        async with api.http() as http:
            response = await http.get("/api/credits/balance", headers=bearer(token))

        assert_error(response, 403, "permission_denied")


class TestHistory:
    async def test_history_lists_entries_newest_first_in_credits(
        self, api: CreditsApi
    ) -> None:
        account, headers = api.user()
        await api.billing.grant(account, 5 * CREDIT, reason="Welcome")
        hold = await api.billing.hold(
            account, 1_500_000, reason="Image generation", reference="generation-1"
        )
        await _capture(api.billing, hold.hold_id, CREDIT)

        async with api.http() as http:
            response = await http.get("/api/credits/history", headers=headers)

        assert response.status_code == 200, response.text
        body = response.json()
        assert body["nextCursor"] is None
        rows = body["transactions"]
        assert all(row.keys() == TRANSACTION_FIELDS for row in rows)
        assert [(r["type"], r["amount"], r["balanceAfter"]) for r in rows] == [
            ("capture", 0.5, 4),
            ("hold", -1.5, 3.5),
            ("grant", 5, 5),
        ]
        assert rows[1]["description"] == "Image generation"
        assert rows[1]["reference"] == "generation-1"
        assert rows[2]["reference"] is None
        datetime.fromisoformat(rows[0]["createdAt"])

    async def test_history_pages_with_next_cursor(self, api: CreditsApi) -> None:
        account, headers = api.user()
        for amount in (1, 2, 3):
            await api.billing.grant(account, amount * CREDIT)

        async with api.http() as http:
            first = (
                await http.get("/api/credits/history?limit=2", headers=headers)
            ).json()
            second = (
                await http.get(
                    "/api/credits/history",
                    params={"limit": 2, "cursor": first["nextCursor"]},
                    headers=headers,
                )
            ).json()

        assert [row["amount"] for row in first["transactions"]] == [3, 2]
        assert [row["amount"] for row in second["transactions"]] == [1]
        assert second["nextCursor"] is None

    async def test_history_shows_only_the_callers_entries(
        self, api: CreditsApi
    ) -> None:
        _, headers = api.user()
        someone_else, _ = api.user()
        await api.billing.grant(someone_else, CREDIT)

        async with api.http() as http:
            response = await http.get("/api/credits/history", headers=headers)

        assert response.json() == {"transactions": [], "nextCursor": None}

    @pytest.mark.parametrize("limit", ["0", "101", "many"])
    async def test_limit_outside_one_to_a_hundred_is_bad_request(
        self, api: CreditsApi, limit: str
    ) -> None:
        _, headers = api.user()

        async with api.http() as http:
            response = await http.get(
                "/api/credits/history", params={"limit": limit}, headers=headers
            )

        body = assert_error(response, 400, "invalid_argument")
        assert [detail["field"] for detail in body["details"]] == ["limit"]

    async def test_cursor_not_issued_by_the_service_is_bad_request(
        self, api: CreditsApi
    ) -> None:
        _, headers = api.user()

        async with api.http() as http:
            response = await http.get(
                "/api/credits/history", params={"cursor": "abc"}, headers=headers
            )

        assert_error(response, 400, "invalid_argument")
