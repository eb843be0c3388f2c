"""Rate limits through the real gateway: operators' rules for a user or a
tier, enforced on the expensive routes only, with one allowance shared by
every gateway replica (the counter lives in PostgreSQL behind the admin
service)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from sqlalchemy import text

from libs.config import Settings
from libs.db import create_engine
from libs.tokens import Audience, TokenSigner
from services.admin.main import AdminProcess
from services.billing.models import SCHEMA as BILLING_SCHEMA
from tests.gateway.factories import (
    SignedInUser,
    assert_error,
    extra_gateway,
    serve_gateway,
    sibling_settings,
)
from tests.gateway.operators import Operators, SignedInOperator
from tests.suite import ServedApp, free_port, run_service

# Longer than two of the suite's rule polls (0.2 s each).
RULES_REACH_GATEWAYS_SECONDS = 0.45
# An expensive route; an empty body is refused (400) after the limiter ran.
GENERATE = "/api/generate"


@pytest.fixture
async def http(admin_gateway: ServedApp) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_gateway.client() as client:
        yield client


@asynccontextmanager
async def rule(
    http: httpx.AsyncClient,
    operator: SignedInOperator,
    subject: str,
    requests: int,
    window_seconds: int = 60,
) -> AsyncIterator[None]:
    """A rule in force on every gateway until the block ends."""
    response = await http.put(
        f"/api/admin/rate-limits/{subject}",
        json={"requests": requests, "windowSeconds": window_seconds},
        headers=operator.auth,
    )
    assert response.status_code == 200, response.text
    await asyncio.sleep(RULES_REACH_GATEWAYS_SECONDS)
    try:
        yield
    finally:
        await http.delete(f"/api/admin/rate-limits/{subject}", headers=operator.auth)
        if subject.startswith("tier:"):
            # Other tests' users must not meet this tier's rule.
            await asyncio.sleep(RULES_REACH_GATEWAYS_SECONDS)


def signed_in(settings: Settings) -> SignedInUser:
    """A user token as auth signs one; the limiter needs no account behind it
    (and signing up through auth is slow: a password hash)."""
    user_id = str(uuid.uuid4())
    token = TokenSigner(settings.signing_secret()).issue(
        Audience.USER, user_id, 900, session_id=str(uuid.uuid4())
    )
    return SignedInUser("", "", {"user": {"id": user_id}, "accessToken": token})


async def generate(http: httpx.AsyncClient, user: SignedInUser) -> httpx.Response:
    return await http.post(GENERATE, json={}, headers=user.auth)


async def statuses(
    http: httpx.AsyncClient, user: SignedInUser, count: int
) -> list[int]:
    return [(await generate(http, user)).status_code for _ in range(count)]


class TestPerUser:
    async def test_the_request_over_the_allowance_is_429_with_retry_after(
        self, http: httpx.AsyncClient, operators: Operators, settings: Settings
    ) -> None:
        operator = await operators.of(http, "superadmin")
        user = signed_in(settings)

        async with rule(http, operator, f"user:{user.id}", 3, 60):
            allowed = await statuses(http, user, 3)
            refused = await generate(http, user)

        assert allowed == [400, 400, 400]
        body = assert_error(refused, 429, "rate_limited")
        assert "Try again in 20 seconds" in body["message"]
        assert 19 <= int(refused.headers["retry-after"]) <= 21

    async def test_reads_and_cheap_routes_are_never_limited(
        self, http: httpx.AsyncClient, operators: Operators, settings: Settings
    ) -> None:
        operator = await operators.of(http, "superadmin")
        user = signed_in(settings)

        async with rule(http, operator, f"user:{user.id}", 1, 60):
            await generate(http, user)
            reads = [
                (await http.get("/api/models", headers=user.auth)).status_code
                for _ in range(5)
            ]
            estimate = await http.post(
                "/api/upscale/calculate", json={}, headers=user.auth
            )

        assert reads == [200] * 5
        assert estimate.status_code != 429

    async def test_other_users_keep_their_own_allowance(
        self, http: httpx.AsyncClient, operators: Operators, settings: Settings
    ) -> None:
        operator = await operators.of(http, "superadmin")
        limited = signed_in(settings)
        other = signed_in(settings)

        async with rule(http, operator, f"user:{limited.id}", 1, 60):
            await statuses(http, limited, 2)
            others = await statuses(http, other, 3)

        assert 429 not in others

    async def test_every_expensive_route_spends_from_one_allowance(
        self, http: httpx.AsyncClient, operators: Operators, settings: Settings
    ) -> None:
        operator = await operators.of(http, "superadmin")
        user = signed_in(settings)
        conversation = f"/api/chat/conversations/{uuid.uuid4()}/messages"

        async with rule(http, operator, f"user:{user.id}", 4, 60):
            answers = [
                (await http.post(path, json={}, headers=user.auth)).status_code
                for path in (
                    GENERATE,
                    "/api/upscale",
                    "/api/enhance-prompt",
                    conversation,
                    GENERATE,
                )
            ]

        assert 429 not in answers[:4]
        assert answers[4] == 429

    async def test_the_allowance_is_shared_by_every_gateway(
        self, http: httpx.AsyncClient, operators: Operators, settings: Settings
    ) -> None:
        operator = await operators.of(http, "superadmin")
        user = signed_in(settings)

        async with (
            extra_gateway(settings) as second,
            second.client() as other_http,
            rule(http, operator, f"user:{user.id}", 4, 60),
        ):
            first_half = await statuses(http, user, 2)
            second_half = await statuses(other_http, user, 2)
            over_here = await generate(http, user)
            over_there = await generate(other_http, user)

        assert first_half + second_half == [400] * 4
        assert over_here.status_code == over_there.status_code == 429


class TestPerTier:
    async def test_a_user_without_a_plan_is_held_to_the_free_tier(
        self, http: httpx.AsyncClient, operators: Operators, settings: Settings
    ) -> None:
        operator = await operators.of(http, "superadmin")
        user = signed_in(settings)

        async with rule(http, operator, "tier:free", 2, 60):
            answers = await statuses(http, user, 3)

        assert answers == [400, 400, 429]

    async def test_a_users_own_rule_wins_over_the_tier(
        self, http: httpx.AsyncClient, operators: Operators, settings: Settings
    ) -> None:
        operator = await operators.of(http, "superadmin")
        user = signed_in(settings)

        async with (
            rule(http, operator, "tier:free", 1, 60),
            rule(http, operator, f"user:{user.id}", 3, 60),
        ):
            answers = await statuses(http, user, 4)

        assert answers == [400, 400, 400, 429]

    async def test_a_subscriber_is_held_to_the_tier_of_their_plan(
        self, http: httpx.AsyncClient, operators: Operators, settings: Settings
    ) -> None:
        operator = await operators.of(http, "superadmin")
        subscriber = signed_in(settings)
        await _subscribe(settings, subscriber.id, "starter")

        async with (
            rule(http, operator, "tier:free", 1, 60),
            rule(http, operator, "tier:starter", 3, 60),
        ):
            answers = await statuses(http, subscriber, 4)

        assert answers == [400, 400, 400, 429]


async def _subscribe(settings: Settings, user_id: str, plan_id: str) -> None:
    """An active subscription, as billing records one after a paid order
    (the payment itself is tested with billing)."""
    engine = create_engine(settings, BILLING_SCHEMA)
    try:
        async with engine.begin() as db:
            await db.execute(
                text(
                    "INSERT INTO subscriptions (user_id, plan_id, billing_cycle,"
                    " status, current_period_start, current_period_end)"
                    " VALUES (:user, :plan, 'monthly', 'active', now(),"
                    " now() + interval '1 month')"
                ),
                {"user": user_id, "plan": plan_id},
            )
    finally:
        await engine.dispose()


async def test_requests_go_through_while_the_limiter_is_unreachable(
    settings: Settings, admin_gateway: ServedApp, operators: Operators
) -> None:
    own = sibling_settings(
        settings,
        admin_address=f"127.0.0.1:{free_port()}",
        generation_address=settings.generation_address,
    )
    admin = await run_service(AdminProcess(), own)
    gateway = await serve_gateway(own)
    try:
        async with gateway.client() as http:
            operator = await operators.of(http, "superadmin")
            user = signed_in(settings)
            async with rule(http, operator, f"user:{user.id}", 1, 60):
                await admin.stop(grace=0)
                answers = await statuses(http, user, 3)
    finally:
        await gateway.stop()

    assert answers == [400, 400, 400]
