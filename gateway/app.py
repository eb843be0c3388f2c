"""The REST gateway: FastAPI routes that translate /api calls to gRPC."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.telemetry import TelemetryConfig
from starlette.routing import Match, Route
from starlette.types import Scope

from gateway.errors import ERROR_STATUSES, ErrorBody, install_error_handlers
from gateway.me import MeAnswers
from gateway.middleware import (
    BodySizeLimitMiddleware,
    HeaderLimitMiddleware,
    MaintenanceMiddleware,
    RequestIdMiddleware,
)
from gateway.rate_limits import RateLimiter, RateLimitMiddleware
from gateway.routers import (
    admin,
    admin_insights,
    admin_users,
    auth,
    billing,
    catalog,
    chat,
    community,
    generations,
    health,
    media,
    payments,
    profile,
    projects,
    workspaces,
)
from gateway.telemetry import RequestTelemetryMiddleware, metrics
from gateway.upstream import Upstream
from libs.config import Settings
from libs.flags import FeatureFlags
from libs.runtime import Runtime

NO_FASTAPI_TELEMETRY: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
    "auto_configure": False,
}
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody} for code in ERROR_STATUSES
}


class PlainRoute(Route):
    """A Starlette route that names itself in the request scope as FastAPI's
    routes do, so that metrics and spans carry its template."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope


def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    runtime = runtime or Runtime(settings, "gateway")
    # The operators' feature flags and rate-limit rules, polled (never read
    # on a request's path).
    flags = FeatureFlags(runtime.upstreams, settings.admin_poll_interval)
    limiter = RateLimiter(runtime.upstreams, settings.admin_poll_interval)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        await flags.prime_and_start()
        await limiter.rules.prime_and_start()
        yield
        await limiter.rules.stop()
        await flags.stop()
        await runtime.stop()

    app = FastAPI(
        title="OmniHub API",
        version="1.0",
        lifespan=lifespan,
        docs_url="/docs" if settings.show_docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.show_docs else None,
        responses=ERROR_RESPONSES,
        # FastAPI's own OpenTelemetry is off: RequestTelemetryMiddleware makes
        # the request's span (continuing only a trusted proxy's trace) and
        # Prometheus has the metrics; its `logs` would export exception
        # messages, which may quote secrets.
        telemetry=NO_FASTAPI_TELEMETRY,
    )
    app.state.settings = settings
    app.state.upstream = Upstream(runtime)
    app.state.me_answers = MeAnswers(settings.me_cache_seconds)
    install_error_handlers(app)
    app.state.catalog = catalog.CatalogClient(app.state.upstream)
    app.state.workspaces = workspaces.WorkspaceClient(app.state.upstream)
    app.state.generations = generations.GenerationClient(app.state.upstream)
    # Routes are matched in order: the ones read on every page come first.
    routers = (
        health.router,
        catalog.router,
        auth.router,
        auth.admin_router,
        billing.router,
        payments.router,
        profile.router,
        workspaces.router,
        projects.router,
        generations.router,
        community.router,
        media.router,
        chat.router,
        admin_users.router,
        admin_insights.router,
        admin.router,
        admin.public_router,
    )
    for router in routers:
        app.include_router(router)
    # The model list and /me are read on every page: serve them without
    # FastAPI's parameter solving (see catalog.fast_list_models, auth.fast_me).
    app.router.routes.insert(
        0, PlainRoute("/api/models", catalog.fast_list_models, methods=["GET"])
    )
    app.router.routes.insert(
        1, PlainRoute("/api/auth/me", auth.fast_me, methods=["GET"])
    )
    app.router.routes.append(Route("/metrics", metrics, methods=["GET"]))
    # The last added runs first. CORS wraps the body limit so that a 413 is
    # readable by the web client too.
    app.add_middleware(RateLimitMiddleware, limiter=limiter, verifier=runtime.verifier)
    app.add_middleware(MaintenanceMiddleware, flags=flags)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[settings.frontend_url],
        allow_credentials=True,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["X-Request-Id", "Retry-After", "X-Next-Cursor"],
    )
    app.add_middleware(HeaderLimitMiddleware)
    # Outside CORS and the size limits, so their refusals are counted too.
    app.add_middleware(
        RequestTelemetryMiddleware, trusted_proxies=settings.trusted_proxies
    )
    app.add_middleware(RequestIdMiddleware)
    return app
