"""Sign-up credits reach the user through billing exactly once, also when
billing is down at sign-up time, and the responses show the real balance."""

from __future__ import annotations

import asyncio
import time
import uuid

from libs.config import Settings
from services.billing.main import BillingProcess
from tests.fakes.google import FakeGoogle
from tests.gateway.factories import (
    extra_gateway,
    login,
    own_auth_service,
    register,
    sibling_settings,
)
from tests.suite import ServedApp, run_service

SIGNUP_CREDITS = 10
OUTBOX_DEADLINE_SECONDS = 15.0


async def test_register_response_shows_the_signup_credits(gateway: ServedApp) -> None:
    async with gateway.client() as http:
        user = await register(http)
    assert user.body["user"]["credits"] == SIGNUP_CREDITS


async def test_me_and_login_show_the_balance_from_billing(gateway: ServedApp) -> None:
    async with gateway.client() as http:
        user = await register(http)
        me = await http.get("/api/auth/me", headers=user.auth)
        again = await login(http, user.email)
    assert me.json()["credits"] == SIGNUP_CREDITS
    assert again.body["user"]["credits"] == SIGNUP_CREDITS


async def test_signup_grant_is_written_once(gateway: ServedApp) -> None:
    async with gateway.client() as http:
        user = await register(http)
        await login(http, user.email)
        history = await http.get("/api/credits/history", headers=user.auth)
    grants = [e for e in history.json()["transactions"] if e["type"] == "grant"]
    assert [g["amount"] for g in grants] == [SIGNUP_CREDITS]


async def test_billing_outage_at_signup_delays_the_credits_without_losing_them(
    settings: Settings,
) -> None:
    # An auth service whose billing address has nothing listening yet.
    async with own_auth_service(settings) as auth_settings:
        gateway_settings = sibling_settings(
            settings,
            auth_address=auth_settings.auth_address,
            billing_address=auth_settings.billing_address,
        )
        async with (
            extra_gateway(gateway_settings) as gateway,
            gateway.client() as http,
        ):
            user = await register(http)
            assert user.body["user"]["credits"] is None

            billing = await run_service(BillingProcess(), auth_settings)
            try:
                credits = await _wait_for_credits(http, user.auth)
                history = await http.get("/api/credits/history", headers=user.auth)
            finally:
                await billing.stop(grace=0)
    assert credits == SIGNUP_CREDITS
    grants = [e for e in history.json()["transactions"] if e["type"] == "grant"]
    assert len(grants) == 1


async def _wait_for_credits(http: object, auth: dict[str, str]) -> float | None:
    deadline = time.monotonic() + OUTBOX_DEADLINE_SECONDS
    credits = None
    while time.monotonic() < deadline:
        me = await http.get("/api/auth/me", headers=auth)  # type: ignore[attr-defined]
        credits = me.json()["credits"]
        if credits:
            return float(credits)
        await asyncio.sleep(0.25)
    return credits


async def test_google_sign_up_gets_the_signup_credits(
    gateway: ServedApp, google: FakeGoogle
) -> None:
    token = google.id_token(email=f"g-{uuid.uuid4().hex[:10]}@gmail.com")
    async with gateway.client() as http:
        response = await http.post("/api/auth/google", json={"credential": token})
    assert response.status_code == 200, response.text
    assert response.json()["user"]["credits"] == SIGNUP_CREDITS
