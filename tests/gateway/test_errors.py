"""gateway/errors.py and gateway/middleware.py's body limit over real HTTP:
every refusal, from validation to bad tokens, has the one error shape."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from libs.config import Settings
from libs.tokens import ISSUER, Audience, TokenSigner
from tests.gateway.factories import (
    PASSWORD,
    SignedInUser,
    assert_error,
    bearer,
    register,
    unique_email,
)
from tests.suite import ServedApp

OVER_LIMIT_BYTES = 26 * 1024 * 1024


def _field_messages(body: dict[str, Any]) -> dict[str, str]:
    return {detail["field"]: detail["message"] for detail in body["details"]}


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims(user: SignedInUser) -> dict[str, Any]:
    """The claims of the user's real access token, unverified."""
    payload = user.access_token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "==")))


class TestRequestValidation:
    async def test_missing_fields_are_each_reported(self, gateway: ServedApp) -> None:
        async with gateway.client() as http:
            response = await http.post("/api/auth/register", json={})

        body = assert_error(response, 400, "invalid_argument")
        assert _field_messages(body) == {
            "email": "email is required.",
            "password": "password is required.",
            "name": "name is required.",
        }

    async def test_number_password_is_not_coerced(self, gateway: ServedApp) -> None:
        async with gateway.client() as http:
            user = await register(http, password="123456")
            response = await http.post(
                "/api/auth/login", json={"email": user.email, "password": 123456}
            )

        body = assert_error(response, 400, "invalid_argument")
        assert _field_messages(body) == {"password": "password must be a string."}

    async def test_unknown_property_is_refused(self, gateway: ServedApp) -> None:
        async with gateway.client() as http:
            response = await http.post(
                "/api/auth/register",
                json={
                    "email": unique_email(),
                    "password": PASSWORD,
                    "name": "Ann",
                    "role": "admin",
                },
            )

        body = assert_error(response, 400, "invalid_argument")
        assert body["message"] == "property role should not exist"

    @pytest.mark.parametrize("field", ["email", "name", "password"])
    async def test_huge_string_is_refused(self, gateway: ServedApp, field: str) -> None:
        values = {"email": unique_email(), "password": PASSWORD, "name": "Ann"}
        values[field] = "a" * 10_000
        async with gateway.client() as http:
            response = await http.post("/api/auth/register", json=values)

        body = assert_error(response, 400, "invalid_argument")
        assert _field_messages(body) == {field: f"{field} is too long."}

    async def test_invalid_email_is_refused_by_auth_service(
        self, gateway: ServedApp
    ) -> None:
        async with gateway.client() as http:
            response = await http.post(
                "/api/auth/register",
                json={"email": "not-an-address", "password": PASSWORD, "name": "A"},
            )

        body = assert_error(response, 400, "invalid_argument")
        assert set(_field_messages(body)) == {"email"}

    async def test_short_password_is_refused(self, gateway: ServedApp) -> None:
        async with gateway.client() as http:
            response = await http.post(
                "/api/auth/register",
                json={"email": unique_email(), "password": "12345", "name": "A"},
            )

        body = assert_error(response, 400, "invalid_argument")
        assert set(_field_messages(body)) == {"password"}

    @pytest.mark.parametrize(
        ("path", "body", "field"),
        [
            (
                "/api/auth/register",
                {"email": "a\u0000b@example.com", "password": PASSWORD, "name": "A"},
                "email",
            ),
            (
                "/api/auth/register",
                {"email": "ann@example.com", "password": PASSWORD, "name": "A\u0000"},
                "name",
            ),
            (
                "/api/auth/login",
                {"email": "a\u0000b@example.com", "password": PASSWORD},
                "email",
            ),
            (
                "/api/admin/login",
                {"username": "root\u0000", "password": PASSWORD},
                "username",
            ),
        ],
        ids=["register-email", "register-name", "login-email", "admin-username"],
    )
    async def test_nul_character_is_refused(
        self, gateway: ServedApp, path: str, body: dict[str, str], field: str
    ) -> None:
        # PostgreSQL text cannot hold NUL; it must be a 400, not a 500.
        async with gateway.client() as http:
            response = await http.post(path, json=body)

        details = assert_error(response, 400, "invalid_argument")
        assert _field_messages(details) == {
            field: f"{field}: must not contain a NUL character."
        }

    async def test_malformed_json_is_refused(self, gateway: ServedApp) -> None:
        async with gateway.client() as http:
            response = await http.post(
                "/api/auth/login",
                content=b'{"email": "a@b.co", "password": ',
                headers={"Content-Type": "application/json"},
            )

        body = assert_error(response, 400, "invalid_argument")
        assert body["message"] == "The request body is not valid JSON."

    async def test_json_array_body_is_refused(self, gateway: ServedApp) -> None:
        async with gateway.client() as http:
            response = await http.post("/api/auth/login", json=["a@b.co", PASSWORD])

        assert_error(response, 400, "invalid_argument")


class TestBodyLimit:
    async def test_declared_body_over_limit_is_refused(
        self, gateway: ServedApp
    ) -> None:
        async with gateway.client() as http:
            response = await http.post(
                "/api/auth/login",
                content=b"x" * OVER_LIMIT_BYTES,
                headers={"Content-Type": "application/json"},
            )

        body = assert_error(response, 413, "body_too_large")
        assert "25 MB" in body["message"]

    async def test_streamed_body_over_limit_is_refused(
        self, gateway: ServedApp
    ) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            chunk = b" " * (1024 * 1024)
            for _ in range(OVER_LIMIT_BYTES // len(chunk)):
                yield chunk

        async with gateway.client() as http:
            # No Content-Length: the limit has to be enforced while reading.
            response = await http.post(
                "/api/auth/login",
                content=chunks(),
                headers={"Content-Type": "application/json"},
            )

        assert_error(response, 413, "body_too_large")

    async def test_body_under_limit_reaches_route(self, gateway: ServedApp) -> None:
        padding = " " * (24 * 1024 * 1024)
        content = f'{{"email": "{unique_email()}", "password": "x"}}{padding}'
        async with gateway.client() as http:
            response = await http.post(
                "/api/auth/login",
                content=content.encode(),
                headers={"Content-Type": "application/json"},
            )

        assert_error(response, 401, "invalid_credentials")


class TestRouting:
    async def test_unknown_route_is_not_found(self, gateway: ServedApp) -> None:
        async with gateway.client() as http:
            response = await http.get("/api/nowhere")

        body = assert_error(response, 404, "route_not_found")
        assert body["message"] == "Cannot GET /api/nowhere"

    async def test_wrong_method_is_not_allowed(self, gateway: ServedApp) -> None:
        async with gateway.client() as http:
            response = await http.get("/api/auth/login")

        assert_error(response, 405, "method_not_allowed")


@pytest.fixture
async def user(gateway: ServedApp) -> SignedInUser:
    async with gateway.client() as http:
        return await register(http)


class TestBearerTokens:
    async def test_missing_token_is_unauthenticated(self, gateway: ServedApp) -> None:
        async with gateway.client() as http:
            response = await http.get("/api/auth/me")

        assert_error(response, 401, "unauthenticated")

    async def test_other_scheme_is_unauthenticated(
        self, gateway: ServedApp, user: SignedInUser
    ) -> None:
        async with gateway.client() as http:
            response = await http.get(
                "/api/auth/me", headers={"Authorization": f"Token {user.access_token}"}
            )

        assert_error(response, 401, "unauthenticated")

    async def test_garbage_token_is_refused(self, gateway: ServedApp) -> None:
        async with gateway.client() as http:
            response = await http.get("/api/auth/me", headers=bearer("not.a.jwt"))

        assert_error(response, 401, "invalid_token")

    async def test_expired_token_is_refused(
        self, gateway: ServedApp, settings: Settings, user: SignedInUser
    ) -> None:
        claims = _claims(user)
        token = TokenSigner(settings.signing_secret()).issue(
            Audience.USER, claims["sub"], -60, session_id=claims["sid"]
        )
        async with gateway.client() as http:
            response = await http.get("/api/auth/me", headers=bearer(token))

        assert_error(response, 401, "invalid_token")

    async def test_tampered_token_is_refused(
        self, gateway: ServedApp, user: SignedInUser
    ) -> None:
        async with gateway.client() as http:
            other = await register(http)
            header, _, signature = user.access_token.split(".")
            # Claim to be someone else, keeping the original signature.
            forged = f"{header}.{_b64(_claims(other))}.{signature}"
            response = await http.get("/api/auth/me", headers=bearer(forged))

        assert_error(response, 401, "invalid_token")

    async def test_unsigned_token_is_refused(
        self, gateway: ServedApp, user: SignedInUser
    ) -> None:
        unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(user))}."
        async with gateway.client() as http:
            response = await http.get("/api/auth/me", headers=bearer(unsigned))

        assert_error(response, 401, "invalid_token")

    async def test_token_signed_with_other_secret_is_refused(
        self, gateway: ServedApp, user: SignedInUser
    ) -> None:
        claims = _claims(user)
        token = TokenSigner("another-secret-" + "y" * 40).issue(
            Audience.USER, claims["sub"], 600, session_id=claims["sid"]
        )
        async with gateway.client() as http:
            response = await http.get("/api/auth/me", headers=bearer(token))

        assert_error(response, 401, "invalid_token")

    async def test_internal_service_token_is_refused(
        self, gateway: ServedApp, settings: Settings, user: SignedInUser
    ) -> None:
        claims = _claims(user)
        token = TokenSigner(settings.signing_secret()).issue(
            Audience.INTERNAL, claims["sub"], 600, session_id=claims["sid"]
        )
        async with gateway.client() as http:
            response = await http.get("/api/auth/me", headers=bearer(token))

        assert_error(response, 401, "invalid_token")

    async def test_valid_token_from_same_secret_is_accepted(
        self, gateway: ServedApp, settings: Settings, user: SignedInUser
    ) -> None:
        # The control for the refusals above: the same claims, signed right.
        claims = _claims(user)
        assert claims["iss"] == ISSUER
        assert claims["exp"] > time.time()
        token = TokenSigner(settings.signing_secret()).issue(
            Audience.USER, claims["sub"], 600, session_id=claims["sid"]
        )
        async with gateway.client() as http:
            response = await http.get("/api/auth/me", headers=bearer(token))

        assert response.status_code == 200, response.text
        assert response.json()["id"] == user.id
