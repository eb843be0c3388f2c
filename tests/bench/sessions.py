"""Accounts and sessions for the load: one signed-in user whose access token
/api/auth/me is called with, and a pool of sessions whose refresh tokens
/api/auth/refresh spends, one each."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from tests.fakes.google import FakeGoogle

# Google sign-ins are cheap for the service; password sign-ins each hash for
# ~100 ms of CPU, so more of them at once only queue up (and time out).
GOOGLE_SIGN_IN_CONCURRENCY = 16
PASSWORD_SIGN_IN_CONCURRENCY = 4
PASSWORD = "bench-password-" + uuid.uuid4().hex[:12]


class SessionsRefused(RuntimeError):
    """The suite would not open the sessions the benchmark needs."""


@dataclass(frozen=True)
class Account:
    email: str
    access_token: str


def _tokens(response: httpx.Response, action: str) -> dict[str, str]:
    if response.status_code == 429:
        raise SessionsRefused(
            f"{action}: the suite rate-limited the harness (429). Start it with "
            "AUTH_RATE_LIMIT_ACCOUNT and AUTH_RATE_LIMIT_ADDRESS raised, e.g. "
            "1000000000/1h, or benchmark fewer sessions (--sessions)."
        )
    if response.status_code not in (200, 201):
        raise SessionsRefused(
            f"{action}: HTTP {response.status_code}: {response.text[:500]}"
        )
    body: dict[str, str] = response.json()
    return body


async def register(http: httpx.AsyncClient) -> Account:
    email = f"bench-{uuid.uuid4().hex[:12]}@example.com"
    response = await http.post(
        "/api/auth/register",
        json={"email": email, "password": PASSWORD, "name": "Bench"},
    )
    return Account(email, _tokens(response, "register")["accessToken"])


async def _gather_refresh_tokens(
    count: int,
    sign_in: Callable[[], Awaitable[httpx.Response]],
    action: str,
    concurrency: int,
) -> list[str]:
    tokens: list[str] = []
    remaining = iter(range(count))

    async def worker() -> None:
        for _ in remaining:
            tokens.append(_tokens(await sign_in(), action)["refreshToken"])

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return tokens


async def google_sessions(
    http: httpx.AsyncClient, google: FakeGoogle, count: int
) -> list[str]:
    """Sign one Google account in `count` times. Cheap for the service: an
    RSA signature check instead of an argon2 hash per session."""
    subject = uuid.uuid4().hex
    email = f"bench-google-{subject[:12]}@example.com"

    def sign_in() -> Awaitable[httpx.Response]:
        credential = google.id_token(subject=subject, email=email)
        return http.post("/api/auth/google", json={"credential": credential})

    # The first sign-in creates the account; the rest find it.
    first = _tokens(await sign_in(), "google sign-in")["refreshToken"]
    rest = await _gather_refresh_tokens(
        count - 1, sign_in, "google sign-in", GOOGLE_SIGN_IN_CONCURRENCY
    )
    return [first, *rest]


async def password_sessions(
    http: httpx.AsyncClient, account: Account, count: int
) -> list[str]:
    """Sign `account` in `count` times: each costs the service an argon2
    verification, so this is the slow way (used with --url)."""

    def sign_in() -> Awaitable[httpx.Response]:
        return http.post(
            "/api/auth/login", json={"email": account.email, "password": PASSWORD}
        )

    return await _gather_refresh_tokens(
        count, sign_in, "login", PASSWORD_SIGN_IN_CONCURRENCY
    )
