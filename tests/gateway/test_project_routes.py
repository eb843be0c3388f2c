"""gateway/routers/projects.py over real HTTP: /api/projects in front of the
real workspace and auth services, with the shapes the web client reads
(web-client.md §2.5), 404 for every project the caller may not see, and
only the whitelisted fields accepted."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from libs.config import Settings
from tests.gateway.factories import SignedInUser, assert_error, register
from tests.services.generation.factories import GenerationRow, GenerationRows
from tests.suite import ServedApp

IMAGE = "https://cdn.example.com/ref.png"
PROJECT_FIELDS = {
    "id",
    "workspaceId",
    "ownerId",
    "name",
    "description",
    "color",
    "sharedWithWorkspace",
    "assetCount",
    "createdAt",
    "updatedAt",
}


@dataclass(frozen=True)
class People:
    owner: SignedInUser
    member: SignedInUser
    outsider: SignedInUser
    workspace_id: str


async def _people(http: httpx.AsyncClient) -> People:
    owner, member, outsider = [await register(http) for _ in range(3)]
    created = await http.post(
        "/api/workspaces", json={"name": "Studio"}, headers=owner.auth
    )
    workspace_id = created.json()["id"]
    invite = await http.post(
        f"/api/workspaces/{workspace_id}/invite",
        json={"email": member.email},
        headers=owner.auth,
    )
    joined = await http.post(
        f"/api/workspaces/join/{invite.json()['token']}", headers=member.auth
    )
    assert joined.status_code == 201, joined.text
    return People(owner, member, outsider, workspace_id)


@pytest.fixture(scope="module")
async def people(gateway: ServedApp) -> People:
    async with gateway.client() as http:
        return await _people(http)


async def _create(
    http: httpx.AsyncClient, user: SignedInUser, **body: Any
) -> dict[str, Any]:
    response = await http.post(
        "/api/projects", json={"name": "Refs", **body}, headers=user.auth
    )
    assert response.status_code == 201, response.text
    project: dict[str, Any] = response.json()
    return project


class TestProjects:
    async def test_created_project_is_listed_with_client_fields(
        self, gateway: ServedApp, people: People
    ) -> None:
        async with gateway.client() as http:
            project = await _create(http, people.owner, color="#00AAFF")
            listed = await http.get("/api/projects", headers=people.owner.auth)

        assert project.keys() == PROJECT_FIELDS
        assert (project["color"], project["assetCount"]) == ("#00aaff", 0)
        assert project["id"] in [p["id"] for p in listed.json()]

    async def test_update_changes_only_the_fields_sent(
        self, gateway: ServedApp, people: People
    ) -> None:
        async with gateway.client() as http:
            project = await _create(http, people.owner, description="old")
            response = await http.put(
                f"/api/projects/{project['id']}",
                json={"name": "Renamed"},
                headers=people.owner.auth,
            )

        assert response.status_code == 200, response.text
        assert (response.json()["name"], response.json()["description"]) == (
            "Renamed",
            "old",
        )

    @pytest.mark.parametrize("field", ["userId", "id", "ownerId", "name = 'x'"])
    async def test_update_refuses_a_field_outside_the_whitelist(
        self, gateway: ServedApp, people: People, field: str
    ) -> None:
        async with gateway.client() as http:
            project = await _create(http, people.owner)
            response = await http.put(
                f"/api/projects/{project['id']}",
                json={field: "x"},
                headers=people.owner.auth,
            )

        body = assert_error(response, 400)
        assert body["message"] == f"property {field} should not exist"

    @pytest.mark.parametrize("name", ["", "   ", "n" * 101])
    async def test_create_refuses_a_bad_name(
        self, gateway: ServedApp, people: People, name: str
    ) -> None:
        async with gateway.client() as http:
            response = await http.post(
                "/api/projects", json={"name": name}, headers=people.owner.auth
            )

        assert_error(response, 400)

    async def test_delete_removes_the_project(
        self, gateway: ServedApp, people: People
    ) -> None:
        async with gateway.client() as http:
            project = await _create(http, people.owner)
            deleted = await http.delete(
                f"/api/projects/{project['id']}", headers=people.owner.auth
            )
            assets = await http.get(
                f"/api/projects/{project['id']}/assets", headers=people.owner.auth
            )

        assert deleted.json() == {"success": True}
        assert_error(assets, 404)


class TestBola:
    async def test_another_users_project_is_not_found_on_every_route(
        self, gateway: ServedApp, people: People
    ) -> None:
        async with gateway.client() as http:
            project = await _create(http, people.owner)
            path = f"/api/projects/{project['id']}"
            auth = people.outsider.auth
            responses = [
                await http.put(path, json={"name": "x"}, headers=auth),
                await http.delete(path, headers=auth),
                await http.get(f"{path}/assets", headers=auth),
                await http.post(
                    f"{path}/assets", json={"assetUrl": IMAGE}, headers=auth
                ),
                await http.post(
                    f"{path}/items",
                    json={"generationId": str(uuid.uuid4())},
                    headers=auth,
                ),
            ]
            listed = await http.get("/api/projects", headers=auth)

        for response in responses:
            assert_error(response, 404)
        assert project["id"] not in [p["id"] for p in listed.json()]

    async def test_member_sees_a_shared_project_but_not_an_unshared_one(
        self, gateway: ServedApp, people: People
    ) -> None:
        async with gateway.client() as http:
            shared = await _create(
                http,
                people.owner,
                workspaceId=people.workspace_id,
                sharedWithWorkspace=True,
            )
            private = await _create(http, people.owner, workspaceId=people.workspace_id)
            listed = await http.get(
                "/api/projects",
                params={"workspaceId": people.workspace_id},
                headers=people.member.auth,
            )
            private_assets = await http.get(
                f"/api/projects/{private['id']}/assets", headers=people.member.auth
            )

        ids = [p["id"] for p in listed.json()]
        assert shared["id"] in ids
        assert private["id"] not in ids
        assert_error(private_assets, 404)

    async def test_member_cannot_change_a_shared_project(
        self, gateway: ServedApp, people: People
    ) -> None:
        async with gateway.client() as http:
            shared = await _create(
                http,
                people.owner,
                workspaceId=people.workspace_id,
                sharedWithWorkspace=True,
            )
            path = f"/api/projects/{shared['id']}"
            renamed = await http.put(
                path, json={"name": "Mine"}, headers=people.member.auth
            )
            deleted = await http.delete(path, headers=people.member.auth)

        assert_error(renamed, 404)
        assert_error(deleted, 404)


class TestAssets:
    async def test_added_asset_is_listed_in_camel_case(
        self, gateway: ServedApp, people: People
    ) -> None:
        async with gateway.client() as http:
            project = await _create(http, people.owner)
            path = f"/api/projects/{project['id']}/assets"
            added = await http.post(
                path,
                json={"assetUrl": IMAGE, "name": "ref"},
                headers=people.owner.auth,
            )
            listed = await http.get(path, headers=people.owner.auth)

        assert added.status_code == 201, added.text
        [asset] = listed.json()
        assert (asset["id"], asset["assetUrl"], asset["name"]) == (
            added.json()["id"],
            IMAGE,
            "ref",
        )

    @pytest.mark.parametrize(
        "url", ["data:image/png;base64,AAAA", "javascript:alert(1)", "ftp://x/y"]
    )
    async def test_refuses_an_address_that_is_not_http(
        self, gateway: ServedApp, people: People, url: str
    ) -> None:
        async with gateway.client() as http:
            project = await _create(http, people.owner)
            response = await http.post(
                f"/api/projects/{project['id']}/assets",
                json={"assetUrl": url},
                headers=people.owner.auth,
            )

        body = assert_error(response, 400)
        assert "assetUrl" in str(body["details"])

    async def test_saving_the_same_generation_twice_keeps_one_asset(
        self, gateway: ServedApp, people: People, settings: Settings
    ) -> None:
        rows = GenerationRows(settings)
        generation = {"generationId": await rows.add(GenerationRow(people.owner.id))}
        await rows.close()
        async with gateway.client() as http:
            project = await _create(http, people.owner)
            path = f"/api/projects/{project['id']}"
            first = await http.post(
                f"{path}/items", json=generation, headers=people.owner.auth
            )
            again = await http.post(
                f"{path}/items", json=generation, headers=people.owner.auth
            )
            listed = await http.get(f"{path}/assets", headers=people.owner.auth)

        assert (first.status_code, again.status_code) == (201, 200)
        assert first.json()["id"] == again.json()["id"]
        assert len(listed.json()) == 1
