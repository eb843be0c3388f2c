"""gateway/routers/admin_users.py over real HTTP: /api/admin/users,
/api/admin/admins and /api/admin/password in front of the real admin, auth,
billing, generation, workspace and chat services.

Who may call what: every route refuses a request without a token (401) and
a user's token (403); a viewer's token is refused on every write (403)
except changing one's own password, which any operator may do. Then each
route's behaviour as an operator sees it, the audit row each write leaves,
and what a ban and a deletion do to the user's next requests.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from libs.config import Settings
from libs.db import create_engine
from services.admin.main import AdminProcess
from services.chat.main import ChatProcess
from tests.gateway.factories import (
    PASSWORD,
    SignedInUser,
    assert_error,
    bearer,
    login,
    refresh,
    register,
    seconds_until_refused,
)
from tests.gateway.operators import Operators, SignedInOperator, sign_in_operator
from tests.suite import ServedApp

WRITE_BODIES: dict[str, Any] = {
    "status": {"status": "suspended", "reason": "checking"},
    "credits": {"amount": 1, "reason": "goodwill"},
    "note": {"body": "hello"},
    "admin": {
        "username": "nobody-ops",
        "password": "a-long-password-1",
        "role": "viewer",
    },
    "admin_update": {"role": "viewer"},
    "password": {
        "currentPassword": "whatever-it-is",
        "newPassword": "a-long-password-2",
    },
}
# (method, path, body); {user} and {admin} are filled in per test.
READS = [
    ("GET", "/api/admin/users", None),
    ("GET", "/api/admin/users/export", None),
    ("GET", "/api/admin/users/{user}", None),
    ("GET", "/api/admin/users/{user}/notes", None),
    ("GET", "/api/admin/users/{user}/activity", None),
    ("GET", "/api/admin/admins", None),
]
WRITES = [
    ("PUT", "/api/admin/users/{user}/status", "status"),
    ("PUT", "/api/admin/users/{user}/credits", "credits"),
    ("POST", "/api/admin/users/{user}/notes", "note"),
    ("DELETE", "/api/admin/users/{user}", None),
    ("POST", "/api/admin/admins", "admin"),
    ("PUT", "/api/admin/admins/{admin}", "admin_update"),
]
OWN_PASSWORD = ("PUT", "/api/admin/password", "password")
EVERY_ROUTE = [
    *[(method, path, None) for method, path, _ in READS],
    *WRITES,
    OWN_PASSWORD,
]


@pytest.fixture(scope="module")
async def http(
    gateway: ServedApp, admin_service: AdminProcess, chat_service: ChatProcess
) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway.client() as client:
        yield client


@pytest.fixture(scope="module")
def operators(settings: Settings) -> Operators:
    return Operators(settings)


@pytest.fixture(scope="module")
async def bystander(http: httpx.AsyncClient) -> SignedInUser:
    """A user routes name, whom no write below reaches (every one is refused)."""
    return await register(http)


@pytest.fixture(scope="module")
async def admin_sql(settings: Settings) -> AsyncIterator[Any]:
    engine = create_engine(settings, "admin")

    async def run(statement: str, **params: Any) -> list[dict[str, Any]]:
        async with engine.connect() as db:
            result = await db.execute(text(statement), params)
            return [dict(row) for row in result.mappings()]

    yield run
    await engine.dispose()


def _filled(path: str, user: SignedInUser) -> str:
    return path.format(user=user.id, admin=str(uuid.uuid4()))


async def _send(
    http: httpx.AsyncClient,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return await http.request(method, path, json=body, headers=headers)


def _body(name: str | None) -> Any:
    return WRITE_BODIES[name] if name else None


class TestAccess:
    @pytest.mark.parametrize(("method", "path", "body"), EVERY_ROUTE)
    async def test_no_token_is_401(
        self,
        http: httpx.AsyncClient,
        bystander: SignedInUser,
        method: str,
        path: str,
        body: str | None,
    ) -> None:
        response = await _send(http, method, _filled(path, bystander), _body(body))

        assert_error(response, 401)

    @pytest.mark.parametrize(("method", "path", "body"), EVERY_ROUTE)
    async def test_a_users_token_is_403(
        self,
        http: httpx.AsyncClient,
        bystander: SignedInUser,
        method: str,
        path: str,
        body: str | None,
    ) -> None:
        response = await _send(
            http, method, _filled(path, bystander), _body(body), bystander.auth
        )

        assert_error(response, 403, "permission_denied")

    @pytest.mark.parametrize(("method", "path", "body"), WRITES)
    async def test_a_viewers_write_is_403(
        self,
        http: httpx.AsyncClient,
        operators: Operators,
        bystander: SignedInUser,
        method: str,
        path: str,
        body: str | None,
    ) -> None:
        viewer = await operators.of(http, "viewer")

        response = await _send(
            http, method, _filled(path, bystander), _body(body), viewer.auth
        )

        assert_error(response, 403, "permission_denied")

    @pytest.mark.parametrize(("method", "path", "body"), READS)
    async def test_a_viewer_reads(
        self,
        http: httpx.AsyncClient,
        operators: Operators,
        bystander: SignedInUser,
        method: str,
        path: str,
        body: str | None,
    ) -> None:
        viewer = await operators.of(http, "viewer")

        response = await _send(
            http, method, _filled(path, bystander), None, viewer.auth
        )

        assert response.status_code == 200, response.text

    async def test_the_bystander_was_left_alone(
        self, http: httpx.AsyncClient, bystander: SignedInUser
    ) -> None:
        response = await http.get("/api/auth/me", headers=bystander.auth)

        assert response.status_code == 200, response.text


class TestListUsers:
    async def test_pages_through_a_search_newest_first(
        self, http: httpx.AsyncClient, operators: Operators
    ) -> None:
        marker = f"page-{uuid.uuid4().hex[:8]}"
        older = await register(http, email=f"{marker}-a@example.com")
        newer = await register(http, email=f"{marker}-b@example.com")
        viewer = await operators.of(http, "viewer")

        first = await http.get(
            "/api/admin/users",
            params={"search": marker, "limit": 1},
            headers=viewer.auth,
        )
        cursor = first.headers["X-Next-Cursor"]
        second = await http.get(
            "/api/admin/users",
            params={"search": marker, "limit": 1, "cursor": cursor},
            headers=viewer.auth,
        )

        assert [u["id"] for u in first.json()] == [newer.id]
        assert [u["id"] for u in second.json()] == [older.id]
        assert "X-Next-Cursor" not in second.headers
        assert first.json()[0]["credits"] == 10
        assert first.json()[0]["email"] == newer.email

    async def test_never_shows_a_password_hash_or_token(
        self, http: httpx.AsyncClient, operators: Operators, settings: Settings
    ) -> None:
        user = await register(http)
        engine = create_engine(settings, "auth")
        async with engine.connect() as db:
            stored_hash = await db.scalar(
                text("SELECT password_hash FROM users WHERE id = :id"),
                {"id": uuid.UUID(user.id)},
            )
        await engine.dispose()
        viewer = await operators.of(http, "viewer")

        listed = await http.get(
            "/api/admin/users", params={"search": user.email}, headers=viewer.auth
        )
        detail = await http.get(f"/api/admin/users/{user.id}", headers=viewer.auth)

        for response in (listed, detail):
            raw = response.text
            assert stored_hash not in raw
            assert user.access_token not in raw
            assert user.refresh_token not in raw
            assert "passwordHash" not in raw
            assert "token" not in raw.lower()

    async def test_filters_by_status(
        self, http: httpx.AsyncClient, operators: Operators
    ) -> None:
        marker = f"status-{uuid.uuid4().hex[:8]}"
        user = await register(http, email=f"{marker}-a@example.com")
        await register(http, email=f"{marker}-b@example.com")
        support = await operators.of(http, "support")
        await http.put(
            f"/api/admin/users/{user.id}/status",
            json={"status": "suspended"},
            headers=support.auth,
        )

        response = await http.get(
            "/api/admin/users",
            params={"search": marker, "status": "suspended"},
            headers=support.auth,
        )

        assert [u["id"] for u in response.json()] == [user.id]
        assert response.json()[0]["status"] == "suspended"

    async def test_an_unknown_status_filter_is_400(
        self, http: httpx.AsyncClient, operators: Operators
    ) -> None:
        viewer = await operators.of(http, "viewer")

        response = await http.get(
            "/api/admin/users", params={"status": "asleep"}, headers=viewer.auth
        )

        assert_error(response, 400)


class TestUserDetail:
    async def test_shows_the_user_with_credits_and_notes(
        self, http: httpx.AsyncClient, operators: Operators
    ) -> None:
        user = await register(http)
        support = await operators.of(http, "support")
        await http.post(
            f"/api/admin/users/{user.id}/notes",
            json={"body": "Asked about invoices"},
            headers=support.auth,
        )

        response = await http.get(f"/api/admin/users/{user.id}", headers=support.auth)

        body = response.json()
        assert response.status_code == 200, response.text
        assert (body["id"], body["email"], body["credits"]) == (user.id, user.email, 10)
        assert body["activeSessions"] == 1
        assert body["hasPassword"] is True
        assert [n["body"] for n in body["notes"]] == ["Asked about invoices"]
        assert body["generationCounts"] == {}

    async def test_an_unknown_user_is_404(
        self, http: httpx.AsyncClient, operators: Operators
    ) -> None:
        viewer = await operators.of(http, "viewer")

        response = await http.get(
            f"/api/admin/users/{uuid.uuid4()}", headers=viewer.auth
        )

        assert_error(response, 404)


class TestBan:
    async def test_takes_effect_on_the_users_next_request(
        self, http: httpx.AsyncClient, operators: Operators
    ) -> None:
        user = await register(http)
        support = await operators.of(http, "support")

        banned = await http.put(
            f"/api/admin/users/{user.id}/status",
            json={"status": "banned", "reason": "spam"},
            headers=support.auth,
        )

        assert banned.status_code == 200, banned.text
        assert banned.json()["applied"] is True
        assert banned.json()["revokedSessions"] == 1
        assert await seconds_until_refused(http, user.access_token) < 2.0

    async def test_sign_in_is_refused_with_the_reason(
        self, http: httpx.AsyncClient, operators: Operators
    ) -> None:
        user = await register(http)
        support = await operators.of(http, "support")
        await http.put(
            f"/api/admin/users/{user.id}/status",
            json={"status": "banned"},
            headers=support.auth,
        )

        response = await http.post(
            "/api/auth/login", json={"email": user.email, "password": PASSWORD}
        )

        body = assert_error(response, 403, "account_disabled")
        assert body["message"].startswith("This account is banned.")

    async def test_refresh_is_refused_with_the_reason(
        self, http: httpx.AsyncClient, operators: Operators
    ) -> None:
        user = await register(http)
        support = await operators.of(http, "support")
        await http.put(
            f"/api/admin/users/{user.id}/status",
            json={"status": "suspended"},
            headers=support.auth,
        )

        response = await refresh(http, user.refresh_token)

        body = assert_error(response, 403, "account_disabled")
        assert body["message"].startswith("This account is suspended.")

    async def test_reactivation_lets_them_back(
        self, http: httpx.AsyncClient, operators: Operators
    ) -> None:
        user = await register(http)
        support = await operators.of(http, "support")
        for status in ("suspended", "active"):
            await http.put(
                f"/api/admin/users/{user.id}/status",
                json={"status": status},
                headers=support.auth,
            )

        signed_in = await login(http, user.email)

        assert signed_in.id == user.id


class TestCredits:
    async def test_a_signed_change_becomes_a_ledger_adjustment(
        self, http: httpx.AsyncClient, operators: Operators
    ) -> None:
        user = await register(http)
        support = await operators.of(http, "support")

        response = await http.put(
            f"/api/admin/users/{user.id}/credits",
            json={"amount": -2.5, "reason": "duplicate grant"},
            headers=support.auth,
        )
        history = await http.get("/api/credits/history", headers=user.auth)

        assert response.status_code == 200, response.text
        entry = response.json()["entry"]
        assert (entry["type"], entry["amount"], entry["balanceAfter"]) == (
            "adjustment",
            -2.5,
            7.5,
        )
        newest = history.json()["transactions"][0]
        assert (newest["type"], newest["amount"], newest["description"]) == (
            "adjustment",
            -2.5,
            "duplicate grant",
        )

    async def test_the_original_absolute_body_is_refused(
        self, http: httpx.AsyncClient, operators: Operators, bystander: SignedInUser
    ) -> None:
        support = await operators.of(http, "support")

        response = await http.put(
            f"/api/admin/users/{bystander.id}/credits",
            json={"credits": 100},
            headers=support.auth,
        )

        body = assert_error(response, 400, "invalid_argument")
        assert "signed change" in body["message"]
        assert "amount" in body["message"]

    @pytest.mark.parametrize(
        "body",
        [
            {"amount": 0, "reason": "nothing"},
            {"amount": 1.0000001, "reason": "too fine"},
            {"amount": "5", "reason": "a string"},
            {"amount": 5},
            {"amount": 5, "reason": ""},
        ],
    )
    async def test_a_bad_change_is_400(
        self,
        http: httpx.AsyncClient,
        operators: Operators,
        bystander: SignedInUser,
        body: dict[str, Any],
    ) -> None:
        support = await operators.of(http, "support")

        response = await http.put(
            f"/api/admin/users/{bystander.id}/credits", json=body, headers=support.auth
        )

        assert_error(response, 400)

    async def test_more_than_the_balance_is_refused(
        self, http: httpx.AsyncClient, operators: Operators
    ) -> None:
        user = await register(http)
        support = await operators.of(http, "support")

        response = await http.put(
            f"/api/admin/users/{user.id}/credits",
            json={"amount": -11, "reason": "too much"},
            headers=support.auth,
        )

        assert_error(response, 402, "insufficient_credits")


class TestNotesAndActivity:
    async def test_notes_are_added_and_listed(
        self, http: httpx.AsyncClient, operators: Operators
    ) -> None:
        user = await register(http)
        support = await operators.of(http, "support")

        added = await http.post(
            f"/api/admin/users/{user.id}/notes",
            json={"body": "Prefers e-mail"},
            headers=support.auth,
        )
        listed = await http.get(
            f"/api/admin/users/{user.id}/notes", headers=support.auth
        )

        assert added.status_code == 201, added.text
        assert added.json()["authorId"] == support.id
        assert [n["id"] for n in listed.json()] == [added.json()["id"]]

    async def test_activity_lists_the_ledger(
        self, http: httpx.AsyncClient, operators: Operators
    ) -> None:
        user = await register(http)
        support = await operators.of(http, "support")
        await http.put(
            f"/api/admin/users/{user.id}/credits",
            json={"amount": 3, "reason": "contest prize"},
            headers=support.auth,
        )

        response = await http.get(
            f"/api/admin/users/{user.id}/activity", headers=support.auth
        )

        body = response.json()
        assert [(e["type"], e["amount"]) for e in body["entries"]] == [
            ("adjustment", 3),
            ("grant", 10),
        ]
        assert body["nextCursor"] is None


class TestExport:
    async def test_is_a_csv_download(
        self, http: httpx.AsyncClient, operators: Operators
    ) -> None:
        user = await register(http)
        viewer = await operators.of(http, "viewer")

        response = await http.get(
            "/api/admin/users/export",
            params={"search": user.email},
            headers=viewer.auth,
        )

        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "text/csv; charset=utf-8"
        assert response.headers["content-disposition"].startswith("attachment;")
        header, row = list(csv.reader(io.StringIO(response.text)))
        assert header[:2] == ["ID", "Email"]
        assert row[:2] == [user.id, user.email]

    async def test_the_original_path_serves_it_too(
        self, http: httpx.AsyncClient, operators: Operators
    ) -> None:
        viewer = await operators.of(http, "viewer")

        response = await http.get(
            "/api/admin/export/users",
            params={"status": "deleted"},
            headers=viewer.auth,
        )

        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "text/csv; charset=utf-8"
        assert response.text.startswith("ID,Email,Name,")

    @pytest.mark.parametrize(
        "name",
        [
            'Ann "Quotes" Smith',
            "Smith, Ann",
            "Ann\nSmith",
            "=SUM(A1:A9)",
            "+44 20 7946 0000",
            "-2+3",
            "@cmd",
        ],
    )
    async def test_escapes_every_awkward_name(
        self, http: httpx.AsyncClient, operators: Operators, name: str
    ) -> None:
        user = await register(http, name=name)
        viewer = await operators.of(http, "viewer")

        response = await http.get(
            "/api/admin/users/export",
            params={"search": user.email},
            headers=viewer.auth,
        )

        (_, row) = list(csv.reader(io.StringIO(response.text)))
        expected = "'" + name if name[0] in "=+-@" else name
        assert row[2] == expected


class TestDeletion:
    async def test_a_deleted_user_is_gone(
        self, http: httpx.AsyncClient, operators: Operators
    ) -> None:
        user = await register(http)
        superadmin = await operators.of(http, "superadmin")

        response = await http.delete(
            f"/api/admin/users/{user.id}", headers=superadmin.auth
        )
        detail = await http.get(f"/api/admin/users/{user.id}", headers=superadmin.auth)
        sign_in = await http.post(
            "/api/auth/login", json={"email": user.email, "password": PASSWORD}
        )

        assert response.status_code == 200, response.text
        assert response.json()["completed"] is True
        assert {s["state"] for s in response.json()["steps"]} == {"done"}
        assert detail.json()["status"] == "deleted"
        assert detail.json()["email"] == f"deleted-{user.id}@deleted.invalid"
        assert_error(sign_in, 401, "invalid_credentials")
        assert await seconds_until_refused(http, user.access_token) < 2.0

    async def test_support_may_not_delete(
        self, http: httpx.AsyncClient, operators: Operators, bystander: SignedInUser
    ) -> None:
        support = await operators.of(http, "support")

        response = await http.delete(
            f"/api/admin/users/{bystander.id}", headers=support.auth
        )

        assert_error(response, 403, "permission_denied")


class TestOperatorAccounts:
    async def test_a_new_operator_has_the_role_given(
        self, http: httpx.AsyncClient, operators: Operators
    ) -> None:
        superadmin = await operators.of(http, "superadmin")
        username = f"ops-{uuid.uuid4().hex[:8]}"

        created = await http.post(
            "/api/admin/admins",
            json={
                "username": username,
                "password": "a-long-password-1",
                "role": "viewer",
            },
            headers=superadmin.auth,
        )
        listed = await http.get("/api/admin/admins", headers=superadmin.auth)
        signed_in = await http.post(
            "/api/admin/login",
            json={"username": username, "password": "a-long-password-1"},
        )
        write = await http.post(
            f"/api/admin/users/{uuid.uuid4()}/notes",
            json={"body": "hi"},
            headers=bearer(signed_in.json()["token"]),
        )

        assert created.status_code == 201, created.text
        assert created.json()["role"] == "viewer"
        assert username in [a["username"] for a in listed.json()]
        assert_error(write, 403, "permission_denied")

    async def test_a_demoted_operator_must_sign_in_again(
        self, http: httpx.AsyncClient, operators: Operators, settings: Settings
    ) -> None:
        superadmin = await operators.of(http, "superadmin")
        demoted = await sign_in_operator(http, settings, "support")

        response = await http.put(
            f"/api/admin/admins/{demoted.id}",
            json={"role": "viewer"},
            headers=superadmin.auth,
        )

        assert response.status_code == 200, response.text
        assert response.json()["role"] == "viewer"
        assert await _seconds_until_operator_refused(http, demoted) < 2.0

    async def test_support_may_not_manage_operators(
        self, http: httpx.AsyncClient, operators: Operators
    ) -> None:
        support = await operators.of(http, "support")

        response = await http.post(
            "/api/admin/admins", json=WRITE_BODIES["admin"], headers=support.auth
        )

        assert_error(response, 403, "permission_denied")

    async def test_an_operator_changes_their_own_password(
        self, http: httpx.AsyncClient, settings: Settings
    ) -> None:
        me = await sign_in_operator(http, settings, "viewer")
        username = await _username(http, me)
        other = await http.post(
            "/api/admin/login",
            json={"username": username, "password": "operator-password-1"},
        )

        response = await http.put(
            "/api/admin/password",
            json={
                "currentPassword": "operator-password-1",
                "newPassword": "my-new-password-1",
            },
            headers=me.auth,
        )
        again = await http.post(
            "/api/admin/login",
            json={"username": username, "password": "my-new-password-1"},
        )

        assert response.status_code == 200, response.text
        assert response.json() == {"success": True, "revokedSessions": 1}
        assert again.status_code == 200, again.text
        other_session = SignedInOperator(me.id, "viewer", other.json()["token"])
        assert await _seconds_until_operator_refused(http, other_session) < 2.0

    async def test_a_wrong_current_password_is_400(
        self, http: httpx.AsyncClient, settings: Settings
    ) -> None:
        me = await sign_in_operator(http, settings, "viewer")

        response = await http.put(
            "/api/admin/password",
            json={
                "currentPassword": "not-it-at-all",
                "newPassword": "my-new-password-1",
            },
            headers=me.auth,
        )

        assert_error(response, 400, "invalid_argument")


class TestAuditTrail:
    async def test_every_write_leaves_a_row(
        self,
        http: httpx.AsyncClient,
        operators: Operators,
        settings: Settings,
        admin_sql: Any,
    ) -> None:
        user = await register(http)
        superadmin = await operators.of(http, "superadmin")
        other = await sign_in_operator(http, settings, "support")
        writes = [
            ("PUT", f"/api/admin/users/{user.id}/status", {"status": "suspended"}),
            (
                "PUT",
                f"/api/admin/users/{user.id}/credits",
                {"amount": 1, "reason": "r"},
            ),
            ("POST", f"/api/admin/users/{user.id}/notes", {"body": "n"}),
            ("PUT", f"/api/admin/admins/{other.id}", {"role": "viewer"}),
            (
                "POST",
                "/api/admin/admins",
                {
                    "username": f"ops-{uuid.uuid4().hex[:8]}",
                    "password": "a-long-password-1",
                    "role": "viewer",
                },
            ),
            ("DELETE", f"/api/admin/users/{user.id}", None),
        ]
        request_ids = []
        for method, path, body in writes:
            request_id = f"audit-{uuid.uuid4().hex}"
            response = await _send(
                http,
                method,
                path,
                body,
                {**superadmin.auth, "X-Request-Id": request_id},
            )
            assert response.status_code in (200, 201), response.text
            request_ids.append(request_id)

        rows = await admin_sql(
            "SELECT action, status, actor_id, host(client_address) AS address,"
            " request_id, after FROM audit_log WHERE request_id = ANY(:ids)"
            " ORDER BY id",
            ids=request_ids,
        )

        assert [r["action"] for r in rows] == [
            "user_status_changed",
            "credits_adjusted",
            "user_note_added",
            "admin_updated",
            "admin_created",
            "user_deleted",
        ]
        assert [r["request_id"] for r in rows] == request_ids
        assert {r["status"] for r in rows} == {"applied"}
        assert {r["actor_id"] for r in rows} == {superadmin.id}
        assert {r["address"] for r in rows} == {"127.0.0.1"}
        assert "a-long-password-1" not in json.dumps([r["after"] for r in rows])

    async def test_a_password_change_is_audited_without_the_password(
        self, http: httpx.AsyncClient, settings: Settings, admin_sql: Any
    ) -> None:
        me = await sign_in_operator(http, settings, "viewer")
        request_id = f"audit-{uuid.uuid4().hex}"

        await http.put(
            "/api/admin/password",
            json={
                "currentPassword": "operator-password-1",
                "newPassword": "my-new-password-1",
            },
            headers={**me.auth, "X-Request-Id": request_id},
        )

        (row,) = await admin_sql(
            "SELECT action, status, before, after FROM audit_log"
            " WHERE request_id = :id",
            id=request_id,
        )
        assert (row["action"], row["status"]) == ("admin_password_changed", "applied")
        written = json.dumps([row["before"], row["after"]])
        assert "operator-password-1" not in written
        assert "my-new-password-1" not in written


async def _username(http: httpx.AsyncClient, operator: SignedInOperator) -> str:
    listed = await http.get("/api/admin/admins", headers=operator.auth)
    return str(next(a["username"] for a in listed.json() if a["id"] == operator.id))


async def _seconds_until_operator_refused(
    http: httpx.AsyncClient, operator: SignedInOperator
) -> float:
    """Poll an operator read until the token is refused with 401."""
    started = time.monotonic()
    while time.monotonic() - started < 3.0:
        response = await http.get("/api/admin/admins", headers=operator.auth)
        if response.status_code == 401:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError("the operator's token was still accepted")
