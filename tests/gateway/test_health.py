"""The gateway's own endpoints and cross-cutting headers: /healthz, /readyz,
the API description, X-Request-Id and CORS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from libs.config import Settings
from libs.process import RunningService, ServiceProcess
from services.admin.main import AdminProcess
from services.auth.main import AuthProcess
from services.billing.main import BillingProcess
from services.catalog.main import CatalogProcess
from services.chat.main import ChatProcess
from services.generation.main import GenerationProcess
from services.workspace.main import WorkspaceProcess
from tests.gateway.factories import assert_error, extra_gateway, sibling_settings
from tests.suite import SERVICES, ServedApp, free_port, run_service

READY_WITHIN_SECONDS = 5.0
OTHER_SERVICES: tuple[type[ServiceProcess], ...] = (
    CatalogProcess,
    GenerationProcess,
    ChatProcess,
    WorkspaceProcess,
    BillingProcess,
    AdminProcess,
)


@pytest.fixture(scope="module")
async def whole_suite(settings: Settings) -> AsyncIterator[ServedApp]:
    """All seven services on ports of their own, and a gateway in front."""
    own_ports = {f"{name}_address": f"127.0.0.1:{free_port()}" for name in SERVICES}
    suite = sibling_settings(settings, **own_ports)
    running: list[RunningService] = []
    try:
        for process in (AuthProcess(), *(cls() for cls in OTHER_SERVICES)):
            running.append(await run_service(process, suite))
        async with extra_gateway(suite) as gateway:
            yield gateway
    finally:
        for service in reversed(running):
            await service.stop(grace=0)


async def _readyz_when_ready(http: httpx.AsyncClient) -> httpx.Response:
    """Poll /readyz for a few seconds: each probe's first call also opens its
    channel, which can outlast the one-second probe on a busy machine."""
    deadline = time.monotonic() + READY_WITHIN_SECONDS
    while True:
        response = await http.get("/readyz")
        if response.status_code == 200 or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.2)


class TestProbes:
    async def test_healthz_answers_ok(self, gateway: ServedApp) -> None:
        async with gateway.client() as http:
            response = await http.get("/healthz")

        assert response.status_code == 200
        assert response.json() == {"status": "ok"}

    async def test_readyz_lists_services_not_serving(
        self, settings: Settings, auth_service: AuthProcess
    ) -> None:
        # Fresh ports for every service but auth: only auth is listening.
        async with (
            extra_gateway(sibling_settings(settings)) as gateway,
            gateway.client() as http,
        ):
            response = await http.get("/readyz")

        assert response.status_code == 503, response.text
        body = response.json()
        assert body["status"] == "unavailable"
        assert body["services"] == {name: name == "auth" for name in SERVICES}

    async def test_readyz_is_ready_when_all_services_serve(
        self, whole_suite: ServedApp
    ) -> None:
        async with whole_suite.client() as http:
            response = await _readyz_when_ready(http)

        assert response.status_code == 200, response.text
        assert response.json() == {
            "status": "ready",
            "services": dict.fromkeys(SERVICES, True),
        }


class TestApiDescription:
    async def test_openapi_describes_auth_routes(self, gateway: ServedApp) -> None:
        async with gateway.client() as http:
            response = await http.get("/openapi.json")

        assert response.status_code == 200
        paths = response.json()["paths"]
        assert {"/api/auth/register", "/api/auth/login", "/api/admin/login"} <= set(
            paths
        )

    async def test_docs_page_is_served(self, gateway: ServedApp) -> None:
        async with gateway.client() as http:
            response = await http.get("/docs")

        assert response.status_code == 200
        assert "text/html" in response.headers["content-type"]


class TestRequestId:
    async def test_given_request_id_is_echoed(self, gateway: ServedApp) -> None:
        async with gateway.client() as http:
            response = await http.get(
                "/healthz", headers={"X-Request-Id": "trace-42.abc_DEF"}
            )

        assert response.headers["x-request-id"] == "trace-42.abc_DEF"

    async def test_request_id_is_generated_when_missing(
        self, gateway: ServedApp
    ) -> None:
        async with gateway.client() as http:
            first = await http.get("/healthz")
            second = await http.get("/healthz")

        assert first.headers["x-request-id"]
        assert first.headers["x-request-id"] != second.headers["x-request-id"]

    async def test_unsafe_request_id_is_replaced(self, gateway: ServedApp) -> None:
        unsafe = "a b<script>"
        async with gateway.client() as http:
            response = await http.get("/healthz", headers={"X-Request-Id": unsafe})

        assert response.headers["x-request-id"]
        assert response.headers["x-request-id"] != unsafe

    async def test_error_response_carries_request_id(self, gateway: ServedApp) -> None:
        async with gateway.client() as http:
            response = await http.get("/api/nowhere", headers={"X-Request-Id": "r-1"})

        assert_error(response, 404)
        assert response.headers["x-request-id"] == "r-1"


class TestCors:
    async def test_preflight_from_frontend_is_allowed(
        self, gateway: ServedApp, settings: Settings
    ) -> None:
        async with gateway.client() as http:
            response = await http.options(
                "/api/auth/login",
                headers={
                    "Origin": settings.frontend_url,
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "content-type,authorization",
                },
            )

        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == settings.frontend_url
        assert response.headers["access-control-allow-credentials"] == "true"
        assert "POST" in response.headers["access-control-allow-methods"]

    async def test_preflight_from_other_origin_is_refused(
        self, gateway: ServedApp
    ) -> None:
        async with gateway.client() as http:
            response = await http.options(
                "/api/auth/login",
                headers={
                    "Origin": "https://evil.example.com",
                    "Access-Control-Request-Method": "POST",
                },
            )

        assert response.status_code == 400
        assert "access-control-allow-origin" not in response.headers

    async def test_response_exposes_request_id_to_frontend(
        self, gateway: ServedApp, settings: Settings
    ) -> None:
        async with gateway.client() as http:
            response = await http.get(
                "/healthz", headers={"Origin": settings.frontend_url}
            )

        assert response.headers["access-control-allow-origin"] == settings.frontend_url
        exposed = response.headers["access-control-expose-headers"].lower()
        assert "x-request-id" in exposed
        assert "retry-after" in exposed

    async def test_error_response_carries_cors_grant(
        self, gateway: ServedApp, settings: Settings
    ) -> None:
        # Without the grant the web client cannot read why it was refused.
        async with gateway.client() as http:
            response = await http.get(
                "/api/auth/me", headers={"Origin": settings.frontend_url}
            )

        assert_error(response, 401)
        assert response.headers["access-control-allow-origin"] == settings.frontend_url

    async def test_body_too_large_response_carries_cors_grant(
        self, gateway: ServedApp, settings: Settings
    ) -> None:
        async with gateway.client() as http:
            response = await http.post(
                "/api/auth/login",
                content=b"x" * (26 * 1024 * 1024),
                headers={
                    "Origin": settings.frontend_url,
                    "Content-Type": "application/json",
                },
            )

        assert_error(response, 413, "body_too_large")
        assert response.headers["access-control-allow-origin"] == settings.frontend_url

    async def test_response_to_other_origin_has_no_cors_grant(
        self, gateway: ServedApp
    ) -> None:
        async with gateway.client() as http:
            response = await http.get(
                "/healthz", headers={"Origin": "https://evil.example.com"}
            )

        assert response.status_code == 200
        assert "access-control-allow-origin" not in response.headers
