"""Token confusion: every kind of token that is not a live user's access
token is refused on user routes, and a user's token on every operator route.

libs/tokens.py signs each audience with its own key derived from the secret,
pins HS256 and names the session in `sid`; these tests forge the tokens an
attacker could make and check the gateway refuses each with the error
shape."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest

from libs.config import Settings
from libs.tokens import ALGORITHM, ISSUER, Audience, TokenSigner
from tests.gateway.factories import (
    REVOCATION_DEADLINE_SECONDS,
    SignedInUser,
    assert_error,
    bearer,
    register,
    seconds_until_refused,
)
from tests.gateway.operators import Operators, SignedInOperator
from tests.security.routes import openapi_paths
from tests.suite import ServedApp

USER_ROUTES = (
    "/api/auth/me",
    "/api/auth/sessions",
    "/api/profile",
    "/api/credits/balance",
    "/api/generations",
    "/api/workspaces",
    "/api/projects",
    "/api/payments/history",
    "/api/community/user/me",
)
ADMIN_LOGIN = "/api/admin/login"


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _payload(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=="))
    return claims


def _claims(user: SignedInUser, **changes: object) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": Audience.USER.value,
        "sub": user.id,
        "sid": _payload(user.access_token)["sid"],
        "iat": now,
        "exp": now + 900,
        "jti": uuid.uuid4().hex,
    }
    return claims | changes


@pytest.fixture(scope="module")
async def http(admin_gateway: ServedApp) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_gateway.client() as client:
        yield client


@pytest.fixture(scope="module")
async def user(http: httpx.AsyncClient) -> SignedInUser:
    return await register(http)


@pytest.fixture(scope="module")
async def operator(http: httpx.AsyncClient, operators: Operators) -> SignedInOperator:
    return await operators.of(http, "superadmin")


async def assert_refused_everywhere(
    http: httpx.AsyncClient, token: str, status: int = 401
) -> None:
    for path in USER_ROUTES:
        response = await http.get(path, headers=bearer(token))
        assert_error(response, status)


async def test_the_users_own_token_is_accepted_on_user_routes(
    http: httpx.AsyncClient, user: SignedInUser
) -> None:
    # The control: every refusal below is about the token, not the routes.
    for path in USER_ROUTES:
        response = await http.get(path, headers=user.auth)
        assert response.status_code == 200, (path, response.text)


async def test_an_operators_token_is_refused_on_user_routes(
    http: httpx.AsyncClient, operator: SignedInOperator
) -> None:
    # A real operator is known: forbidden here rather than unknown.
    await assert_refused_everywhere(http, operator.token, 403)


def _admin_routes() -> list[tuple[str, str]]:
    return sorted(
        (method.upper(), path)
        for path, operations in openapi_paths().items()
        if path.startswith("/api/admin/") and path != ADMIN_LOGIN
        for method in operations
    )


ADMIN_ROUTES = _admin_routes()


class _AnyId(dict[str, str]):
    """Fills every path parameter with a fresh id."""

    def __missing__(self, key: str) -> str:
        return str(uuid.uuid4())


@pytest.mark.parametrize(("method", "template"), ADMIN_ROUTES)
async def test_a_users_token_is_refused_on_every_operator_route(
    http: httpx.AsyncClient, user: SignedInUser, method: str, template: str
) -> None:
    path = template.format_map(_AnyId())

    response = await http.request(method, path, headers=user.auth)

    assert response.status_code in {401, 403}, response.text
    assert_error(response, response.status_code)


async def test_an_operators_token_is_accepted_on_operator_routes(
    http: httpx.AsyncClient, operator: SignedInOperator
) -> None:
    response = await http.get("/api/admin/users", headers=operator.auth)

    assert response.status_code == 200, response.text


async def test_an_expired_token_is_refused(
    http: httpx.AsyncClient, user: SignedInUser, settings: Settings
) -> None:
    signer = TokenSigner(settings.signing_secret())
    sid = _payload(user.access_token)["sid"]

    token = signer.issue(Audience.USER, user.id, -60, session_id=sid)

    await assert_refused_everywhere(http, token)


async def test_an_unsigned_alg_none_token_is_refused(
    http: httpx.AsyncClient, user: SignedInUser
) -> None:
    token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(user))}."

    await assert_refused_everywhere(http, token)


async def test_a_token_signed_with_another_secret_is_refused(
    http: httpx.AsyncClient, user: SignedInUser
) -> None:
    signer = TokenSigner("another-secret-" + "y" * 40)
    sid = _payload(user.access_token)["sid"]

    token = signer.issue(Audience.USER, user.id, 900, session_id=sid)

    await assert_refused_everywhere(http, token)


async def test_a_token_signed_with_the_raw_secret_is_refused(
    http: httpx.AsyncClient, user: SignedInUser, settings: Settings
) -> None:
    # The keys are derived per audience; the secret itself signs nothing.
    secret = settings.signing_secret()

    token = jwt.encode(_claims(user), secret, algorithm=ALGORITHM)

    await assert_refused_everywhere(http, token)


async def test_a_token_with_a_tampered_subject_is_refused(
    http: httpx.AsyncClient, user: SignedInUser
) -> None:
    victim = await register(http)
    header, _claims_part, signature = user.access_token.split(".")
    claims = _payload(user.access_token) | {"sub": victim.id}

    token = f"{header}.{_b64(claims)}.{signature}"

    await assert_refused_everywhere(http, token)


async def test_a_token_with_a_longer_lifetime_written_in_is_refused(
    http: httpx.AsyncClient, user: SignedInUser
) -> None:
    header, _payload_part, signature = user.access_token.split(".")
    claims = _payload(user.access_token)
    claims["exp"] += 86_400

    token = f"{header}.{_b64(claims)}.{signature}"

    await assert_refused_everywhere(http, token)


async def test_a_refresh_token_is_not_an_access_token(
    http: httpx.AsyncClient, user: SignedInUser
) -> None:
    await assert_refused_everywhere(http, user.refresh_token)


async def test_an_internal_service_token_is_not_a_users_token(
    http: httpx.AsyncClient, user: SignedInUser, settings: Settings
) -> None:
    signer = TokenSigner(settings.signing_secret())

    token = signer.issue(Audience.INTERNAL, user.id, 300)

    await assert_refused_everywhere(http, token)


async def test_a_user_token_signed_with_the_operator_key_is_refused(
    http: httpx.AsyncClient, user: SignedInUser, settings: Settings
) -> None:
    signer = TokenSigner(settings.signing_secret())
    sid = _payload(user.access_token)["sid"]

    token = signer.issue(Audience.ADMIN, user.id, 900, session_id=sid)

    await assert_refused_everywhere(http, token, 403)


async def test_the_access_token_of_a_revoked_session_is_refused(
    http: httpx.AsyncClient,
) -> None:
    user = await register(http)
    logout = await http.post(
        "/api/auth/logout",
        json={"refreshToken": user.refresh_token},
        headers=user.auth,
    )
    assert logout.status_code == 200, logout.text
    revoked_at = time.monotonic()

    # Each service hears of the revocation through its feed: every route
    # refuses the token within the promised deadline.
    await seconds_until_refused(http, user.access_token)
    for path in USER_ROUTES:
        await _refused_within_deadline(http, path, user.access_token, revoked_at)


async def _refused_within_deadline(
    http: httpx.AsyncClient, path: str, token: str, revoked_at: float
) -> None:
    while (response := await http.get(path, headers=bearer(token))).status_code == 200:
        elapsed = time.monotonic() - revoked_at
        assert elapsed < REVOCATION_DEADLINE_SECONDS, f"{path} still accepts it"
        await asyncio.sleep(0.05)
    assert_error(response, 401)


async def test_garbage_in_the_authorization_header_is_a_401(
    http: httpx.AsyncClient,
) -> None:
    for value in (
        "Bearer",
        "Bearer x y",
        "Basic Zm9vOmJhcg==",
        "Bearer a.b.c",
        "x" * 4000,
    ):
        response = await http.get("/api/auth/me", headers={"Authorization": value})
        assert_error(response, 401)
