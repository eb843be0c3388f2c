"""gateway/routers/auth.py over real HTTP: the gateway in front of a real auth
service and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jwt
import pytest

from libs.config import Settings
from tests.fakes.google import FakeGoogle
from tests.gateway.factories import (
    PASSWORD,
    REVOCATION_DEADLINE_SECONDS,
    assert_accepted,
    assert_error,
    bearer,
    create_operator,
    current_session,
    extra_gateway,
    forwarded_for,
    login,
    own_auth_service,
    refresh,
    register,
    seconds_until_refused,
    sessions_of,
    sibling_settings,
    unique_address,
    unique_email,
)
from tests.suite import ServedApp

USER_FIELDS = {"id", "email", "name", "nickname", "avatarUrl", "credits", "createdAt"}
TOKEN_FIELDS = {"accessToken", "refreshToken", "expiresIn", "refreshExpiresIn"}


def _session_id(access_token: str) -> str:
    claims = jwt.decode(access_token, options={"verify_signature": False})
    return str(claims["sid"])


class TestRegister:
    async def test_register_returns_tokens_and_user(self, gateway: ServedApp) -> None:
        email = unique_email("ann")
        async with gateway.client() as http:
            response = await http.post(
                "/api/auth/register",
                json={"email": email, "password": PASSWORD, "name": "Ann"},
            )

        assert response.status_code == 201, response.text
        body = response.json()
        assert body.keys() >= TOKEN_FIELDS
        assert body["expiresIn"] > 0
        assert body["refreshExpiresIn"] > body["expiresIn"]
        assert body["user"].keys() >= USER_FIELDS
        assert body["user"]["email"] == email
        assert body["user"]["name"] == "Ann"
        assert body["user"]["nickname"]
        assert body["user"]["avatarUrl"] is None
        assert isinstance(body["user"]["credits"], int | float)
        datetime.fromisoformat(body["user"]["createdAt"])

    async def test_register_stores_email_lower_cased(self, gateway: ServedApp) -> None:
        email = unique_email("Mixed.Case")
        async with gateway.client() as http:
            user = await register(http, email=email)
            me = await http.get("/api/auth/me", headers=user.auth)

        assert user.body["user"]["email"] == email.lower()
        assert me.json()["email"] == email.lower()

    async def test_register_with_taken_email_is_conflict(
        self, gateway: ServedApp
    ) -> None:
        email = unique_email()
        async with gateway.client() as http:
            await register(http, email=email)
            response = await http.post(
                "/api/auth/register",
                json={"email": email, "password": PASSWORD, "name": "Again"},
            )

        assert_error(response, 409, "email_taken")

    async def test_register_with_other_letter_case_is_conflict(
        self, gateway: ServedApp
    ) -> None:
        local = unique_email("ann").split("@")[0]
        async with gateway.client() as http:
            await register(http, email=f"{local}@x.com")
            response = await http.post(
                "/api/auth/register",
                json={
                    "email": f"{local.capitalize()}@X.com",
                    "password": PASSWORD,
                    "name": "Ann",
                },
            )

        assert_error(response, 409, "email_taken")

    async def test_simultaneous_registrations_create_one_account(
        self, gateway: ServedApp
    ) -> None:
        email = unique_email("race")
        body = {"email": email, "password": PASSWORD, "name": "Racer"}
        async with gateway.client() as http:
            responses = await asyncio.gather(
                http.post("/api/auth/register", json=body),
                http.post("/api/auth/register", json=body),
            )
            signed_in = await login(http, email)

        assert sorted(r.status_code for r in responses) == [201, 409]
        conflict = next(r for r in responses if r.status_code == 409)
        assert_error(conflict, 409, "email_taken")
        created = next(r for r in responses if r.status_code == 201)
        assert signed_in.id == created.json()["user"]["id"]


class TestLogin:
    async def test_login_returns_tokens_and_user(self, gateway: ServedApp) -> None:
        async with gateway.client() as http:
            user = await register(http)
            response = await http.post(
                "/api/auth/login",
                json={"email": user.email.upper(), "password": PASSWORD},
            )

        assert response.status_code == 200, response.text
        body = response.json()
        assert body.keys() >= TOKEN_FIELDS
        assert body["user"].keys() >= USER_FIELDS
        assert body["user"]["id"] == user.id
        assert body["refreshToken"] != user.refresh_token

    async def test_login_with_wrong_password_is_refused(
        self, gateway: ServedApp
    ) -> None:
        async with gateway.client() as http:
            user = await register(http)
            response = await http.post(
                "/api/auth/login",
                json={"email": user.email, "password": "not-the-password"},
            )

        assert_error(response, 401, "invalid_credentials")

    async def test_login_with_unknown_email_is_refused_alike(
        self, gateway: ServedApp
    ) -> None:
        async with gateway.client() as http:
            response = await http.post(
                "/api/auth/login",
                json={"email": unique_email("nobody"), "password": PASSWORD},
            )

        assert_error(response, 401, "invalid_credentials")


class TestRefresh:
    async def test_refresh_returns_new_pair_for_same_session(
        self, gateway: ServedApp
    ) -> None:
        async with gateway.client() as http:
            user = await register(http)
            response = await refresh(http, user.refresh_token)
            body = response.json()
            session = await current_session(http, body["accessToken"])

        assert response.status_code == 200, response.text
        assert body.keys() >= TOKEN_FIELDS
        assert body["refreshToken"] != user.refresh_token
        assert session["id"] == _session_id(user.access_token)

    async def test_refresh_with_unknown_token_is_refused(
        self, gateway: ServedApp
    ) -> None:
        async with gateway.client() as http:
            response = await refresh(http, "not-a-refresh-token")

        assert_error(response, 401, "invalid_token")

    async def test_reused_refresh_token_revokes_family(
        self, gateway: ServedApp
    ) -> None:
        async with gateway.client() as http:
            user = await register(http)
            second = (await refresh(http, user.refresh_token)).json()
            third = (await refresh(http, second["refreshToken"])).json()
            await assert_accepted(http, third["accessToken"])

            replay = await refresh(http, user.refresh_token)
            after = await refresh(http, third["refreshToken"])
            await seconds_until_refused(http, third["accessToken"])

        assert_error(replay, 401, "invalid_token")
        assert_error(after, 401, "invalid_token")

    async def test_concurrent_refreshes_stay_in_one_session(
        self, gateway: ServedApp
    ) -> None:
        async with gateway.client() as http:
            user = await register(http)
            responses = await asyncio.gather(
                *(refresh(http, user.refresh_token) for _ in range(10))
            )
            # The token that started the race may have been revoked by it.
            listed = await http.get("/api/auth/sessions", headers=user.auth)

        succeeded = [r.json() for r in responses if r.status_code == 200]
        assert succeeded, [r.text for r in responses]
        for response in responses:
            if response.status_code != 200:
                assert_error(response, 401)
        sessions = {_session_id(body["accessToken"]) for body in succeeded}
        assert sessions == {_session_id(user.access_token)}
        live = listed.json() if listed.status_code == 200 else []
        assert len(live) <= 1

    async def test_rotation_keeps_session_expiry(self, gateway: ServedApp) -> None:
        async with gateway.client() as http:
            user = await register(http)
            before = await current_session(http, user.access_token)
            token = user.refresh_token
            for _ in range(3):
                token = (await refresh(http, token)).json()["refreshToken"]
            listed = await sessions_of(http, user.access_token)

        assert [s["expiresAt"] for s in listed] == [before["expiresAt"]]

    async def test_refresh_expiry_counts_down_across_rotations(
        self, gateway: ServedApp
    ) -> None:
        async with gateway.client() as http:
            user = await register(http)
            first = user.body["refreshExpiresIn"]
            # A second must pass for a whole-second countdown to show.
            await asyncio.sleep(1.1)
            second = (await refresh(http, user.refresh_token)).json()
            third = (await refresh(http, second["refreshToken"])).json()

        assert second["refreshExpiresIn"] <= first - 1
        assert third["refreshExpiresIn"] <= second["refreshExpiresIn"]

    async def test_session_ends_at_absolute_expiry_despite_rotation(
        self, settings: Settings
    ) -> None:
        lifetime = 3.0
        async with (
            own_auth_service(settings, refresh_token_expiry=int(lifetime)) as own,
            extra_gateway(own) as gateway,
            gateway.client() as http,
        ):
            user = await register(http)
            registered_at = time.monotonic()
            await asyncio.sleep(1.0)
            rotated = await refresh(http, user.refresh_token)
            # Past the session's end, however recently it was rotated.
            await asyncio.sleep(registered_at + lifetime + 0.3 - time.monotonic())
            expired = await refresh(http, rotated.json()["refreshToken"])

        assert rotated.status_code == 200, rotated.text
        assert rotated.json()["refreshExpiresIn"] < lifetime
        assert_error(expired, 401, "invalid_token")


@pytest.fixture(scope="module")
async def other_replica(settings: Settings) -> AsyncIterator[ServedApp]:
    """A second auth service and gateway on the same database, which learn
    of revocations made elsewhere only through the revocation feed."""
    async with own_auth_service(settings) as own, extra_gateway(own) as served:
        yield served


class TestLogout:
    async def test_logout_ends_access_token(self, gateway: ServedApp) -> None:
        async with gateway.client() as http:
            user = await register(http)
            await assert_accepted(http, user.access_token)
            response = await http.post(
                "/api/auth/logout", json={"refreshToken": user.refresh_token}
            )
            await seconds_until_refused(http, user.access_token)

        assert response.status_code == 200, response.text
        assert response.json()["success"] is True

    async def test_logout_ends_access_token_on_other_replica(
        self, gateway: ServedApp, other_replica: ServedApp
    ) -> None:
        async with gateway.client() as http, other_replica.client() as elsewhere:
            user = await register(http)
            await assert_accepted(elsewhere, user.access_token)
            await http.post(
                "/api/auth/logout", json={"refreshToken": user.refresh_token}
            )
            elapsed = await seconds_until_refused(elsewhere, user.access_token)

        assert elapsed < REVOCATION_DEADLINE_SECONDS

    async def test_logout_ends_refresh_token(self, gateway: ServedApp) -> None:
        async with gateway.client() as http:
            user = await register(http)
            await http.post(
                "/api/auth/logout", json={"refreshToken": user.refresh_token}
            )
            response = await refresh(http, user.refresh_token)

        assert_error(response, 401, "invalid_token")

    async def test_logout_with_unknown_token_succeeds(self, gateway: ServedApp) -> None:
        async with gateway.client() as http:
            response = await http.post(
                "/api/auth/logout", json={"refreshToken": "never-issued"}
            )

        assert response.status_code == 200, response.text
        assert response.json()["success"] is True

    async def test_logout_all_ends_every_session(self, gateway: ServedApp) -> None:
        async with gateway.client() as http:
            first = await register(http)
            second = await login(http, first.email)
            await assert_accepted(http, second.access_token)
            response = await http.post("/api/auth/logout-all", headers=first.auth)
            await seconds_until_refused(http, first.access_token)
            await seconds_until_refused(http, second.access_token)

        assert response.status_code == 200, response.text
        assert response.json()["success"] is True
        assert response.json()["revokedSessions"] == 2

    async def test_logout_all_needs_sign_in(self, gateway: ServedApp) -> None:
        async with gateway.client() as http:
            response = await http.post("/api/auth/logout-all")

        assert_error(response, 401, "unauthenticated")


class TestSessions:
    async def test_sessions_mark_current_and_record_user_agent(
        self, gateway: ServedApp
    ) -> None:
        async with gateway.client() as http:
            laptop = await register(http, headers={"User-Agent": "Laptop/1.0"})
            phone = await login(http, laptop.email, headers={"User-Agent": "Phone/2.0"})
            listed = await sessions_of(http, phone.access_token)

        assert len(listed) == 2
        by_agent = {s["userAgent"]: s for s in listed}
        assert by_agent.keys() == {"Laptop/1.0", "Phone/2.0"}
        assert by_agent["Phone/2.0"]["current"] is True
        assert by_agent["Laptop/1.0"]["current"] is False
        for session in listed:
            datetime.fromisoformat(session["expiresAt"])
            datetime.fromisoformat(session["lastUsedAt"])

    async def test_long_user_agent_is_cut_to_512_characters(
        self, gateway: ServedApp
    ) -> None:
        async with gateway.client() as http:
            user = await register(http, headers={"User-Agent": "U" * 3000})
            session = await current_session(http, user.access_token)

        assert session["userAgent"] == "U" * 512

    async def test_revoking_a_session_ends_its_access_token(
        self, gateway: ServedApp
    ) -> None:
        async with gateway.client() as http:
            laptop = await register(http)
            phone = await login(http, laptop.email)
            await assert_accepted(http, laptop.access_token)
            target = _session_id(laptop.access_token)
            response = await http.delete(
                f"/api/auth/sessions/{target}", headers=phone.auth
            )
            await seconds_until_refused(http, laptop.access_token)
            remaining = await sessions_of(http, phone.access_token)

        assert response.status_code == 200, response.text
        assert response.json()["success"] is True
        assert [s["id"] for s in remaining] == [_session_id(phone.access_token)]

    async def test_revoking_another_users_session_is_not_found(
        self, gateway: ServedApp
    ) -> None:
        async with gateway.client() as http:
            ann = await register(http)
            bob = await register(http)
            response = await http.delete(
                f"/api/auth/sessions/{_session_id(bob.access_token)}",
                headers=ann.auth,
            )
            await assert_accepted(http, bob.access_token)

        assert_error(response, 404, "not_found")

    @pytest.mark.parametrize(
        "session_id",
        ["00000000-0000-4000-8000-000000000000", "not-a-uuid"],
        ids=["unknown", "malformed"],
    )
    async def test_revoking_missing_session_is_not_found(
        self, gateway: ServedApp, session_id: str
    ) -> None:
        async with gateway.client() as http:
            user = await register(http)
            response = await http.delete(
                f"/api/auth/sessions/{session_id}", headers=user.auth
            )

        assert_error(response, 404, "not_found")


class TestMe:
    async def test_me_returns_signed_in_user(self, gateway: ServedApp) -> None:
        async with gateway.client() as http:
            user = await register(http, name="Mia")
            response = await http.get("/api/auth/me", headers=user.auth)

        assert response.status_code == 200, response.text
        body = response.json()
        assert body.keys() >= USER_FIELDS
        assert body["id"] == user.id
        assert body["name"] == "Mia"
        assert [w["name"] for w in body["workspaces"]] == ["Mia's Workspace"]
        assert body["defaultWorkspace"] == body["workspaces"][0]
        assert response.headers["cache-control"] == "no-store"


class TestGoogle:
    async def test_google_sign_in_creates_account(
        self, gateway: ServedApp, google: FakeGoogle
    ) -> None:
        email = unique_email("g")
        credential = google.id_token(email=email, name="Gia")
        async with gateway.client() as http:
            response = await http.post(
                "/api/auth/google", json={"credential": credential}
            )
            me = await http.get(
                "/api/auth/me", headers=bearer(response.json()["accessToken"])
            )

        assert response.status_code == 200, response.text
        user = response.json()["user"]
        assert user.keys() >= USER_FIELDS
        assert user["email"] == email
        assert user["name"] == "Gia"
        assert user["avatarUrl"] == "https://example.com/avatar.png"
        assert me.json()["id"] == user["id"]

    async def test_google_sign_in_again_finds_same_account(
        self, gateway: ServedApp, google: FakeGoogle
    ) -> None:
        subject, email = uuid.uuid4().hex, unique_email("g")
        async with gateway.client() as http:
            first = await http.post(
                "/api/auth/google",
                json={"credential": google.id_token(subject=subject, email=email)},
            )
            second = await http.post(
                "/api/auth/google",
                json={"credential": google.id_token(subject=subject, email=email)},
            )

        assert first.status_code == second.status_code == 200, second.text
        assert second.json()["user"]["id"] == first.json()["user"]["id"]
        assert second.json()["refreshToken"] != first.json()["refreshToken"]

    async def test_google_sign_in_links_verified_email(
        self, gateway: ServedApp, google: FakeGoogle
    ) -> None:
        async with gateway.client() as http:
            existing = await register(http)
            response = await http.post(
                "/api/auth/google",
                json={"credential": google.id_token(email=existing.email)},
            )
            me = await http.get("/api/auth/me", headers=existing.auth)

        assert response.status_code == 200, response.text
        assert response.json()["user"]["id"] == existing.id
        assert me.json()["avatarUrl"] == "https://example.com/avatar.png"

    async def test_google_sign_in_refuses_unverified_email(
        self, gateway: ServedApp, google: FakeGoogle
    ) -> None:
        credential_of = google.id_token
        async with gateway.client() as http:
            existing = await register(http)
            response = await http.post(
                "/api/auth/google",
                json={
                    "credential": credential_of(
                        email=existing.email, email_verified=False
                    )
                },
            )
            me = await http.get("/api/auth/me", headers=existing.auth)

        assert_error(response, 401, "invalid_token")
        # Linking would have copied Google's picture onto the account.
        assert me.json()["avatarUrl"] is None

    @pytest.mark.parametrize(
        "claims",
        [
            {"signing_key": FakeGoogle.other_key()},
            {"audience": "someone-else.apps.googleusercontent.com"},
            {"expires_in": -3600},
            {"issuer": "https://accounts.example.com"},
        ],
        ids=["other-key", "wrong-audience", "expired", "wrong-issuer"],
    )
    async def test_google_sign_in_refuses_invalid_token(
        self, gateway: ServedApp, google: FakeGoogle, claims: dict[str, Any]
    ) -> None:
        credential = google.id_token(email=unique_email("g"), **claims)
        async with gateway.client() as http:
            response = await http.post(
                "/api/auth/google", json={"credential": credential}
            )

        assert_error(response, 401, "invalid_token")


class TestAdminLogin:
    async def test_admin_login_returns_operator_token(
        self, gateway: ServedApp, settings: Settings
    ) -> None:
        operator = await create_operator(settings)
        async with gateway.client() as http:
            response = await http.post(
                "/api/admin/login",
                json={"username": operator.username, "password": operator.password},
            )

        assert response.status_code == 200, response.text
        body = response.json()
        assert body["token"]
        assert body["expiresIn"] > 0
        assert body["admin"]["username"] == operator.username
        assert body["admin"]["id"]

    async def test_admin_login_with_wrong_password_is_refused(
        self, gateway: ServedApp, settings: Settings
    ) -> None:
        operator = await create_operator(settings)
        async with gateway.client() as http:
            response = await http.post(
                "/api/admin/login",
                json={"username": operator.username, "password": "wrong-password"},
            )

        assert_error(response, 401, "invalid_credentials")

    async def test_operator_token_is_refused_on_user_route(
        self, gateway: ServedApp, settings: Settings
    ) -> None:
        operator = await create_operator(settings)
        async with gateway.client() as http:
            signed_in = await http.post(
                "/api/admin/login",
                json={"username": operator.username, "password": operator.password},
            )
            response = await http.get(
                "/api/auth/me", headers=bearer(signed_in.json()["token"])
            )

        assert_error(response, 403, "permission_denied")


@dataclass
class TightLimits:
    """A second auth service allowing 3 attempts a minute, behind two
    gateway replicas."""

    first: ServedApp
    second: ServedApp


@pytest.fixture(scope="module")
async def tight_limits(settings: Settings) -> AsyncIterator[TightLimits]:
    async with (
        own_auth_service(
            settings,
            auth_rate_limit_account="3/60s",
            auth_rate_limit_address="3/60s",
        ) as tight,
        extra_gateway(tight) as first,
        extra_gateway(tight) as second,
    ):
        yield TightLimits(first, second)


class TestRateLimits:
    async def test_login_limit_per_account_is_shared_by_gateways(
        self, gateway: ServedApp, tight_limits: TightLimits
    ) -> None:
        async with gateway.client() as http:
            user = await register(http)
        replicas = [tight_limits.first, tight_limits.second] * 2
        statuses = []
        for replica in replicas:
            # A new address each time, so only the account's bucket fills up.
            async with replica.client() as http:
                response = await http.post(
                    "/api/auth/login",
                    json={"email": user.email, "password": PASSWORD},
                    headers=forwarded_for(unique_address()),
                )
            statuses.append(response.status_code)

        assert statuses == [200, 200, 200, 429]
        assert_error(response, 429, "rate_limited")
        assert int(response.headers["retry-after"]) >= 1

    async def test_login_limit_per_address(self, tight_limits: TightLimits) -> None:
        address = unique_address()
        statuses = []
        for replica in [tight_limits.first, tight_limits.second] * 2:
            async with replica.client() as http:
                response = await http.post(
                    "/api/auth/login",
                    json={"email": unique_email("probe"), "password": PASSWORD},
                    headers=forwarded_for(address),
                )
            statuses.append(response.status_code)

        assert statuses == [401, 401, 401, 429]
        assert_error(response, 429, "rate_limited")
        assert int(response.headers["retry-after"]) >= 1

    async def test_other_address_is_not_limited(
        self, tight_limits: TightLimits
    ) -> None:
        address = unique_address()
        async with tight_limits.first.client() as http:
            for _ in range(4):
                await http.post(
                    "/api/auth/login",
                    json={"email": unique_email("probe"), "password": PASSWORD},
                    headers=forwarded_for(address),
                )
            response = await http.post(
                "/api/auth/login",
                json={"email": unique_email("probe"), "password": PASSWORD},
                headers=forwarded_for(unique_address()),
            )

        assert_error(response, 401, "invalid_credentials")

    async def test_refresh_limit_per_address(self, tight_limits: TightLimits) -> None:
        address = unique_address()
        statuses = []
        for replica in [tight_limits.first, tight_limits.second] * 2:
            async with replica.client() as http:
                response = await http.post(
                    "/api/auth/refresh",
                    json={"refreshToken": "never-issued"},
                    headers=forwarded_for(address),
                )
            statuses.append(response.status_code)

        assert statuses == [401, 401, 401, 429]
        assert_error(response, 429, "rate_limited")
        assert "retry-after" in response.headers


@pytest.fixture(scope="module")
async def trusting_gateway(settings: Settings) -> AsyncIterator[ServedApp]:
    """Default settings, where loopback (the test client) is a trusted proxy."""
    async with extra_gateway(sibling_settings(settings)) as served:
        yield served


class TestClientAddress:
    async def test_session_records_forwarded_address_from_trusted_proxy(
        self, trusting_gateway: ServedApp
    ) -> None:
        address = unique_address()
        async with trusting_gateway.client() as http:
            user = await register(http, headers=forwarded_for(address))
            session = await current_session(http, user.access_token)

        assert session["ipAddress"] == address

    async def test_session_records_hop_added_by_trusted_proxy(
        self, trusting_gateway: ServedApp
    ) -> None:
        # The client wrote the first hop itself; the proxy appended the second.
        forged, real = unique_address(), unique_address()
        async with trusting_gateway.client() as http:
            user = await register(http, headers=forwarded_for(f"{forged}, {real}"))
            session = await current_session(http, user.access_token)

        assert session["ipAddress"] == real

    async def test_session_ignores_malformed_forwarded_address(
        self, trusting_gateway: ServedApp
    ) -> None:
        async with trusting_gateway.client() as http:
            user = await register(http, headers=forwarded_for("not-an-address"))
            session = await current_session(http, user.access_token)

        assert session["ipAddress"] == "127.0.0.1"

    async def test_session_ignores_forwarded_address_from_untrusted_peer(
        self, settings: Settings
    ) -> None:
        # Loopback, where the test client connects from, is not a proxy here.
        untrusting = sibling_settings(settings, trusted_proxies="10.0.0.0/8")
        async with extra_gateway(untrusting) as gateway, gateway.client() as http:
            user = await register(http, headers=forwarded_for(unique_address()))
            session = await current_session(http, user.access_token)

        assert session["ipAddress"] == "127.0.0.1"
