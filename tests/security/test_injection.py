"""SQL-looking and awkward text in every text field and query parameter of
the main routes: never a 5xx; text is stored and returned as sent (or,
where it holds characters a field does not take, refused with a 400); and
searches treat `%`, `_` and `\\` as the characters they are, not as LIKE
wildcards."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest

from libs.config import Settings
from services.chat.main import ChatProcess
from tests.gateway.factories import SignedInUser, assert_error, register
from tests.gateway.operators import Operators, SignedInOperator
from tests.security.routes import openapi_paths
from tests.services.generation.factories import GenerationRow, GenerationRows
from tests.suite import ServedApp

PAYLOADS = [
    "' OR 1=1 --",
    '"; DROP TABLE users; --',
    "100% _sure_",
    "%",
    "_",
    "back\\slash \\% \\_ \\\\",
    "$1 $$ :name %(x)s {0}",
    "日本語 ünïcödé 🎨 ﷽",
    "nul\x00byte",
    "bidi \u202e override",
]
IMAGE_MODEL = "fal-flux-schnell"
CHAT_MODEL = "openai/gpt-4o-mini"


def _printable(payload: str) -> bool:
    return payload.isprintable()


def assert_literal_or_refused(response: httpx.Response, payload: str) -> bool:
    """True when the text was accepted. Text a person types is always
    accepted; text with control characters may be refused, with a 400."""
    assert response.status_code < 500, response.text
    if response.status_code < 300:
        return True
    assert not _printable(payload), response.text
    assert_error(response, 400)
    return False


@pytest.fixture(scope="module")
async def http(
    gateway: ServedApp, chat_service: ChatProcess
) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway.client() as client:
        yield client


@pytest.fixture(scope="module")
async def user(http: httpx.AsyncClient) -> SignedInUser:
    return await register(http)


@pytest.fixture(scope="module")
async def rows(settings: Settings) -> AsyncIterator[GenerationRows]:
    found = GenerationRows(settings)
    yield found
    await found.close()


@pytest.fixture(scope="module")
async def operator(
    admin_gateway: ServedApp, http: httpx.AsyncClient, operators: Operators
) -> SignedInOperator:
    return await operators.of(http, "support")


ids = [repr(p)[:24] for p in PAYLOADS]


@pytest.mark.parametrize("payload", PAYLOADS, ids=ids)
class TestStoredLiterally:
    async def test_register_name(self, http: httpx.AsyncClient, payload: str) -> None:
        response = await http.post(
            "/api/auth/register",
            json={
                "email": f"inj-{uuid.uuid4().hex[:12]}@example.com",
                "password": "correct-horse-battery",
                "name": payload,
            },
        )

        if assert_literal_or_refused(response, payload):
            token = response.json()["accessToken"]
            me = await http.get(
                "/api/auth/me", headers={"Authorization": f"Bearer {token}"}
            )
            assert me.json()["name"] == payload

    async def test_profile_name_and_bio(
        self, http: httpx.AsyncClient, user: SignedInUser, payload: str
    ) -> None:
        response = await http.put(
            "/api/profile", json={"name": payload, "bio": payload}, headers=user.auth
        )

        if assert_literal_or_refused(response, payload):
            profile = (await http.get("/api/profile", headers=user.auth)).json()
            assert (profile["name"], profile["bio"]) == (payload, payload)

    async def test_profile_nickname_is_refused_or_kept(
        self, http: httpx.AsyncClient, user: SignedInUser, payload: str
    ) -> None:
        # Nicknames take only letters, digits, '_' and '-': a 400, never 5xx.
        response = await http.put(
            "/api/profile", json={"nickname": payload}, headers=user.auth
        )

        assert response.status_code in {200, 400, 409}, response.text

    async def test_workspace_name(
        self, http: httpx.AsyncClient, user: SignedInUser, payload: str
    ) -> None:
        response = await http.post(
            "/api/workspaces", json={"name": payload}, headers=user.auth
        )

        if assert_literal_or_refused(response, payload):
            path = f"/api/workspaces/{response.json()['id']}"
            assert (await http.get(path, headers=user.auth)).json()["name"] == payload
            await http.delete(path, headers=user.auth)

    async def test_project_name_and_description(
        self, http: httpx.AsyncClient, user: SignedInUser, payload: str
    ) -> None:
        response = await http.post(
            "/api/projects",
            json={"name": payload, "description": payload},
            headers=user.auth,
        )

        if assert_literal_or_refused(response, payload):
            listed = (await http.get("/api/projects", headers=user.auth)).json()
            [project] = [p for p in listed if p["id"] == response.json()["id"]]
            assert (project["name"], project["description"]) == (payload, payload)

    async def test_generation_prompt(
        self, http: httpx.AsyncClient, user: SignedInUser, payload: str
    ) -> None:
        response = await http.post(
            "/api/generate",
            json={"type": "image", "model": IMAGE_MODEL, "prompt": payload},
            headers=user.auth,
        )

        if assert_literal_or_refused(response, payload):
            [created] = response.json()["generations"]
            path = f"/api/generations/{created['id']}"
            await http.post(f"{path}/cancel", headers=user.auth)
            found = await http.get(path, headers=user.auth)
            assert found.json()["prompt"] == payload

    async def test_chat_title_and_message(
        self, http: httpx.AsyncClient, user: SignedInUser, payload: str
    ) -> None:
        created = await http.post(
            "/api/chat/conversations",
            json={"modelId": CHAT_MODEL, "title": payload},
            headers=user.auth,
        )
        if not assert_literal_or_refused(created, payload):
            return
        conversation = created.json()
        assert conversation["title"] == payload
        path = f"/api/chat/conversations/{conversation['id']}"

        sent = await http.post(
            f"{path}/messages",
            json={"content": payload},
            headers={**user.auth, "Accept": "application/json"},
        )

        if assert_literal_or_refused(sent, payload):
            assert sent.json()["userMessage"]["content"] == payload
            messages = (await http.get(path, headers=user.auth)).json()["messages"]
            assert messages[0]["content"] == payload


@pytest.fixture(scope="module")
async def searched(
    http: httpx.AsyncClient, rows: GenerationRows, operator: SignedInOperator
) -> Searched:
    """One conversation, community post and account per payload, each
    named `marker + payload`, for the searches below."""
    found = Searched(await register(http), f"mk{uuid.uuid4().hex[:10]}")
    for payload in filter(_printable, PAYLOADS):
        text = found.marker + payload
        created = await http.post(
            "/api/chat/conversations",
            json={"modelId": CHAT_MODEL, "title": text},
            headers=found.owner.auth,
        )
        found.conversations[created.json()["id"]] = text
        generation_id = await rows.add(GenerationRow(found.owner.id, prompt=text))
        published = await http.post(
            "/api/community/publish",
            json={"generationId": generation_id},
            headers=found.owner.auth,
        )
        found.posts[published.json()["id"]] = text
        found.accounts[(await register(http, name=text)).id] = text
    return found


@dataclass
class Searched:
    owner: SignedInUser
    marker: str
    conversations: dict[str, str] = field(default_factory=dict)
    posts: dict[str, str] = field(default_factory=dict)
    accounts: dict[str, str] = field(default_factory=dict)

    def holding(self, made: dict[str, str], search: str) -> set[str]:
        """What a literal, case-insensitive substring search must find."""
        return {key for key, text in made.items() if search.lower() in text.lower()}


@pytest.mark.parametrize("payload", PAYLOADS, ids=ids)
class TestSearchesAreLiteral:
    """A search may refuse text it cannot hold (NUL) with a 400."""

    async def test_chat_conversations(
        self, http: httpx.AsyncClient, searched: Searched, payload: str
    ) -> None:
        search = searched.marker + payload

        found = await http.get(
            "/api/chat/conversations",
            params={"search": search, "limit": 100},
            headers=searched.owner.auth,
        )

        if assert_literal_or_refused(found, payload):
            found_ids = {c["id"] for c in found.json()}
            assert found_ids == searched.holding(searched.conversations, search)

    async def test_community_feed(
        self, http: httpx.AsyncClient, searched: Searched, payload: str
    ) -> None:
        search = searched.marker + payload

        found = await http.get("/api/community", params={"search": search})

        if assert_literal_or_refused(found, payload):
            found_ids = {p["id"] for p in found.json()["posts"]}
            assert found_ids == searched.holding(searched.posts, search)

    async def test_admin_user_search(
        self,
        http: httpx.AsyncClient,
        operator: SignedInOperator,
        searched: Searched,
        payload: str,
    ) -> None:
        search = searched.marker + payload

        found = await http.get(
            "/api/admin/users",
            params={"search": search, "limit": 100},
            headers=operator.auth,
        )

        if assert_literal_or_refused(found, payload):
            found_ids = {u["id"] for u in found.json()}
            assert found_ids == searched.holding(searched.accounts, search)


def _query_routes() -> dict[str, list[str]]:
    """Every GET route without path parameters, and its query parameters."""
    paths = openapi_paths()
    found = {
        path: [
            parameter["name"]
            for parameter in operations["get"].get("parameters", [])
            if parameter["in"] == "query"
        ]
        for path, operations in paths.items()
        if "{" not in path and "get" in operations
    }
    return {path: names for path, names in sorted(found.items()) if names}


QUERY_ROUTES = _query_routes()


@pytest.mark.parametrize("path", QUERY_ROUTES)
async def test_every_query_parameter_takes_any_text_without_a_5xx(
    http: httpx.AsyncClient,
    user: SignedInUser,
    operator: SignedInOperator,
    path: str,
) -> None:
    headers = operator.auth if path.startswith("/api/admin/") else user.auth

    statuses = {
        payload: (
            await http.get(
                path,
                params=dict.fromkeys(QUERY_ROUTES[path], payload),
                headers=headers,
            )
        ).status_code
        for payload in PAYLOADS
    }

    assert all(status < 500 for status in statuses.values()), statuses


async def test_an_operators_search_with_a_nul_byte_says_why_it_is_refused(
    http: httpx.AsyncClient, operator: SignedInOperator
) -> None:
    response = await http.get(
        "/api/admin/users", params={"search": "ann\x00"}, headers=operator.auth
    )

    body = assert_error(response, 400)
    assert "NUL" in body["message"]
