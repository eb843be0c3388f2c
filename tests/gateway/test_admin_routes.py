"""The operators' core routes over HTTP through the real gateway and admin
service: who may call them, the shapes the admin page reads, and the audit
trail each write leaves (with the client address and request id the
gateway passes on)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from omnihub.admin.v1 import admin_pb2

from libs.config import Settings
from tests.gateway.factories import SignedInUser, assert_error, register
from tests.gateway.operators import Operators, SignedInOperator
from tests.services.admin.api import AdminApi
from tests.suite import ServedApp

SOME_ID = str(uuid.uuid4())
# Every operator route of the core area: (method, path, body).
ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/api/admin/settings", None),
    ("GET", "/api/admin/settings/definitions", None),
    ("PUT", "/api/admin/settings", {"siteName": "Refused"}),
    ("GET", "/api/admin/feature-flags", None),
    ("PUT", "/api/admin/feature-flags/refused_flag", {"enabled": True}),
    ("GET", "/api/admin/announcements", None),
    ("POST", "/api/admin/announcements", {"title": "Refused"}),
    ("PUT", f"/api/admin/announcements/{SOME_ID}", {"title": "Refused"}),
    ("DELETE", f"/api/admin/announcements/{SOME_ID}", None),
    ("GET", "/api/admin/audit-logs", None),
    ("GET", "/api/admin/error-logs", None),
    ("POST", f"/api/admin/error-logs/{SOME_ID}/resolve", None),
    ("GET", "/api/admin/rate-limits", None),
    (
        "PUT",
        f"/api/admin/rate-limits/user:{SOME_ID}",
        {"requests": 1, "windowSeconds": 60},
    ),
    ("DELETE", f"/api/admin/rate-limits/user:{SOME_ID}", None),
]
WRITES = [route for route in ROUTES if route[0] != "GET"]


def route_id(route: tuple[str, str, object]) -> str:
    return f"{route[0]} {route[1]}"


@pytest.fixture
async def http(admin_gateway: ServedApp) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_gateway.client() as client:
        yield client


@pytest.fixture(scope="module")
async def user(admin_gateway: ServedApp) -> SignedInUser:
    async with admin_gateway.client() as client:
        return await register(client)


async def superadmin(http: httpx.AsyncClient, operators: Operators) -> SignedInOperator:
    return await operators.of(http, "superadmin")


async def send(
    http: httpx.AsyncClient,
    route: tuple[str, str, dict[str, Any] | None],
    headers: dict[str, str],
) -> httpx.Response:
    method, path, body = route
    return await http.request(method, path, json=body, headers=headers)


class TestAccess:
    @pytest.mark.parametrize("route", ROUTES, ids=route_id)
    async def test_without_a_token_is_401(
        self, http: httpx.AsyncClient, route: tuple[str, str, dict[str, Any] | None]
    ) -> None:
        assert_error(await send(http, route, {}), 401)

    @pytest.mark.parametrize("route", ROUTES, ids=route_id)
    async def test_a_user_token_is_403(
        self,
        http: httpx.AsyncClient,
        user: SignedInUser,
        route: tuple[str, str, dict[str, Any] | None],
    ) -> None:
        assert_error(await send(http, route, user.auth), 403, "permission_denied")

    @pytest.mark.parametrize("route", WRITES, ids=route_id)
    async def test_a_viewer_may_not_write(
        self,
        http: httpx.AsyncClient,
        operators: Operators,
        route: tuple[str, str, dict[str, Any] | None],
    ) -> None:
        viewer = await operators.of(http, "viewer")

        assert_error(await send(http, route, viewer.auth), 403, "permission_denied")

    async def test_a_viewer_reads_everything(
        self, http: httpx.AsyncClient, operators: Operators
    ) -> None:
        viewer = await operators.of(http, "viewer")

        for route in ROUTES:
            if route[0] == "GET":
                response = await send(http, route, viewer.auth)
                assert response.status_code == 200, (route, response.text)


class TestSettings:
    async def test_settings_are_one_flat_object_of_numbers_and_text(
        self, http: httpx.AsyncClient, operators: Operators
    ) -> None:
        operator = await superadmin(http, operators)

        response = await http.get("/api/admin/settings", headers=operator.auth)

        assert response.status_code == 200
        body = response.json()
        for key in ("profitMargin", "profitMarginImage", "creditPrice", "freeCredits"):
            assert isinstance(body[key], int | float), key
        assert isinstance(body["siteName"], str)
        assert response.headers["cache-control"] == "no-store"

    async def test_the_web_page_saves_the_whole_object_back(
        self, http: httpx.AsyncClient, operators: Operators
    ) -> None:
        operator = await superadmin(http, operators)
        shown = (await http.get("/api/admin/settings", headers=operator.auth)).json()
        try:
            response = await http.put(
                "/api/admin/settings",
                json={**shown, "supportEmail": "desk@example.com"},
                headers=operator.auth,
            )

            assert response.status_code == 200, response.text
            body = response.json()
            assert body["success"] is True
            assert body["changed"] == ["supportEmail"]
            assert body["settings"]["supportEmail"] == "desk@example.com"
        finally:
            await http.put(
                "/api/admin/settings",
                json={"supportEmail": shown["supportEmail"]},
                headers=operator.auth,
            )

    async def test_a_refused_value_is_a_400_naming_the_setting(
        self, http: httpx.AsyncClient, operators: Operators
    ) -> None:
        operator = await superadmin(http, operators)

        response = await http.put(
            "/api/admin/settings", json={"profitMargin": -5}, headers=operator.auth
        )

        body = assert_error(response, 400, "invalid_argument")
        assert body["details"][0]["field"] == "profitMargin"

    async def test_a_body_that_is_no_object_is_a_400(
        self, http: httpx.AsyncClient, operators: Operators
    ) -> None:
        operator = await superadmin(http, operators)

        response = await http.put(
            "/api/admin/settings", json=["profitMargin"], headers=operator.auth
        )

        assert_error(response, 400)

    async def test_the_definitions_describe_each_setting(
        self, http: httpx.AsyncClient, operators: Operators
    ) -> None:
        operator = await superadmin(http, operators)

        response = await http.get(
            "/api/admin/settings/definitions", headers=operator.auth
        )

        described = {item["key"]: item for item in response.json()}
        assert described["falApiKey"]["type"] == "secret"
        assert described["falApiKey"]["isSet"] in (True, False)
        assert described["freeCredits"]["source"] == "billing"
        assert described["googleClientId"]["readOnly"] is True

    async def test_a_change_is_audited_with_address_and_request_id(
        self, http: httpx.AsyncClient, operators: Operators
    ) -> None:
        operator = await superadmin(http, operators)
        request_id = f"req-{uuid.uuid4().hex}"
        shown = (await http.get("/api/admin/settings", headers=operator.auth)).json()
        try:
            await http.put(
                "/api/admin/settings",
                json={"siteName": f"Audited {request_id[-6:]}"},
                headers=operator.headers(
                    **{"X-Request-Id": request_id, "X-Forwarded-For": "198.51.100.23"}
                ),
            )
            entries = (
                await http.get(
                    "/api/admin/audit-logs",
                    params={"actorId": operator.id, "action": "settings.updated"},
                    headers=operator.auth,
                )
            ).json()
        finally:
            await http.put(
                "/api/admin/settings",
                json={"siteName": shown["siteName"]},
                headers=operator.auth,
            )

        (entry,) = [e for e in entries if e["requestId"] == request_id]
        assert entry["clientAddress"] == "198.51.100.23"
        assert entry["userId"] == operator.id
        assert entry["actorRole"] == "superadmin"
        assert entry["before"] == {"siteName": shown["siteName"]}
        assert entry["after"] == {"siteName": f"Audited {request_id[-6:]}"}

    async def test_public_settings_need_no_sign_in(
        self, http: httpx.AsyncClient, settings: Settings
    ) -> None:
        response = await http.get("/api/settings")

        assert response.status_code == 200
        body = response.json()
        assert body["googleClientId"] == settings.google_client_id
        assert body["maintenanceMode"] is False
        assert isinstance(body["maxUploadMb"], int)
        assert "razorpayKeyId" in body
        assert "falApiKey" not in body

    async def test_the_older_public_settings_routes_still_answer(
        self, http: httpx.AsyncClient, settings: Settings
    ) -> None:
        google = await http.get("/api/settings/google-client-id")
        razorpay = await http.get("/api/settings/razorpay-key")

        assert google.json() == {"clientId": settings.google_client_id}
        assert razorpay.status_code == 200
        assert "keyId" in razorpay.json()


class TestFlags:
    async def test_flags_are_listed_and_set(
        self, http: httpx.AsyncClient, operators: Operators
    ) -> None:
        operator = await superadmin(http, operators)
        key = f"http_flag_{uuid.uuid4().hex[:8]}"

        saved = await http.put(
            f"/api/admin/feature-flags/{key}",
            json={"enabled": True, "description": "From the page"},
            headers=operator.auth,
        )
        listed = await http.get("/api/admin/feature-flags", headers=operator.auth)

        assert saved.status_code == 200, saved.text
        assert saved.json()["updatedBy"] == operator.id
        flags = {flag["key"]: flag for flag in listed.json()}
        assert flags[key]["enabled"] is True
        assert flags[key]["name"] == key
        assert {"video_generation", "community_gallery", "maintenance_mode"} <= set(
            flags
        )

    async def test_enabled_must_be_a_boolean(
        self, http: httpx.AsyncClient, operators: Operators
    ) -> None:
        operator = await superadmin(http, operators)

        response = await http.put(
            "/api/admin/feature-flags/some_flag",
            json={"enabled": "yes"},
            headers=operator.auth,
        )

        assert_error(response, 400)


class TestAnnouncements:
    async def test_an_announcement_is_written_read_and_deactivated(
        self, http: httpx.AsyncClient, operators: Operators
    ) -> None:
        operator = await superadmin(http, operators)
        created = await http.post(
            "/api/admin/announcements",
            json={
                "title": "New models",
                "message": "Try them",
                "severity": "info",
                "audience": "users",
                "expiresAt": "2099-01-01T00:00:00Z",
            },
            headers=operator.auth,
        )
        assert created.status_code == 201, created.text
        announcement = created.json()

        updated = await http.put(
            f"/api/admin/announcements/{announcement['id']}",
            json={"expiresAt": None, "title": "Newer models"},
            headers=operator.auth,
        )
        deleted = await http.delete(
            f"/api/admin/announcements/{announcement['id']}", headers=operator.auth
        )

        assert updated.json()["expiresAt"] is None
        assert updated.json()["title"] == "Newer models"
        assert updated.json()["message"] == "Try them"
        assert deleted.json()["active"] is False
        listed = await http.get("/api/admin/announcements", headers=operator.auth)
        assert announcement["id"] in {row["id"] for row in listed.json()}

    async def test_the_public_list_depends_on_who_asks(
        self, http: httpx.AsyncClient, operators: Operators, user: SignedInUser
    ) -> None:
        operator = await superadmin(http, operators)
        ids = {}
        for audience in ("all", "users", "admins"):
            response = await http.post(
                "/api/admin/announcements",
                json={"title": f"For {audience}", "audience": audience},
                headers=operator.auth,
            )
            ids[audience] = response.json()["id"]
        try:
            anonymous = {
                row["id"] for row in (await http.get("/api/announcements")).json()
            }
            signed_in = {
                row["id"]
                for row in (
                    await http.get("/api/announcements", headers=user.auth)
                ).json()
            }
        finally:
            for announcement_id in ids.values():
                await http.delete(
                    f"/api/admin/announcements/{announcement_id}", headers=operator.auth
                )

        assert ids["all"] in anonymous
        assert not {ids["users"], ids["admins"]} & anonymous
        assert {ids["all"], ids["users"]} <= signed_in
        assert ids["admins"] not in signed_in

    async def test_an_unknown_field_is_refused(
        self, http: httpx.AsyncClient, operators: Operators
    ) -> None:
        operator = await superadmin(http, operators)

        response = await http.post(
            "/api/admin/announcements",
            json={"title": "T", "priority": 3},
            headers=operator.auth,
        )

        assert_error(response, 400)


class TestLogs:
    async def test_audit_logs_page_with_a_cursor(
        self, http: httpx.AsyncClient, operators: Operators
    ) -> None:
        operator = await superadmin(http, operators)
        key = f"paged_{uuid.uuid4().hex[:8]}"
        for enabled in (True, False, True):
            await http.put(
                f"/api/admin/feature-flags/{key}",
                json={"enabled": enabled},
                headers=operator.auth,
            )

        first = await http.get(
            "/api/admin/audit-logs",
            params={"targetId": key, "limit": 2},
            headers=operator.auth,
        )
        second = await http.get(
            "/api/admin/audit-logs",
            params={
                "targetId": key,
                "limit": 2,
                "cursor": first.headers["x-next-cursor"],
            },
            headers=operator.auth,
        )

        assert [e["action"] for e in first.json()] == [
            "feature_flag.updated",
            "feature_flag.updated",
        ]
        assert [e["action"] for e in second.json()] == ["feature_flag.created"]
        assert "x-next-cursor" not in second.headers
        entry = first.json()[0]
        assert {"action", "userId", "createdAt"} <= set(entry)

    async def test_the_limit_is_clamped_not_refused(
        self, http: httpx.AsyncClient, operators: Operators
    ) -> None:
        operator = await superadmin(http, operators)

        small = await http.get(
            "/api/admin/audit-logs", params={"limit": 0}, headers=operator.auth
        )
        large = await http.get(
            "/api/admin/audit-logs", params={"limit": 100_000}, headers=operator.auth
        )

        assert small.status_code == 200
        assert len(small.json()) <= 1
        assert large.status_code == 200

    async def test_error_logs_are_listed_and_resolved(
        self, http: httpx.AsyncClient, operators: Operators, settings: Settings
    ) -> None:
        api = AdminApi(settings)
        try:
            reply = await api.stub.RecordError(
                admin_pb2.RecordErrorRequest(kind="provider", message="fal timed out"),
                metadata=api.service,
            )
        finally:
            await api.close()
        support = await operators.of(http, "support")

        listed = await http.get(
            "/api/admin/error-logs", params={"resolved": "false"}, headers=support.auth
        )
        resolved = await http.post(
            f"/api/admin/error-logs/{reply.id}/resolve", headers=support.auth
        )

        entry = next(e for e in listed.json() if e["id"] == reply.id)
        assert entry["error"] == "fal timed out"
        assert entry["createdAt"]
        assert entry["resolved"] is False
        assert resolved.status_code == 200
        assert resolved.json()["resolved"] is True
        assert resolved.json()["resolvedBy"] == support.id


class TestRateLimitRules:
    async def test_a_rule_is_set_listed_and_deleted(
        self, http: httpx.AsyncClient, operators: Operators
    ) -> None:
        operator = await superadmin(http, operators)
        subject = f"user:{uuid.uuid4()}"

        saved = await http.put(
            f"/api/admin/rate-limits/{subject}",
            json={"requests": 10, "windowSeconds": 60},
            headers=operator.auth,
        )
        listed = await http.get("/api/admin/rate-limits", headers=operator.auth)
        deleted = await http.delete(
            f"/api/admin/rate-limits/{subject}", headers=operator.auth
        )
        again = await http.delete(
            f"/api/admin/rate-limits/{subject}", headers=operator.auth
        )

        assert saved.json() | {"updatedAt": None} == {
            "subject": subject,
            "requests": 10,
            "windowSeconds": 60,
            "updatedBy": operator.id,
            "updatedAt": None,
        }
        assert subject in {rule["subject"] for rule in listed.json()}
        assert deleted.json() == {"success": True}
        assert_error(again, 404, "not_found")

    @pytest.mark.parametrize(
        ("subject", "body"),
        [
            ("everyone", {"requests": 1, "windowSeconds": 60}),
            ("tier:free", {"requests": 0, "windowSeconds": 60}),
            ("tier:free", {"requests": 1, "windowSeconds": 100_000}),
        ],
    )
    async def test_a_bad_rule_is_a_400(
        self,
        http: httpx.AsyncClient,
        operators: Operators,
        subject: str,
        body: dict[str, int],
    ) -> None:
        operator = await superadmin(http, operators)

        response = await http.put(
            f"/api/admin/rate-limits/{subject}", json=body, headers=operator.auth
        )

        assert_error(response, 400)
