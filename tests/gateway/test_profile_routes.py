"""gateway/routers/profile.py over real HTTP: the gateway in front of a real
auth service and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from libs.config import Settings
from libs.db import create_engine
from services.auth.models import SCHEMA
from tests.gateway.factories import (
    SignedInUser,
    assert_error,
    bearer,
    create_operator,
    register,
)
from tests.suite import ServedApp

# What the web client's profile page reads (web-client.md §2.9).
PROFILE_FIELDS = {
    "name",
    "email",
    "nickname",
    "bio",
    "avatarUrl",
    "isPublicProfile",
    "createdAt",
    "stats",
}
STATS_FIELDS = {"generations", "published", "likesReceived"}
ROUTES = [
    ("GET", "/api/profile", None),
    ("PUT", "/api/profile", {"name": "Changed"}),
    ("POST", "/api/profile/regenerate-nickname", None),
]


@pytest.fixture(scope="module")
async def member(gateway: ServedApp) -> SignedInUser:
    """An account shared by the tests whose every change is refused."""
    async with gateway.client() as http:
        return await register(http)


@pytest.fixture(scope="module")
async def operator_token(gateway: ServedApp, settings: Settings) -> str:
    operator = await create_operator(settings)
    async with gateway.client() as http:
        response = await http.post(
            "/api/admin/login",
            json={"username": operator.username, "password": operator.password},
        )
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


async def suspend(settings: Settings, user_id: str) -> None:
    engine = create_engine(settings, SCHEMA)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text("UPDATE auth.users SET status = 'suspended' WHERE id = :id"),
                {"id": uuid.UUID(user_id)},
            )
    finally:
        await engine.dispose()


async def profile_of(http: httpx.AsyncClient, user: SignedInUser) -> dict[str, Any]:
    response = await http.get("/api/profile", headers=user.auth)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def put_profile(
    http: httpx.AsyncClient, user: SignedInUser, body: dict[str, Any]
) -> httpx.Response:
    return await http.put("/api/profile", json=body, headers=user.auth)


def unique_nickname(label: str = "Nick") -> str:
    return f"{label}_{uuid.uuid4().hex[:12]}"


class TestGetProfile:
    async def test_returns_the_fields_the_web_client_reads(
        self, gateway: ServedApp
    ) -> None:
        async with gateway.client() as http:
            user = await register(http, name="Ann")
            response = await http.get("/api/profile", headers=user.auth)

        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        body = response.json()
        assert body.keys() >= PROFILE_FIELDS
        assert body["stats"].keys() == STATS_FIELDS
        assert (body["name"], body["email"]) == ("Ann", user.email)
        assert body["nickname"] == user.body["user"]["nickname"]
        assert (body["bio"], body["avatarUrl"]) == (None, None)
        assert body["isPublicProfile"] is False
        datetime.fromisoformat(body["createdAt"])


class TestUpdateProfile:
    async def test_what_the_web_client_sends_is_stored(
        self, gateway: ServedApp
    ) -> None:
        async with gateway.client() as http:
            user = await register(http)
            response = await put_profile(
                http,
                user,
                {"name": "Ann Lee", "bio": "Draws foxes.", "isPublicProfile": True},
            )
            stored = await profile_of(http, user)

        assert response.status_code == 200, response.text
        assert response.json() == stored
        assert stored["name"] == "Ann Lee"
        assert stored["bio"] == "Draws foxes."
        assert stored["isPublicProfile"] is True

    async def test_nickname_and_avatar_can_change(self, gateway: ServedApp) -> None:
        nickname = unique_nickname()
        async with gateway.client() as http:
            user = await register(http)
            response = await put_profile(
                http,
                user,
                {"nickname": nickname, "avatarUrl": "https://cdn.example.com/a.png"},
            )

        assert response.status_code == 200, response.text
        assert response.json()["nickname"] == nickname
        assert response.json()["avatarUrl"] == "https://cdn.example.com/a.png"

    async def test_fields_left_out_keep_their_values(self, gateway: ServedApp) -> None:
        async with gateway.client() as http:
            user = await register(http, name="Ann")
            await put_profile(http, user, {"bio": "Kept", "isPublicProfile": True})
            response = await put_profile(http, user, {"name": "Renamed"})

        body = response.json()
        assert (body["name"], body["bio"], body["isPublicProfile"]) == (
            "Renamed",
            "Kept",
            True,
        )

    async def test_null_bio_and_avatar_remove_them(self, gateway: ServedApp) -> None:
        async with gateway.client() as http:
            user = await register(http)
            await put_profile(
                http,
                user,
                {"bio": "Bio", "avatarUrl": "https://cdn.example.com/a.png"},
            )
            response = await put_profile(http, user, {"bio": None, "avatarUrl": None})

        assert response.status_code == 200, response.text
        assert (response.json()["bio"], response.json()["avatarUrl"]) == (None, None)

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("name", None),
            ("name", ""),
            ("name", 42),
            ("name", "x" * 101),
            ("name", "Ann\x00"),
            ("nickname", None),
            ("nickname", "ab"),
            ("nickname", "x" * 31),
            ("nickname", "no spaces"),
            ("bio", "x" * 501),
            ("bio", "Hello\x00"),
            ("avatarUrl", "http://cdn.example.com/a.png"),
            ("avatarUrl", "javascript:alert(1)"),
            ("avatarUrl", "https://cdn.example.com/" + "a" * 2030),
            ("isPublicProfile", None),
            ("isPublicProfile", "yes"),
        ],
    )
    async def test_unacceptable_value_is_400_naming_the_field(
        self, gateway: ServedApp, member: SignedInUser, field: str, value: object
    ) -> None:
        async with gateway.client() as http:
            response = await put_profile(http, member, {field: value})

        body = assert_error(response, 400, "invalid_argument")
        assert [d["field"] for d in body["details"]] == [field]

    @pytest.mark.parametrize(
        "field",
        ["email", "credits", "role", "status", "authProvider", "id", "avatar_url"],
    )
    async def test_field_that_is_not_a_profile_field_is_400(
        self, gateway: ServedApp, member: SignedInUser, field: str
    ) -> None:
        async with gateway.client() as http:
            response = await put_profile(
                http, member, {"name": "Changed", field: "x@example.com"}
            )
            stored = await profile_of(http, member)

        body = assert_error(response, 400, "invalid_argument")
        assert body["message"] == f"property {field} should not exist"
        assert stored["name"] == "Test User"
        assert stored["email"] == member.email

    @pytest.mark.parametrize("spelling", [str, str.upper, str.lower, str.swapcase])
    async def test_nickname_of_another_account_in_any_case_is_409(
        self, gateway: ServedApp, member: SignedInUser, spelling: Any
    ) -> None:
        async with gateway.client() as http:
            user = await register(http)
            response = await put_profile(
                http, user, {"nickname": spelling(member.body["user"]["nickname"])}
            )

        assert_error(response, 409, "nickname_taken")

    async def test_users_racing_for_one_nickname_exactly_one_wins(
        self, gateway: ServedApp
    ) -> None:
        nickname = unique_nickname("Race")
        async with gateway.client() as http:
            racers = [await register(http) for _ in range(3)]
            responses = await asyncio.gather(
                *(
                    put_profile(http, racer, {"nickname": spelling})
                    for racer, spelling in zip(
                        racers,
                        [nickname, nickname.upper(), nickname.lower()],
                        strict=True,
                    )
                )
            )
            nicknames = [(await profile_of(http, r))["nickname"] for r in racers]

        assert sorted(r.status_code for r in responses) == [200, 409, 409]
        for response in responses:
            if response.status_code == 409:
                assert_error(response, 409, "nickname_taken")
        assert [n.lower() for n in nicknames].count(nickname.lower()) == 1


class TestRegenerateNickname:
    async def test_returns_a_new_nickname_that_is_stored(
        self, gateway: ServedApp
    ) -> None:
        async with gateway.client() as http:
            user = await register(http)
            response = await http.post(
                "/api/profile/regenerate-nickname", headers=user.auth
            )
            stored = await profile_of(http, user)

        assert response.status_code == 200, response.text
        nickname = response.json()["nickname"]
        assert nickname != user.body["user"]["nickname"]
        assert stored["nickname"] == nickname


class TestAccess:
    @pytest.mark.parametrize(("method", "path", "body"), ROUTES)
    async def test_without_a_token_is_401(
        self, gateway: ServedApp, method: str, path: str, body: dict[str, Any] | None
    ) -> None:
        async with gateway.client() as http:
            response = await http.request(method, path, json=body)

        assert_error(response, 401, "unauthenticated")

    @pytest.mark.parametrize(("method", "path", "body"), ROUTES)
    async def test_operator_token_is_403(
        self,
        gateway: ServedApp,
        operator_token: str,
        method: str,
        path: str,
        body: dict[str, Any] | None,
    ) -> None:
        async with gateway.client() as http:
            response = await http.request(
                method, path, json=body, headers=bearer(operator_token)
            )

        assert_error(response, 403, "permission_denied")

    @pytest.mark.parametrize(("method", "path", "body"), ROUTES)
    async def test_suspended_account_is_403(
        self,
        gateway: ServedApp,
        settings: Settings,
        method: str,
        path: str,
        body: dict[str, Any] | None,
    ) -> None:
        async with gateway.client() as http:
            user = await register(http)
            await suspend(settings, user.id)
            response = await http.request(method, path, json=body, headers=user.auth)

        assert_error(response, 403, "account_disabled")
