"""Broken object-level authorization: every route that names an object is
tried by a second, unrelated user against the first user's object, and must
answer 403 or 404 and leave the object as it was.

Completeness is by construction: the last test lists every route of the
gateway with a path parameter and fails on one that is neither attacked
here, nor public by design (PUBLIC_BY_DESIGN, each with its reason), nor an
operator route (tests/security/test_tokens.py sends a user's token to every
one of those)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from libs.config import Settings
from services.chat.main import ChatProcess
from services.generation.main import GenerationProcess
from tests.gateway.factories import SignedInUser, assert_error, register
from tests.security.routes import openapi_paths
from tests.services.generation.factories import GenerationRow, GenerationRows
from tests.suite import ServedApp

# Routes whose path parameter is itself the secret or names public things.
PUBLIC_BY_DESIGN = {
    # The model catalog and its prices are shown to everyone.
    ("GET", "/api/models/{model_id}"): "the catalog is public",
    ("POST", "/api/models/{model_id}/price"): "prices are public",
    # An invite link's token is the capability: whoever holds it may see
    # the invite and join (an e-mail-bound invite checks the account).
    ("GET", "/api/workspaces/invite/{token}"): "the token is the secret",
    ("POST", "/api/workspaces/join/{token}"): "the token is the secret",
    # Published posts are the public community feed; anyone signed in may
    # like one.
    ("GET", "/api/community/{post_id}"): "published posts are public",
    ("POST", "/api/community/{post_id}/like"): "liking is open to everyone",
    # A share link's token (or the id of a generation its owner made
    # public) is what the owner hands out.
    ("GET", "/api/share/{share_id}"): "the share token is the secret",
    # Media keys are random UUID paths handed out with the generation.
    ("GET", "/media/{key}"): "unguessable keys, served to browsers",
}
OPERATOR_PREFIX = "/api/admin/"


@dataclass(frozen=True)
class World:
    owner: SignedInUser
    intruder: SignedInUser
    ids: dict[str, str]

    def path(self, template: str) -> str:
        return template.format(**self.ids)


@dataclass(frozen=True)
class Attack:
    """One intruder request and, to prove it changed nothing, a GET by the
    owner whose answer must still name the object."""

    method: str
    template: str
    body: dict[str, Any] | None
    witness: str
    keeps: str


def attack(
    method: str,
    template: str,
    witness: str,
    keeps: str,
    body: dict[str, Any] | None = None,
) -> Attack:
    return Attack(method, template, body, witness, keeps)


GENERATION = "/api/generations/{generation_id}"
UPSCALE = "/api/generations/{upscale_id}"
CONVERSATION = "/api/chat/conversations/{conversation_id}"
WORKSPACE = "/api/workspaces/{workspace_id}"
MEMBERS = WORKSPACE + "/members"
INVITES = WORKSPACE + "/invites"
PROJECT_ASSETS = "/api/projects/{project_id}/assets"
POST = "/api/community/{post_id}"
SESSIONS = "/api/auth/sessions"

ATTACKS = [
    attack("GET", GENERATION, GENERATION, "generation_id"),
    attack("DELETE", GENERATION, GENERATION, "generation_id"),
    attack("POST", GENERATION + "/cancel", GENERATION, "generation_id"),
    attack(
        "PATCH",
        GENERATION + "/share",
        GENERATION,
        "not_shared",
        {"sharedWithWorkspace": True},
    ),
    attack("GET", GENERATION + "/events", GENERATION, "generation_id"),
    attack("GET", UPSCALE, UPSCALE, "upscale_id"),
    attack("DELETE", UPSCALE, UPSCALE, "upscale_id"),
    attack(
        "POST",
        "/api/generations/bulk-delete",
        GENERATION,
        "generation_id",
        {"ids": ["{generation_id}"]},
    ),
    attack(
        "POST",
        "/api/upscale",
        GENERATION,
        "generation_id",
        {"generationId": "{generation_id}"},
    ),
    attack(
        "POST",
        "/api/upscale/calculate",
        GENERATION,
        "generation_id",
        {"generationId": "{generation_id}"},
    ),
    attack(
        "POST",
        "/api/community/publish",
        GENERATION,
        "generation_id",
        {"generationId": "{generation_id}"},
    ),
    attack(
        "POST",
        "/api/share",
        GENERATION,
        "generation_id",
        {"generationId": "{generation_id}"},
    ),
    attack("GET", CONVERSATION, CONVERSATION, "conversation_id"),
    attack(
        "PATCH", CONVERSATION, CONVERSATION, "conversation_title", {"title": "Mine"}
    ),
    attack("DELETE", CONVERSATION, CONVERSATION, "conversation_id"),
    attack(
        "PATCH",
        CONVERSATION + "/share",
        CONVERSATION,
        "not_shared",
        {"sharedWithWorkspace": True},
    ),
    attack(
        "POST",
        CONVERSATION + "/messages",
        CONVERSATION,
        "conversation_id",
        {"content": "read me your history"},
    ),
    attack("GET", WORKSPACE, WORKSPACE, "workspace_name"),
    attack("PATCH", WORKSPACE, WORKSPACE, "workspace_name", {"name": "Taken"}),
    attack("DELETE", WORKSPACE, WORKSPACE, "workspace_name"),
    attack(
        "POST",
        WORKSPACE + "/transfer-ownership",
        MEMBERS,
        "owner_id",
        {"userId": "{intruder_id}"},
    ),
    attack("GET", MEMBERS, MEMBERS, "user_id"),
    attack("PATCH", MEMBERS + "/{user_id}", MEMBERS, "user_id", {"role": "admin"}),
    attack("DELETE", MEMBERS + "/{user_id}", MEMBERS, "user_id"),
    attack("POST", WORKSPACE + "/leave", MEMBERS, "user_id"),
    attack("POST", WORKSPACE + "/invite", INVITES, "invite_id", {}),
    attack("GET", INVITES, INVITES, "invite_id"),
    attack("DELETE", INVITES + "/{invite_id}", INVITES, "invite_id"),
    attack("POST", WORKSPACE + "/credits/add", MEMBERS, "user_id", {"amount": 1}),
    attack(
        "POST",
        WORKSPACE + "/credits/allocate",
        MEMBERS,
        "user_id",
        {"userId": "{intruder_id}", "amount": 1},
    ),
    attack("GET", WORKSPACE + "/credits/usage", MEMBERS, "user_id"),
    attack("GET", WORKSPACE + "/gallery", MEMBERS, "user_id"),
    attack(
        "PUT",
        "/api/projects/{project_id}",
        PROJECT_ASSETS,
        "asset_id",
        {"name": "Taken"},
    ),
    attack("DELETE", "/api/projects/{project_id}", PROJECT_ASSETS, "asset_id"),
    attack("GET", PROJECT_ASSETS, PROJECT_ASSETS, "asset_id"),
    attack(
        "POST",
        PROJECT_ASSETS,
        PROJECT_ASSETS,
        "asset_id",
        {"assetUrl": "https://cdn.example.com/planted.png"},
    ),
    attack(
        "POST",
        "/api/projects/{project_id}/items",
        PROJECT_ASSETS,
        "asset_id",
        {"generationId": "{intruder_generation_id}"},
    ),
    # The intruder's own project, filed with the owner's generation.
    attack(
        "POST",
        "/api/projects/{intruder_project_id}/items",
        GENERATION,
        "generation_id",
        {"generationId": "{generation_id}"},
    ),
    attack("DELETE", POST, POST, "post_id"),
    attack(
        "DELETE", "/api/share/{token}", "/api/share/{token}", "shared_generation_id"
    ),
    attack("DELETE", SESSIONS + "/{session_id}", SESSIONS, "session_id"),
]


def _filled(value: object, ids: dict[str, str]) -> object:
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, list):
        return [_filled(item, ids) for item in value]
    if isinstance(value, dict):
        return {key: _filled(item, ids) for key, item in value.items()}
    return value


async def _created(
    http: httpx.AsyncClient, user: SignedInUser, path: str, body: dict[str, Any]
) -> dict[str, Any]:
    response = await http.post(path, json=body, headers=user.auth)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def _team_workspace(
    http: httpx.AsyncClient, owner: SignedInUser, member: SignedInUser
) -> dict[str, str]:
    name = f"Vault {uuid.uuid4().hex[:8]}"
    workspace = await _created(http, owner, "/api/workspaces", {"name": name})
    base = f"/api/workspaces/{workspace['id']}"
    joining = await _created(http, owner, f"{base}/invite", {"email": member.email})
    joined = await http.post(
        f"/api/workspaces/join/{joining['token']}", headers=member.auth
    )
    assert joined.status_code == 201, joined.text
    pending = await _created(http, owner, f"{base}/invite", {})
    return {
        "workspace_id": workspace["id"],
        "workspace_name": name,
        "invite_id": pending["invite"]["id"],
    }


async def _project(
    http: httpx.AsyncClient, user: SignedInUser, workspace_id: str
) -> dict[str, str]:
    project = await _created(
        http, user, "/api/projects", {"name": "Refs", "workspaceId": workspace_id}
    )
    asset = await _created(
        http,
        user,
        f"/api/projects/{project['id']}/assets",
        {"assetUrl": "https://cdn.example.com/ref.png"},
    )
    return {"project_id": project["id"], "asset_id": asset["id"]}


async def _generations(rows: GenerationRows, user_id: str) -> dict[str, str]:
    generation_id = await rows.add(GenerationRow(user_id))
    upscale_id = await rows.add(
        GenerationRow(
            user_id,
            type="upscale",
            model_id="fal-crystal-upscaler",
            source_generation_id=generation_id,
        )
    )
    return {"generation_id": generation_id, "upscale_id": upscale_id}


async def _community(
    http: httpx.AsyncClient, owner: SignedInUser, rows: GenerationRows
) -> dict[str, str]:
    published = await rows.add(GenerationRow(owner.id))
    post = await _created(
        http, owner, "/api/community/publish", {"generationId": published}
    )
    shared = await rows.add(GenerationRow(owner.id))
    share = await _created(http, owner, "/api/share", {"generationId": shared})
    return {
        "post_id": post["id"],
        "token": share["shareToken"],
        "shared_generation_id": shared,
    }


async def _owner_ids(
    http: httpx.AsyncClient,
    owner: SignedInUser,
    intruder: SignedInUser,
    rows: GenerationRows,
) -> dict[str, str]:
    member = await register(http, name="Member")
    ids = await _team_workspace(http, owner, member)
    ids |= await _project(http, owner, ids["workspace_id"])
    ids |= await _generations(rows, owner.id)
    ids |= await _community(http, owner, rows)
    title = f"Private plans {uuid.uuid4().hex[:8]}"
    conversation = await _created(
        http, owner, "/api/chat/conversations", {"title": title}
    )
    sessions = await http.get(SESSIONS, headers=owner.auth)
    [session] = sessions.json()
    intruder_project = await _created(http, intruder, "/api/projects", {"name": "X"})
    return ids | {
        "user_id": member.id,
        "owner_id": owner.id,
        "intruder_id": intruder.id,
        "conversation_id": conversation["id"],
        "conversation_title": title,
        "session_id": session["id"],
        "intruder_project_id": intruder_project["id"],
        "intruder_generation_id": await rows.add(GenerationRow(intruder.id)),
        "not_shared": '"sharedWithWorkspace":false',
    }


@pytest.fixture(scope="module")
async def http(
    gateway: ServedApp, chat_service: ChatProcess
) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway.client() as client:
        yield client


@pytest.fixture(scope="module")
async def world(
    http: httpx.AsyncClient, settings: Settings, generation_service: GenerationProcess
) -> AsyncIterator[World]:
    rows = GenerationRows(settings)
    owner = await register(http, name="Owner")
    intruder = await register(http, name="Intruder")
    ids = await _owner_ids(http, owner, intruder, rows)
    yield World(owner, intruder, ids)
    await rows.close()


@pytest.mark.parametrize(
    "case", ATTACKS, ids=[f"{a.method} {a.template}" for a in ATTACKS]
)
async def test_another_users_object_is_refused_and_kept(
    http: httpx.AsyncClient, world: World, case: Attack
) -> None:
    body = _filled(case.body, world.ids) if case.body is not None else None

    # JSON errors also from the routes that stream (their default answer
    # is an event stream, whose refusal has the same status).
    headers = {**world.intruder.auth, "Accept": "application/json"}
    response = await http.request(
        case.method, world.path(case.template), json=body, headers=headers
    )

    assert response.status_code in {403, 404}, response.text
    assert_error(response, response.status_code)
    witness = await http.get(world.path(case.witness), headers=world.owner.auth)
    assert witness.status_code == 200, witness.text
    assert world.ids[case.keeps] in witness.text


def _object_routes() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, operations in openapi_paths().items()
        if "{" in path
        for method in operations
    }


def test_every_route_with_a_path_parameter_is_attacked_or_public() -> None:
    attacked = {(a.method, a.template) for a in ATTACKS}
    unexplained = {
        (method, path)
        for method, path in _object_routes()
        if not path.startswith(OPERATOR_PREFIX)
        and (method, path) not in attacked
        and (method, path) not in PUBLIC_BY_DESIGN
    }

    assert not unexplained, sorted(unexplained)
