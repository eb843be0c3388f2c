"""gateway/routers/admin_insights.py end to end: real HTTP through the gateway
to the admin service, which asks auth, generation (with its workers and the
local fal), billing (with the Razorpay simulator) and the catalog.

The module runs its own billing (configured for the Razorpay simulator) and
two admin services of its own on the suite's database: one that keeps no
figures, so each read shows the data a test just made, and one that keeps
them CACHE_WINDOW seconds, for the cache's own tests. Figures are compared
before and after a test makes its data, since the suite shares one
database. Models edited here are put back as they were.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from omnihub.generation.v1 import community_pb2
from pydantic import SecretStr
from sqlalchemy import text

from deploy.simulators.razorpay import create_app as create_simulator
from gateway.app import create_app
from libs.config import Settings
from libs.db import create_engine
from services.admin.main import AdminProcess
from services.admin.models import SCHEMA as ADMIN_SCHEMA
from services.auth.main import AuthProcess
from services.auth.models import SCHEMA as AUTH_SCHEMA
from services.billing.main import BillingProcess
from services.billing.models import SCHEMA as BILLING_SCHEMA
from services.catalog.main import CatalogProcess
from services.generation.main import GenerationProcess
from services.workspace.main import WorkspaceProcess
from tests.gateway.factories import (
    SignedInUser,
    assert_error,
    bearer,
    create_operator,
    register,
)
from tests.services.billing.factories import BillingClient, user_account
from tests.services.generation.factories import CommunityApi, GenerationRows
from tests.suite import ServedApp, free_port, run_service, serve_asgi

KEY_ID = "rzp_test_insights"
KEY_SECRET = "insights-key-secret"
WEBHOOK_SECRET = "insights-webhook-secret"
CACHE_WINDOW = 1.0
IMAGE_MODEL = "fal-flux-schnell"
VIDEO_MODEL = "fal-ltx-video"
# A chat model: its id has a slash, as the PUT route must allow.
EDITED_MODEL = "anthropic/claude-3-haiku"
DEADLINE_SECONDS = 15.0
CREDIT = 1_000_000
ROLES = ("superadmin", "support", "viewer")

READS = [
    ("GET", "/api/admin/stats"),
    ("GET", "/api/admin/analytics?range=7d"),
    ("GET", "/api/admin/models"),
    ("GET", "/api/admin/community"),
    ("GET", "/api/admin/payments"),
    ("GET", "/api/admin/subscriptions"),
    ("GET", "/api/admin/plans"),
]
WRITES = [
    ("PUT", f"/api/admin/models/{EDITED_MODEL}", {"displayOrder": 1}),
    ("DELETE", f"/api/admin/community/{uuid.uuid4()}", None),
    ("PUT", "/api/admin/plans/starter", {"displayOrder": 1}),
]


@dataclass
class Deployment:
    fresh: httpx.AsyncClient
    cached: httpx.AsyncClient
    settings: Settings
    billing: BillingClient
    operators: dict[str, dict[str, str]]

    async def as_operator(
        self,
        role: str,
        method: str,
        path: str,
        body: Any = None,
        *,
        http: httpx.AsyncClient | None = None,
    ) -> httpx.Response:
        return await (http or self.fresh).request(
            method, path, json=body, headers=self.operators[role]
        )

    async def read(self, path: str, http: httpx.AsyncClient | None = None) -> Any:
        """A viewer's GET, which must succeed: its JSON body."""
        response = await self.as_operator("viewer", "GET", path, http=http)
        assert response.status_code == 200, response.text
        return response.json()


async def _sign_in(http: httpx.AsyncClient, settings: Settings, role: str) -> str:
    operator = await create_operator(settings, role)
    response = await http.post(
        "/api/admin/login",
        json={"username": operator.username, "password": operator.password},
    )
    assert response.status_code in (200, 201), response.text
    token: str = response.json()["token"]
    return token


@pytest.fixture(scope="module")
async def deployment(
    settings: Settings,
    auth_service: AuthProcess,
    catalog_service: CatalogProcess,
    workspace_service: WorkspaceProcess,
    generation_service: GenerationProcess,
    generation_workers: object,
    fal_simulator: ServedApp,
) -> AsyncIterator[Deployment]:
    port = free_port()
    razorpay = await serve_asgi(
        create_simulator(
            KEY_ID,
            KEY_SECRET,
            WEBHOOK_SECRET,
            f"http://127.0.0.1:{port}/api/payments/webhook",
        )
    )
    own = settings.model_copy(
        update={
            "billing_address": f"127.0.0.1:{free_port()}",
            "admin_address": f"127.0.0.1:{free_port()}",
            "admin_insights_cache_seconds": 0.0,
            "razorpay_base_url": razorpay.url,
            "razorpay_key_id": KEY_ID,
            "razorpay_key_secret": SecretStr(KEY_SECRET),
            "razorpay_webhook_secret": SecretStr(WEBHOOK_SECRET),
        }
    )
    keeping = own.model_copy(
        update={
            "admin_address": f"127.0.0.1:{free_port()}",
            "admin_insights_cache_seconds": CACHE_WINDOW,
        }
    )
    started = [
        await run_service(BillingProcess(), own),
        await run_service(AdminProcess(), own),
        await run_service(AdminProcess(), keeping),
    ]
    fresh = await serve_asgi(create_app(own), port)
    cached = await serve_asgi(create_app(keeping))
    billing = BillingClient(settings)
    async with fresh.client() as http, cached.client() as cached_http:
        operators = {
            role: bearer(await _sign_in(http, settings, role)) for role in ROLES
        }
        yield Deployment(http, cached_http, own, billing, operators)
    await billing.close()
    for served in (cached, fresh):
        await served.stop()
    for running in started:
        await running.stop(grace=0)
    await razorpay.stop()


# Data the figures are made of


async def funded_user(deployment: Deployment) -> SignedInUser:
    user = await register(deployment.fresh)
    await deployment.billing.grant(user_account(user.id), 1_000 * CREDIT)
    return user


async def generated(
    deployment: Deployment, user: SignedInUser, kind: str, model: str
) -> dict[str, Any]:
    """A generation made through the gateway and finished by the local fal."""
    response = await deployment.fresh.post(
        "/api/generate",
        json={"type": kind, "model": model, "prompt": f"figures {uuid.uuid4().hex}"},
        headers=user.auth,
    )
    assert response.status_code == 201, response.text
    generation_id = response.json()["generations"][0]["id"]
    started = time.monotonic()
    while True:
        got = await deployment.fresh.get(
            f"/api/generations/{generation_id}", headers=user.auth
        )
        generation: dict[str, Any] = got.json()
        if generation["status"] in ("completed", "failed", "cancelled"):
            assert generation["status"] == "completed", generation
            return generation
        assert time.monotonic() - started < DEADLINE_SECONDS, generation
        await asyncio.sleep(0.05)


async def bought(deployment: Deployment, user: SignedInUser, **order: Any) -> None:
    """An order paid in the simulated Razorpay Checkout and verified."""
    http = deployment.fresh
    created = await http.post(
        "/api/payments/create-order", json=order, headers=user.auth
    )
    assert created.status_code == 201, created.text
    paid = await http.post(
        "/api/payments/simulated-checkout",
        json={"orderId": created.json()["orderId"]},
        headers=user.auth,
    )
    assert paid.status_code == 200, paid.text
    verified = await http.post(
        "/api/payments/verify", json=paid.json(), headers=user.auth
    )
    assert verified.status_code == 200, verified.text


async def signed_up(settings: Settings) -> None:
    """An account as sign-up leaves it, written straight to the auth schema:
    quicker than a password hash, so the cache tests stay within their
    window."""
    user_id = uuid.uuid4()
    engine = create_engine(settings, AUTH_SCHEMA)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO users (id, email, name, nickname)"
                    " VALUES (:id, :email, 'Cached', :nickname)"
                ),
                {
                    "id": user_id,
                    "email": f"cached-{user_id.hex[:12]}@example.com",
                    "nickname": f"cached{user_id.hex[:16]}",
                },
            )
    finally:
        await engine.dispose()


async def audit_entry(settings: Settings, audit_id: int) -> dict[str, Any]:
    engine = create_engine(settings, ADMIN_SCHEMA)
    try:
        async with engine.connect() as connection:
            row = (
                await connection.execute(
                    text("SELECT * FROM audit_log WHERE id = :id"), {"id": audit_id}
                )
            ).one()
    finally:
        await engine.dispose()
    return dict(row._mapping)


async def audit_count(settings: Settings, action: str) -> int:
    engine = create_engine(settings, ADMIN_SCHEMA)
    try:
        async with engine.connect() as connection:
            count = await connection.scalar(
                text("SELECT count(*) FROM audit_log WHERE action = :action"),
                {"action": action},
            )
    finally:
        await engine.dispose()
    return int(count or 0)


def grown(after: dict[str, Any], before: dict[str, Any], *path: str) -> Any:
    def dig(body: Any) -> Any:
        for key in path:
            body = body.get(key, 0) if isinstance(body, dict) else 0
        return body

    return dig(after) - dig(before)


def usage(body: dict[str, Any], kind: str) -> tuple[int, float]:
    found = [row for row in body["usageByType"] if row["type"] == kind]
    return (found[0]["count"], found[0]["credits"]) if found else (0, 0.0)


def ranked(body: dict[str, Any], model: str) -> int:
    found = [row["count"] for row in body["topModels"] if row["modelId"] == model]
    return found[0] if found else 0


# Who may call


class TestAccess:
    @pytest.mark.parametrize(("method", "path"), READS)
    async def test_reads_need_an_operator_token(
        self, deployment: Deployment, method: str, path: str
    ) -> None:
        user = await register(deployment.fresh)

        anonymous = await deployment.fresh.request(method, path)
        as_user = await deployment.fresh.request(method, path, headers=user.auth)
        as_viewer = await deployment.as_operator("viewer", method, path)

        assert_error(anonymous, 401)
        assert_error(as_user, 403)
        assert as_viewer.status_code == 200, as_viewer.text

    @pytest.mark.parametrize(("method", "path", "body"), WRITES)
    async def test_writes_refuse_users_and_viewers(
        self, deployment: Deployment, method: str, path: str, body: Any
    ) -> None:
        user = await register(deployment.fresh)

        anonymous = await deployment.fresh.request(method, path, json=body)
        as_user = await deployment.fresh.request(
            method, path, json=body, headers=user.auth
        )
        as_viewer = await deployment.as_operator("viewer", method, path, body)

        assert_error(anonymous, 401)
        assert_error(as_user, 403)
        assert_error(as_viewer, 403, "permission_denied")

    @pytest.mark.parametrize(("method", "path", "body"), [WRITES[0], WRITES[2]])
    async def test_support_may_not_edit_models_or_plans(
        self, deployment: Deployment, method: str, path: str, body: Any
    ) -> None:
        response = await deployment.as_operator("support", method, path, body)

        assert_error(response, 403, "permission_denied")

    async def test_an_operator_token_is_no_user_token(
        self, deployment: Deployment
    ) -> None:
        response = await deployment.fresh.get(
            "/api/auth/me", headers=deployment.operators["superadmin"]
        )

        assert_error(response, 403)


# Figures


class TestFigures:
    async def test_stats_and_analytics_count_what_users_did(
        self, deployment: Deployment
    ) -> None:
        before_stats = await deployment.read("/api/admin/stats")
        before_day = await deployment.read("/api/admin/analytics?range=24h")

        buyer = await funded_user(deployment)
        other = await register(deployment.fresh)
        images = [
            await generated(deployment, buyer, "image", IMAGE_MODEL) for _ in range(2)
        ]
        video = await generated(deployment, buyer, "video", VIDEO_MODEL)
        await bought(deployment, buyer, type="credits", credits=100)

        stats = await deployment.read("/api/admin/stats")
        day = await deployment.read("/api/admin/analytics?range=24h")

        assert grown(stats, before_stats, "totalUsers") == 2
        assert grown(stats, before_stats, "newUsersToday") == 2
        assert grown(stats, before_stats, "activeUsers") == 2
        assert grown(stats, before_stats, "generationsToday") == 3
        assert grown(stats, before_stats, "imageGenerations") == 2
        assert grown(stats, before_stats, "videoGenerations") == 1
        assert grown(stats, before_stats, "totalGenerations") == 3
        assert grown(stats, before_stats, "revenue") == pytest.approx(100.0)
        assert grown(stats, before_stats, "revenueToday") == pytest.approx(100.0)
        assert grown(stats, before_stats, "revenueMonth") == pytest.approx(100.0)
        spent = sum(g["credits"] for g in images) + video["credits"]
        assert grown(stats, before_stats, "creditsUsed") == pytest.approx(spent)
        assert [a["id"] for a in stats["recentActivity"][:3]] == [
            video["id"],
            images[1]["id"],
            images[0]["id"],
        ]
        assert stats["recentActivity"][0]["model"] == video["modelName"]

        assert grown(day, before_day, "signups") == 2
        assert grown(day, before_day, "generations") == 3
        assert grown(day, before_day, "generationsByType", "image") == 2
        assert grown(day, before_day, "generationsByType", "video") == 1
        assert grown(day, before_day, "revenue") == pytest.approx(100.0)
        assert grown(day, before_day, "payments") == 1
        assert grown(day, before_day, "credits", "purchased") == pytest.approx(100)
        assert grown(day, before_day, "activeUsers", "daily") == 2
        image_count, image_credits = usage(day, "image")
        assert image_count - usage(before_day, "image")[0] == 2
        assert image_credits - usage(before_day, "image")[1] == pytest.approx(
            sum(g["credits"] for g in images)
        )
        assert usage(day, "video")[0] - usage(before_day, "video")[0] == 1
        assert ranked(day, IMAGE_MODEL) - ranked(before_day, IMAGE_MODEL) == 2
        assert other.id != buyer.id

    async def test_series_have_a_point_per_hour_or_day_adding_up(
        self, deployment: Deployment
    ) -> None:
        hours = await deployment.read("/api/admin/analytics?range=24h")
        days = await deployment.read("/api/admin/analytics?range=90d")

        assert (hours["bucket"], len(hours["series"])) == ("hour", 24)
        assert (days["bucket"], len(days["series"])) == ("day", 90)
        for body in (hours, days):
            series = body["series"]
            assert sum(p["signups"] for p in series) == body["signups"]
            assert sum(p["generations"] for p in series) == body["generations"]
            assert sum(p["revenue"] for p in series) == pytest.approx(body["revenue"])
            assert series[0]["time"] == body["start"]

    async def test_an_unknown_range_is_refused(self, deployment: Deployment) -> None:
        response = await deployment.as_operator(
            "viewer", "GET", "/api/admin/analytics?range=1y"
        )

        body = assert_error(response, 400, "invalid_argument")
        assert [d["field"] for d in body["details"]] == ["range"]

    async def test_a_service_that_is_down_is_named_in_a_503(
        self, deployment: Deployment
    ) -> None:
        broken = deployment.settings.model_copy(
            update={
                "admin_address": f"127.0.0.1:{free_port()}",
                "billing_address": f"127.0.0.1:{free_port()}",
            }
        )
        admin = await run_service(AdminProcess(), broken)
        gateway = await serve_asgi(create_app(broken))
        try:
            async with gateway.client() as http:
                response = await http.get(
                    "/api/admin/stats", headers=deployment.operators["viewer"]
                )
        finally:
            await gateway.stop()
            await admin.stop(grace=0)

        body = assert_error(response, 503, "unavailable")
        assert body["service"] == "billing"
        assert "billing" in body["error"]


class TestCache:
    async def test_figures_are_kept_for_the_window_then_asked_again(
        self, deployment: Deployment
    ) -> None:
        first = await deployment.read("/api/admin/stats", deployment.cached)
        await signed_up(deployment.settings)

        again = await deployment.read("/api/admin/stats", deployment.cached)
        fresh = await deployment.read("/api/admin/stats")
        await asyncio.sleep(CACHE_WINDOW)
        later = await deployment.read("/api/admin/stats", deployment.cached)

        assert again == first
        assert fresh["totalUsers"] == first["totalUsers"] + 1
        assert later["totalUsers"] == first["totalUsers"] + 1
        assert later["computedAt"] > first["computedAt"]

    async def test_each_analytics_range_is_kept_apart(
        self, deployment: Deployment
    ) -> None:
        week = await deployment.read("/api/admin/analytics?range=7d", deployment.cached)
        await signed_up(deployment.settings)

        week_again = await deployment.read(
            "/api/admin/analytics?range=7d", deployment.cached
        )
        month = await deployment.read(
            "/api/admin/analytics?range=30d", deployment.cached
        )

        assert week_again == week
        assert month["computedAt"] > week["computedAt"]
        assert month["totalUsers"] == week["totalUsers"] + 1


# Models


class TestModels:
    async def test_every_model_is_listed_with_what_the_page_reads(
        self, deployment: Deployment
    ) -> None:
        response = await deployment.as_operator("viewer", "GET", "/api/admin/models")

        models = response.json()
        assert {m["id"] for m in models} >= {IMAGE_MODEL, EDITED_MODEL}
        first = models[0]
        assert {"id", "name", "type", "credits", "baseCost", "enabled", "provider"} <= (
            first.keys()
        )
        assert isinstance(first["enabled"], bool)
        chat = await deployment.read("/api/admin/models?type=chat")
        assert {m["type"] for m in chat} == {"chat"}

    async def test_an_edit_is_made_by_the_catalog_and_audited(
        self, deployment: Deployment
    ) -> None:
        before = await self._model(deployment)
        try:
            response = await deployment.as_operator(
                "superadmin",
                "PUT",
                f"/api/admin/models/{EDITED_MODEL}",
                {"name": "Haiku (edited)", "enabled": 0, "tags": ["fast"]},
            )

            assert response.status_code == 200, response.text
            body = response.json()
            assert (body["name"], body["enabled"], body["tags"]) == (
                "Haiku (edited)",
                False,
                ["fast"],
            )
            public = await deployment.fresh.get("/api/chat/models")
            assert EDITED_MODEL not in {m["id"] for m in public.json()}
            entry = await audit_entry(deployment.settings, body["auditId"])
            assert (entry["action"], entry["target_type"], entry["target_id"]) == (
                "model_updated",
                "model",
                EDITED_MODEL,
            )
            assert entry["status"] == "applied"
            assert entry["before"]["name"] == before["name"]
            assert entry["after"]["enabled"] is False
            assert entry["request_id"] == response.headers["x-request-id"]
            assert str(entry["client_address"]) == "127.0.0.1"
        finally:
            await self._restore(deployment, before)

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"baseCost": -1}, "baseCost"),
            ({"maxWaitSeconds": 0}, "maxWaitSeconds"),
            ({"enabled": 2}, "enabled"),
            ({"displayorder": 3}, "displayorder"),
            ({"name": None}, "name"),
            ({"tags": ["x" * 41]}, "tags.0"),
        ],
    )
    async def test_bad_values_are_refused_before_anything_is_queued(
        self, deployment: Deployment, body: dict[str, Any], field: str
    ) -> None:
        audited = await audit_count(deployment.settings, "model_updated")

        response = await deployment.as_operator(
            "superadmin", "PUT", f"/api/admin/models/{EDITED_MODEL}", body
        )

        error = assert_error(response, 400, "invalid_argument")
        assert [d["field"] for d in error["details"]] == [field]
        assert await audit_count(deployment.settings, "model_updated") == audited

    async def test_a_value_the_catalog_refuses_fails_its_audit_entry(
        self, deployment: Deployment
    ) -> None:
        response = await deployment.as_operator(
            "superadmin",
            "PUT",
            f"/api/admin/models/{EDITED_MODEL}",
            {"thumbnail": "ftp://example.com/a.png"},
        )

        error = assert_error(response, 400, "invalid_argument")
        assert [d["field"] for d in error["details"]] == ["thumbnail"]
        model = await self._model(deployment)
        assert model["thumbnail"] != "ftp://example.com/a.png"

    async def test_an_empty_edit_and_an_unknown_model_are_refused(
        self, deployment: Deployment
    ) -> None:
        empty = await deployment.as_operator(
            "superadmin", "PUT", f"/api/admin/models/{EDITED_MODEL}", {}
        )
        unknown = await deployment.as_operator(
            "superadmin", "PUT", "/api/admin/models/no/such-model", {"name": "x"}
        )

        assert_error(empty, 400, "invalid_argument")
        assert_error(unknown, 404, "not_found")

    async def _model(self, deployment: Deployment) -> dict[str, Any]:
        models = await deployment.as_operator("viewer", "GET", "/api/admin/models")
        [model] = [m for m in models.json() if m["id"] == EDITED_MODEL]
        return dict(model)

    async def _restore(self, deployment: Deployment, model: dict[str, Any]) -> None:
        response = await deployment.as_operator(
            "superadmin",
            "PUT",
            f"/api/admin/models/{EDITED_MODEL}",
            {"name": model["name"], "enabled": model["enabled"], "tags": model["tags"]},
        )
        assert response.status_code == 200, response.text


# Community moderation


@pytest.fixture(scope="module")
async def community(
    settings: Settings, deployment: Deployment
) -> AsyncIterator[tuple[CommunityApi, GenerationRows]]:
    api = CommunityApi(settings)
    rows = GenerationRows(settings)
    yield api, rows
    await rows.close()
    await api.close()


async def published(
    community: tuple[CommunityApi, GenerationRows], **fields: Any
) -> community_pb2.Post:
    api, rows = community
    user_id = str(uuid.uuid4())
    word = f"moderated{uuid.uuid4().hex[:10]}"
    generation_id = await rows.completed(user_id, f"{word} picture")
    return await api.publish(user_id, generation_id, title=word, **fields)


class TestCommunity:
    async def test_the_list_shows_nsfw_posts_and_their_authors(
        self, deployment: Deployment, community: tuple[CommunityApi, GenerationRows]
    ) -> None:
        post = await published(community, is_nsfw=True)

        response = await deployment.as_operator(
            "viewer", "GET", f"/api/admin/community?search={post.title}"
        )

        assert response.status_code == 200, response.text
        [listed] = response.json()
        assert (listed["id"], listed["userId"], listed["isNsfw"]) == (
            post.id,
            post.user_id,
            True,
        )
        assert {"imageUrl", "thumbnailUrl", "likeCount"} <= listed.keys()

    async def test_support_takes_a_post_down_and_it_is_audited(
        self, deployment: Deployment, community: tuple[CommunityApi, GenerationRows]
    ) -> None:
        post = await published(community)

        response = await deployment.as_operator(
            "support", "DELETE", f"/api/admin/community/{post.id}?reason=Spam"
        )

        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["success"], body["removed"]) == (True, True)
        feed = await deployment.fresh.get(f"/api/community?search={post.title}")
        assert feed.status_code == 200, feed.text
        assert post.id not in feed.text
        entry = await audit_entry(deployment.settings, body["auditId"])
        assert (entry["action"], entry["target_id"], entry["status"]) == (
            "community_post_deleted",
            post.id,
            "applied",
        )
        assert entry["before"]["user_id"] == post.user_id
        assert entry["after"] == {"removed": True, "reason": "Spam"}
        assert entry["actor_role"] == "support"

    async def test_a_delete_without_reason_says_so_in_the_trail(
        self, deployment: Deployment, community: tuple[CommunityApi, GenerationRows]
    ) -> None:
        post = await published(community)

        response = await deployment.as_operator(
            "superadmin", "DELETE", f"/api/admin/community/{post.id}"
        )

        entry = await audit_entry(deployment.settings, response.json()["auditId"])
        assert entry["after"]["reason"] == "No reason given."

    async def test_a_viewer_cannot_and_an_unknown_post_is_not_found(
        self, deployment: Deployment, community: tuple[CommunityApi, GenerationRows]
    ) -> None:
        post = await published(community)

        refused = await deployment.as_operator(
            "viewer", "DELETE", f"/api/admin/community/{post.id}"
        )
        unknown = await deployment.as_operator(
            "support", "DELETE", f"/api/admin/community/{uuid.uuid4()}"
        )

        assert_error(refused, 403)
        assert_error(unknown, 404, "not_found")
        api, _ = community
        assert (await api.post(post.id)).id == post.id


# Payments, subscriptions and plans


class TestPayments:
    async def test_a_users_payments_are_listed_with_revenue_figures(
        self, deployment: Deployment
    ) -> None:
        buyer = await register(deployment.fresh)
        await bought(deployment, buyer, type="credits", credits=30)
        await bought(deployment, buyer, planId="starter", billingCycle="monthly")

        body = await deployment.read(f"/api/admin/payments?userId={buyer.id}")

        assert [(p["type"], p["amount"], p["userId"]) for p in body["payments"]] == [
            ("subscription", 135_000, buyer.id),
            ("credits", 3_000, buyer.id),
        ]
        assert {p["status"] for p in body["payments"]} == {"completed"}
        stats = body["revenueStats"]
        assert stats["currency"] == "INR"
        assert stats["total"] >= stats["last30Days"] >= stats["last7Days"] >= 1380
        subscriptions = await deployment.read(
            f"/api/admin/subscriptions?userId={buyer.id}"
        )
        [subscription] = subscriptions["subscriptions"]
        assert (subscription["planId"], subscription["status"]) == (
            "starter",
            "active",
        )
        assert subscriptions["active"] >= 1

    async def test_unknown_filters_are_refused(self, deployment: Deployment) -> None:
        bad_status = await deployment.as_operator(
            "viewer", "GET", "/api/admin/payments?status=refunded"
        )
        bad_user = await deployment.as_operator(
            "viewer", "GET", "/api/admin/payments?userId=someone"
        )

        assert_error(bad_status, 400, "invalid_argument")
        body = assert_error(bad_user, 400, "invalid_argument")
        assert [d["field"] for d in body["details"]] == ["userId"]


@pytest.fixture
async def test_plan(settings: Settings) -> AsyncIterator[str]:
    """A plan of this test's own, removed afterwards: the suite reads the
    public list as the three seeded plans."""
    plan_id = f"admin-test-{uuid.uuid4().hex[:8]}"
    engine = create_engine(settings, BILLING_SCHEMA)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO plans (id, name, price_monthly, price_yearly,"
                    " credits_per_month, display_order, active)"
                    " VALUES (:id, 'Trial', 100, 1000, 10, 99, false)"
                ),
                {"id": plan_id},
            )
        yield plan_id
        async with engine.begin() as connection:
            await connection.execute(
                text("DELETE FROM plans WHERE id = :id"), {"id": plan_id}
            )
    finally:
        await engine.dispose()


class TestPlans:
    async def test_an_edit_is_made_by_billing_and_audited(
        self, deployment: Deployment, test_plan: str
    ) -> None:
        response = await deployment.as_operator(
            "superadmin",
            "PUT",
            f"/api/admin/plans/{test_plan}",
            {"priceMonthly": 799, "features": ["One", "Two"], "isPopular": 1},
        )

        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["priceMonthly"], body["features"], body["isPopular"]) == (
            799,
            ["One", "Two"],
            1,
        )
        assert body["active"] is False
        listed = await deployment.as_operator("viewer", "GET", "/api/admin/plans")
        assert test_plan in {plan["id"] for plan in listed.json()}
        public = await deployment.fresh.get("/api/subscription-plans")
        assert test_plan not in {plan["id"] for plan in public.json()}
        entry = await audit_entry(deployment.settings, body["auditId"])
        assert (entry["action"], entry["target_id"], entry["status"]) == (
            "plan_updated",
            test_plan,
            "applied",
        )
        assert (entry["before"]["price_monthly"], entry["after"]["price_monthly"]) == (
            100,
            799,
        )

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"priceMonthly": 0}, "priceMonthly"),
            ({"priceYearly": -1}, "priceYearly"),
            ({"creditsPerMonth": 0}, "creditsPerMonth"),
            ({"name": ""}, "name"),
            ({"features": [""]}, "features.0"),
            ({"active": "yes"}, "active"),
        ],
    )
    async def test_bad_values_are_refused(
        self,
        deployment: Deployment,
        test_plan: str,
        body: dict[str, Any],
        field: str,
    ) -> None:
        response = await deployment.as_operator(
            "superadmin", "PUT", f"/api/admin/plans/{test_plan}", body
        )

        error = assert_error(response, 400, "invalid_argument")
        assert [d["field"] for d in error["details"]] == [field]

    async def test_an_unknown_plan_is_not_found(self, deployment: Deployment) -> None:
        response = await deployment.as_operator(
            "superadmin", "PUT", "/api/admin/plans/platinum", {"name": "Platinum"}
        )

        assert_error(response, 404, "not_found")
