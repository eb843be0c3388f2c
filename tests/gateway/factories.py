"""Accounts, operators and extra gateways for the gateway tests.

Every helper makes its own unique e-mail address or username, so tests share
one database and one auth service without seeing each other's rows.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from gateway.app import create_app
from libs.config import Settings
from libs.db import create_engine, session_factory
from services.auth import service
from services.auth.main import AuthProcess
from services.auth.models import SCHEMA
from services.auth.passwords import PasswordHashing
from tests.suite import ServedApp, free_port, run_service, serve_asgi, suite_settings

PASSWORD = "correct-horse-battery"
ERROR_FIELDS = {"statusCode", "error", "message", "code"}
# The gateway's revocation poll runs every 0.2 s in tests; the issue promises
# two seconds.
REVOCATION_DEADLINE_SECONDS = 2.0


@dataclass(frozen=True)
class SignedInUser:
    email: str
    password: str
    body: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.body["user"]["id"])

    @property
    def access_token(self) -> str:
        return str(self.body["accessToken"])

    @property
    def refresh_token(self) -> str:
        return str(self.body["refreshToken"])

    @property
    def auth(self) -> dict[str, str]:
        return bearer(self.access_token)


@dataclass(frozen=True)
class Operator:
    username: str
    password: str


def unique_email(label: str = "user") -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}@example.com"


def unique_address() -> str:
    """A client address from the IPv6 documentation prefix, never a proxy."""
    groups = ":".join(secrets.token_hex(2) for _ in range(4))
    return f"2001:db8::{groups}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def forwarded_for(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


async def register(
    http: httpx.AsyncClient,
    *,
    email: str | None = None,
    password: str = PASSWORD,
    name: str = "Test User",
    headers: dict[str, str] | None = None,
) -> SignedInUser:
    email = email or unique_email()
    response = await http.post(
        "/api/auth/register",
        json={"email": email, "password": password, "name": name},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return SignedInUser(email, password, response.json())


async def login(
    http: httpx.AsyncClient,
    email: str,
    password: str = PASSWORD,
    headers: dict[str, str] | None = None,
) -> SignedInUser:
    response = await http.post(
        "/api/auth/login",
        json={"email": email, "password": password},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    return SignedInUser(email, password, response.json())


async def refresh(http: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
    return await http.post("/api/auth/refresh", json={"refreshToken": refresh_token})


async def sessions_of(
    http: httpx.AsyncClient, access_token: str
) -> list[dict[str, Any]]:
    response = await http.get("/api/auth/sessions", headers=bearer(access_token))
    assert response.status_code == 200, response.text
    listed: list[dict[str, Any]] = response.json()
    return listed


async def current_session(http: httpx.AsyncClient, access_token: str) -> dict[str, Any]:
    listed = await sessions_of(http, access_token)
    current = [s for s in listed if s["current"]]
    assert len(current) == 1, listed
    return current[0]


async def seconds_until_refused(http: httpx.AsyncClient, access_token: str) -> float:
    """Poll GET /api/auth/me until the token is refused with 401; fail if that
    takes longer than the revocation deadline."""
    started = time.monotonic()
    while True:
        response = await http.get("/api/auth/me", headers=bearer(access_token))
        elapsed = time.monotonic() - started
        if response.status_code == 401:
            assert_error(response, 401)
            return elapsed
        assert response.status_code == 200, response.text
        assert elapsed < REVOCATION_DEADLINE_SECONDS, "token still accepted"
        await asyncio.sleep(0.05)


async def assert_accepted(http: httpx.AsyncClient, access_token: str) -> None:
    response = await http.get("/api/auth/me", headers=bearer(access_token))
    assert response.status_code == 200, response.text


def assert_error(
    response: httpx.Response, status: int, code: str | None = None
) -> dict[str, Any]:
    """Check the one error shape of the REST API and return the body."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body.keys() >= ERROR_FIELDS, body
    assert body["statusCode"] == status
    assert isinstance(body["message"], str)
    assert body["message"]
    assert body["error"] == body["message"]
    if code is not None:
        assert body["code"] == code, body
    return body


async def create_operator(settings: Settings, role: str = "superadmin") -> Operator:
    """An operator account written straight to the auth schema, the way
    `services.auth.main ensure-admin` does it."""
    operator = Operator(f"operator-{uuid.uuid4().hex[:10]}", "operator-password-1")
    engine = create_engine(settings, SCHEMA)
    try:
        async with session_factory(engine).begin() as db:
            created = await service.ensure_admin(
                db, PasswordHashing(), operator.username, operator.password, role
            )
    finally:
        await engine.dispose()
    assert created
    return operator


def sibling_settings(settings: Settings, **overrides: object) -> Settings:
    """Settings for another process of the same suite: same database and
    signing secret, same auth service unless overridden, ports of its own."""
    assert settings.database_url is not None
    assert settings.jwt_secret is not None
    values: dict[str, object] = {
        "jwt_secret": settings.jwt_secret.get_secret_value(),
        "auth_address": settings.auth_address,
        "google_client_id": settings.google_client_id,
        "google_certs_url": settings.google_certs_url,
        **overrides,
    }
    return suite_settings(settings.database_url, **values)


async def serve_gateway(settings: Settings) -> ServedApp:
    return await serve_asgi(create_app(settings))


@asynccontextmanager
async def own_auth_service(
    settings: Settings, **overrides: object
) -> AsyncIterator[Settings]:
    """Run another auth service on the same database with `overrides`, and
    yield settings that point a gateway at it."""
    own = sibling_settings(
        settings, auth_address=f"127.0.0.1:{free_port()}", **overrides
    )
    running = await run_service(AuthProcess(), own)
    try:
        yield own
    finally:
        await running.stop(grace=0)


@asynccontextmanager
async def extra_gateway(settings: Settings) -> AsyncIterator[ServedApp]:
    served = await serve_gateway(settings)
    try:
        yield served
    finally:
        await served.stop()
