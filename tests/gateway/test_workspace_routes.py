"""gateway/routers/workspaces.py over real HTTP: /api/workspaces in front of
the real workspace, auth and billing services and PostgreSQL, with the
shapes the web client reads (camelCase, credits as numbers) and the one
error shape. Who may do what is tested cell by cell at the service
(tests/services/workspace/test_permissions.py); here every route shows how
a refusal reaches the client: 404 for outsiders, 403 for members without
the right."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from libs.config import Settings
from tests.gateway.factories import (
    SignedInUser,
    assert_error,
    extra_gateway,
    login,
    register,
    sibling_settings,
)
from tests.suite import ServedApp, free_port

SIGNUP_CREDITS = 10
# The Workspace object of the web client (web-client.md §2.14).
WORKSPACE_FIELDS = {
    "id",
    "name",
    "isDefault",
    "memberCount",
    "userRole",
    "credits",
    "creditMode",
    "allocatedCredits",
    "ownerId",
    "privacySettings",
}
PRIVACY_FIELDS = {
    "whoCanInvite",
    "whoCanAllocateCredits",
    "whoCanBeAdmin",
    "chatVisibility",
    "imageVisibility",
    "videoVisibility",
}


@dataclass(frozen=True)
class RestTeam:
    workspace_id: str
    owner: SignedInUser
    admin: SignedInUser
    member: SignedInUser
    outsider: SignedInUser


async def _created(http: httpx.AsyncClient, user: SignedInUser, name: str) -> str:
    response = await http.post(
        "/api/workspaces", json={"name": name}, headers=user.auth
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _join(
    http: httpx.AsyncClient,
    workspace_id: str,
    inviter: SignedInUser,
    user: SignedInUser,
) -> None:
    invite = await http.post(
        f"/api/workspaces/{workspace_id}/invite",
        json={"email": user.email},
        headers=inviter.auth,
    )
    assert invite.status_code == 201, invite.text
    joined = await http.post(
        f"/api/workspaces/join/{invite.json()['token']}", headers=user.auth
    )
    assert joined.status_code == 201, joined.text


async def _team(http: httpx.AsyncClient) -> RestTeam:
    owner, admin, member, outsider = [
        await register(http, name=name) for name in ("Ola", "Ade", "Mo", "Xi")
    ]
    workspace_id = await _created(http, owner, "Studio")
    for user in (admin, member):
        await _join(http, workspace_id, owner, user)
    promoted = await http.patch(
        f"/api/workspaces/{workspace_id}/members/{admin.id}",
        json={"role": "admin"},
        headers=owner.auth,
    )
    assert promoted.status_code == 200, promoted.text
    return RestTeam(workspace_id, owner, admin, member, outsider)


@pytest.fixture(scope="module")
async def team(gateway: ServedApp) -> RestTeam:
    """A team shared by the tests that change nothing."""
    async with gateway.client() as http:
        return await _team(http)


async def _balance(http: httpx.AsyncClient, user: SignedInUser) -> float:
    response = await http.get("/api/credits/balance", headers=user.auth)
    return float(response.json()["credits"])


class TestSignInShowsWorkspaces:
    async def test_register_returns_the_personal_workspace(
        self, gateway: ServedApp
    ) -> None:
        async with gateway.client() as http:
            user = await register(http, name="Ann")

        default = user.body["defaultWorkspace"]
        assert default.keys() >= WORKSPACE_FIELDS
        assert (default["name"], default["isDefault"]) == ("Ann's Workspace", True)
        assert (default["userRole"], default["ownerId"]) == ("owner", user.id)
        assert default["privacySettings"].keys() == PRIVACY_FIELDS

    async def test_login_returns_the_same_personal_workspace(
        self, gateway: ServedApp
    ) -> None:
        async with gateway.client() as http:
            user = await register(http)
            again = await login(http, user.email)

        assert (
            again.body["defaultWorkspace"]["id"] == user.body["defaultWorkspace"]["id"]
        )

    async def test_me_lists_every_workspace_with_the_personal_one_as_default(
        self, gateway: ServedApp
    ) -> None:
        async with gateway.client() as http:
            user = await register(http)
            team_id = await _created(http, user, "Crew")
            me = (await http.get("/api/auth/me", headers=user.auth)).json()

        assert [w["isDefault"] for w in me["workspaces"]] == [True, False]
        assert me["workspaces"][1]["id"] == team_id
        assert me["defaultWorkspace"] == me["workspaces"][0]

    async def test_workspace_outage_leaves_sign_in_working(
        self, gateway: ServedApp, settings: Settings
    ) -> None:
        nowhere = sibling_settings(
            settings,
            billing_address=settings.billing_address,
            workspace_address=f"127.0.0.1:{free_port()}",
        )
        async with extra_gateway(nowhere) as cut_off, cut_off.client() as http:
            user = await register(http)
            me = await http.get("/api/auth/me", headers=user.auth)

        assert user.body["defaultWorkspace"] is None
        assert me.status_code == 200, me.text
        assert (me.json()["workspaces"], me.json()["defaultWorkspace"]) == ([], None)
        assert me.json()["credits"] == SIGNUP_CREDITS


class TestWorkspaces:
    async def test_list_has_the_web_clients_fields_as_numbers(
        self, gateway: ServedApp, team: RestTeam
    ) -> None:
        async with gateway.client() as http:
            response = await http.get("/api/workspaces", headers=team.member.auth)

        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        personal, shared = response.json()
        assert personal["isDefault"]
        assert personal["allocatedCredits"] is None
        assert shared.keys() >= WORKSPACE_FIELDS
        assert (shared["id"], shared["userRole"]) == (team.workspace_id, "member")
        assert (shared["memberCount"], shared["credits"]) == (3, 0)
        assert shared["allocatedCredits"] == 0
        assert shared["creditMode"] == "shared"

    async def test_list_pages_through_the_next_cursor(
        self, gateway: ServedApp, team: RestTeam
    ) -> None:
        async with gateway.client() as http:
            first = await http.get(
                "/api/workspaces", params={"limit": 1}, headers=team.owner.auth
            )
            second = await http.get(
                "/api/workspaces",
                params={"limit": 1, "cursor": first.headers["x-next-cursor"]},
                headers=team.owner.auth,
            )

        assert [w["isDefault"] for w in first.json() + second.json()] == [True, False]
        assert "x-next-cursor" not in second.headers

    async def test_create_answers_201_with_the_workspace(
        self, gateway: ServedApp
    ) -> None:
        async with gateway.client() as http:
            user = await register(http)
            response = await http.post(
                "/api/workspaces", json={"name": " Lab "}, headers=user.auth
            )

        assert response.status_code == 201, response.text
        body = response.json()
        assert (body["name"], body["userRole"], body["memberCount"]) == (
            "Lab",
            "owner",
            1,
        )
        assert body["isDefault"] is False

    async def test_blank_name_is_a_400_naming_the_field(
        self, gateway: ServedApp, team: RestTeam
    ) -> None:
        async with gateway.client() as http:
            response = await http.post(
                "/api/workspaces", json={"name": "  "}, headers=team.owner.auth
            )

        body = assert_error(response, 400, "invalid_argument")
        assert [d["field"] for d in body["details"]] == ["name"]

    async def test_get_shows_owner_id_and_credit_mode(
        self, gateway: ServedApp, team: RestTeam
    ) -> None:
        async with gateway.client() as http:
            response = await http.get(
                f"/api/workspaces/{team.workspace_id}", headers=team.admin.auth
            )

        body = response.json()
        assert (body["ownerId"], body["userRole"]) == (team.owner.id, "admin")
        assert body["privacySettings"]["whoCanInvite"] == "admins"

    async def test_patch_merges_privacy_settings(self, gateway: ServedApp) -> None:
        async with gateway.client() as http:
            user = await register(http)
            workspace_id = await _created(http, user, "Merge")
            response = await http.patch(
                f"/api/workspaces/{workspace_id}",
                json={
                    "creditMode": "individual",
                    "privacySettings": {"whoCanInvite": "members"},
                },
                headers=user.auth,
            )

        body = response.json()
        assert response.status_code == 200, response.text
        assert body["creditMode"] == "individual"
        assert body["privacySettings"]["whoCanInvite"] == "members"
        assert body["privacySettings"]["chatVisibility"] == "private"

    async def test_unknown_privacy_value_is_a_400_naming_the_setting(
        self, gateway: ServedApp, team: RestTeam
    ) -> None:
        async with gateway.client() as http:
            response = await http.patch(
                f"/api/workspaces/{team.workspace_id}",
                json={"privacySettings": {"whoCanInvite": "anyone"}},
                headers=team.owner.auth,
            )

        body = assert_error(response, 400, "invalid_argument")
        assert [d["field"] for d in body["details"]] == ["privacySettings.whoCanInvite"]

    async def test_unknown_privacy_key_is_a_400(
        self, gateway: ServedApp, team: RestTeam
    ) -> None:
        async with gateway.client() as http:
            response = await http.patch(
                f"/api/workspaces/{team.workspace_id}",
                json={"privacySettings": {"whoCanDance": "owner_only"}},
                headers=team.owner.auth,
            )

        assert_error(response, 400)

    async def test_personal_workspace_delete_is_a_409(self, gateway: ServedApp) -> None:
        async with gateway.client() as http:
            user = await register(http)
            personal = user.body["defaultWorkspace"]["id"]
            response = await http.delete(
                f"/api/workspaces/{personal}", headers=user.auth
            )

        assert_error(response, 409, "failed_precondition")

    async def test_delete_returns_the_pool_to_the_owner(
        self, gateway: ServedApp
    ) -> None:
        async with gateway.client() as http:
            owner = await register(http)
            workspace_id = await _created(http, owner, "Short-lived")
            await http.post(
                f"/api/workspaces/{workspace_id}/credits/add",
                json={"amount": 4},
                headers=owner.auth,
            )
            response = await http.delete(
                f"/api/workspaces/{workspace_id}", headers=owner.auth
            )
            balance = await _balance(http, owner)

        assert response.status_code == 200, response.text
        assert response.json() == {"success": True, "returnedCredits": 4}
        assert balance == SIGNUP_CREDITS


class TestMembers:
    async def test_members_have_the_web_clients_fields(
        self, gateway: ServedApp, team: RestTeam
    ) -> None:
        async with gateway.client() as http:
            response = await http.get(
                f"/api/workspaces/{team.workspace_id}/members", headers=team.member.auth
            )

        assert response.status_code == 200, response.text
        members = response.json()
        assert [(m["userId"], m["role"]) for m in members] == [
            (team.owner.id, "owner"),
            (team.admin.id, "admin"),
            (team.member.id, "member"),
        ]
        assert (members[0]["name"], members[0]["email"]) == ("Ola", team.owner.email)
        assert members[2]["allocatedCredits"] == 0

    async def test_member_pages_follow_the_next_cursor(
        self, gateway: ServedApp, team: RestTeam
    ) -> None:
        path = f"/api/workspaces/{team.workspace_id}/members"
        async with gateway.client() as http:
            first = await http.get(path, params={"limit": 2}, headers=team.owner.auth)
            rest = await http.get(
                path,
                params={"limit": 2, "cursor": first.headers["x-next-cursor"]},
                headers=team.owner.auth,
            )

        assert [m["userId"] for m in first.json() + rest.json()] == [
            team.owner.id,
            team.admin.id,
            team.member.id,
        ]

    async def test_leaving_removes_the_caller(self, gateway: ServedApp) -> None:
        async with gateway.client() as http:
            owner, member = await register(http), await register(http)
            workspace_id = await _created(http, owner, "Leavers")
            await _join(http, workspace_id, owner, member)
            response = await http.post(
                f"/api/workspaces/{workspace_id}/leave", headers=member.auth
            )
            after = await http.get(
                f"/api/workspaces/{workspace_id}", headers=member.auth
            )

        assert response.json() == {"success": True, "returnedCredits": 0}
        assert_error(after, 404, "not_found")

    async def test_owner_leaving_is_a_409(
        self, gateway: ServedApp, team: RestTeam
    ) -> None:
        async with gateway.client() as http:
            response = await http.post(
                f"/api/workspaces/{team.workspace_id}/leave", headers=team.owner.auth
            )

        assert_error(response, 409, "failed_precondition")

    async def test_ownership_transfer_makes_the_member_owner(
        self, gateway: ServedApp
    ) -> None:
        async with gateway.client() as http:
            owner, member = await register(http), await register(http)
            workspace_id = await _created(http, owner, "Handover")
            await _join(http, workspace_id, owner, member)
            response = await http.post(
                f"/api/workspaces/{workspace_id}/transfer-ownership",
                json={"userId": member.id},
                headers=owner.auth,
            )
            seen = await http.get(f"/api/workspaces/{workspace_id}", headers=owner.auth)

        assert response.status_code == 200, response.text
        assert (seen.json()["ownerId"], seen.json()["userRole"]) == (member.id, "admin")


class TestInvites:
    async def test_invite_link_points_at_the_web_client(
        self, gateway: ServedApp, team: RestTeam, settings: Settings
    ) -> None:
        async with gateway.client() as http:
            response = await http.post(
                f"/api/workspaces/{team.workspace_id}/invite",
                json={"email": "New.Person@Example.com"},
                headers=team.admin.auth,
            )
            await http.delete(
                f"/api/workspaces/{team.workspace_id}/invites/"
                f"{response.json()['invite']['id']}",
                headers=team.owner.auth,
            )

        assert response.status_code == 201, response.text
        body = response.json()
        assert body["inviteLink"] == f"{settings.frontend_url}/join/{body['token']}"
        assert body["invite"]["email"] == "new.person@example.com"

    async def test_anyone_with_the_link_sees_the_preview(
        self, gateway: ServedApp, team: RestTeam
    ) -> None:
        async with gateway.client() as http:
            created = await http.post(
                f"/api/workspaces/{team.workspace_id}/invite",
                json={},
                headers=team.owner.auth,
            )
            response = await http.get(
                f"/api/workspaces/invite/{created.json()['token']}"
            )

        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["workspaceName"], body["inviterName"]) == ("Studio", "Ola")
        assert body["emailBound"] is False

    async def test_email_bound_invite_is_a_403_for_another_account(
        self, gateway: ServedApp, team: RestTeam
    ) -> None:
        async with gateway.client() as http:
            created = await http.post(
                f"/api/workspaces/{team.workspace_id}/invite",
                json={"email": f"someone-{uuid.uuid4().hex[:8]}@example.com"},
                headers=team.owner.auth,
            )
            response = await http.post(
                f"/api/workspaces/join/{created.json()['token']}",
                headers=team.outsider.auth,
            )

        assert_error(response, 403, "permission_denied")

    async def test_revoked_invite_link_is_a_404(
        self, gateway: ServedApp, team: RestTeam
    ) -> None:
        async with gateway.client() as http:
            created = (
                await http.post(
                    f"/api/workspaces/{team.workspace_id}/invite",
                    json={},
                    headers=team.owner.auth,
                )
            ).json()
            revoked = await http.delete(
                f"/api/workspaces/{team.workspace_id}/invites/{created['invite']['id']}",
                headers=team.owner.auth,
            )
            response = await http.post(
                f"/api/workspaces/join/{created['token']}", headers=team.outsider.auth
            )

        assert revoked.json() == {"success": True}
        assert_error(response, 404, "not_found")

    async def test_open_invites_are_listed_without_their_tokens(
        self, gateway: ServedApp
    ) -> None:
        async with gateway.client() as http:
            owner = await register(http)
            workspace_id = await _created(http, owner, "Hiring")
            created = await http.post(
                f"/api/workspaces/{workspace_id}/invite",
                json={"email": "cand@example.com"},
                headers=owner.auth,
            )
            response = await http.get(
                f"/api/workspaces/{workspace_id}/invites", headers=owner.auth
            )

        [listed] = response.json()
        assert listed["id"] == created.json()["invite"]["id"]
        assert created.json()["token"] not in response.text


class TestCredits:
    async def test_add_moves_own_credits_into_the_pool(
        self, gateway: ServedApp
    ) -> None:
        async with gateway.client() as http:
            owner = await register(http)
            workspace_id = await _created(http, owner, "Pool")
            response = await http.post(
                f"/api/workspaces/{workspace_id}/credits/add",
                json={"amount": 2.5},
                headers=owner.auth,
            )

        assert response.status_code == 201, response.text
        assert response.json() == {
            "success": True,
            "added": 2.5,
            "workspaceCredits": 2.5,
            "personalCredits": SIGNUP_CREDITS - 2.5,
        }

    async def test_a_repeated_idempotency_key_moves_once(
        self, gateway: ServedApp
    ) -> None:
        async with gateway.client() as http:
            owner = await register(http)
            workspace_id = await _created(http, owner, "Once")
            headers = {**owner.auth, "Idempotency-Key": str(uuid.uuid4())}
            for _ in range(2):
                await http.post(
                    f"/api/workspaces/{workspace_id}/credits/add",
                    json={"amount": 3},
                    headers=headers,
                )
            balance = await _balance(http, owner)

        assert balance == SIGNUP_CREDITS - 3

    @pytest.mark.parametrize("amount", [0, -1, "5", 0.0000001, None])
    async def test_unusable_amount_is_a_400(
        self, gateway: ServedApp, team: RestTeam, amount: Any
    ) -> None:
        async with gateway.client() as http:
            response = await http.post(
                f"/api/workspaces/{team.workspace_id}/credits/add",
                json={"amount": amount},
                headers=team.owner.auth,
            )

        body = assert_error(response, 400)
        assert [d["field"] for d in body["details"]] == ["amount"]

    async def test_more_than_the_owner_has_is_a_402(
        self, gateway: ServedApp, team: RestTeam
    ) -> None:
        async with gateway.client() as http:
            response = await http.post(
                f"/api/workspaces/{team.workspace_id}/credits/add",
                json={"amount": 1000},
                headers=team.owner.auth,
            )

        body = assert_error(response, 402, "insufficient_credits")
        assert body["required"] == 1000

    async def test_allocation_and_usage_read_as_numbers(
        self, gateway: ServedApp
    ) -> None:
        async with gateway.client() as http:
            owner, member = await register(http), await register(http)
            workspace_id = await _created(http, owner, "Split")
            await _join(http, workspace_id, owner, member)
            await http.patch(
                f"/api/workspaces/{workspace_id}",
                json={"creditMode": "individual"},
                headers=owner.auth,
            )
            await http.post(
                f"/api/workspaces/{workspace_id}/credits/add",
                json={"amount": 6},
                headers=owner.auth,
            )
            allocated = await http.post(
                f"/api/workspaces/{workspace_id}/credits/allocate",
                json={"userId": member.id, "amount": 1.5},
                headers=owner.auth,
            )
            usage = await http.get(
                f"/api/workspaces/{workspace_id}/credits/usage", headers=member.auth
            )
            seen = await http.get(
                f"/api/workspaces/{workspace_id}", headers=member.auth
            )

        assert allocated.status_code == 201, allocated.text
        assert allocated.json() == {
            "success": True,
            "allocated": 1.5,
            "allocatedCredits": 1.5,
            "workspaceCredits": 4.5,
        }
        assert usage.json() == {
            "workspaceCredits": 4.5,
            "totalUsed": 0,
            "usageByType": [],
            "byType": [],
            "byMember": [],
        }
        assert seen.json()["allocatedCredits"] == 1.5


def _routes(team: RestTeam) -> list[tuple[str, str, dict[str, Any] | None]]:
    base = f"/api/workspaces/{team.workspace_id}"
    return [
        ("GET", base, None),
        ("PATCH", base, {"name": "Taken over"}),
        ("DELETE", base, None),
        ("GET", f"{base}/members", None),
        ("PATCH", f"{base}/members/{team.admin.id}", {"role": "member"}),
        ("DELETE", f"{base}/members/{team.admin.id}", None),
        ("POST", f"{base}/leave", None),
        ("POST", f"{base}/transfer-ownership", {"userId": team.admin.id}),
        ("POST", f"{base}/invite", {}),
        ("GET", f"{base}/invites", None),
        ("DELETE", f"{base}/invites/{uuid.uuid4()}", None),
        ("POST", f"{base}/credits/add", {"amount": 1}),
        ("POST", f"{base}/credits/allocate", {"userId": team.admin.id, "amount": 1}),
        ("GET", f"{base}/credits/usage", None),
    ]


async def test_every_workspace_route_is_a_404_for_outsiders(
    gateway: ServedApp, team: RestTeam
) -> None:
    async with gateway.client() as http:
        responses = [
            await http.request(method, path, json=body, headers=team.outsider.auth)
            for method, path, body in _routes(team)
        ]

    for response in responses:
        assert_error(response, 404, "not_found")


async def test_routes_beyond_a_members_rights_are_403s(
    gateway: ServedApp, team: RestTeam
) -> None:
    refused = [
        route
        for route in _routes(team)
        if route[0] != "GET" and "leave" not in route[1]
    ]
    async with gateway.client() as http:
        responses = [
            await http.request(method, path, json=body, headers=team.member.auth)
            for method, path, body in refused
        ]
        still = await http.get(
            f"/api/workspaces/{team.workspace_id}/members", headers=team.owner.auth
        )

    for response in responses:
        assert_error(response, 403, "permission_denied")
    assert [m["role"] for m in still.json()] == ["owner", "admin", "member"]


async def test_routes_need_a_signed_in_user(gateway: ServedApp, team: RestTeam) -> None:
    async with gateway.client() as http:
        responses = [
            await http.request(method, path, json=body)
            for method, path, body in _routes(team)
        ]

    for response in responses:
        assert_error(response, 401)
