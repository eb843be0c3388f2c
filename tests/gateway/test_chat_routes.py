"""gateway/routers/chat.py over real HTTP: /api/chat in front of the real
chat, catalog, billing, workspace and auth services, PostgreSQL, and the
local LLM (deploy/simulators/openrouter.py) standing in for OpenRouter.

Replies are read the way the web client reads them: the response body as a
stream of `data: {json}` events (chat-workspaces-billing.md §3.10). Users
are real sign-ups with their real sign-up credits. Faults are set in the
LLM simulator for one test's messages only (a marker text in them).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from omnihub.workspace.v1 import workspace_pb2

from gateway.routers import chat as chat_routes
from libs.config import Settings
from services.chat.main import ChatProcess
from tests.fixtures.chat import LocalLLM
from tests.gateway.factories import SignedInUser, assert_error, register
from tests.services.chat.factories import (
    MODEL,
    TEXT_ONLY_MODEL,
    ChatApi,
)
from tests.suite import ServedApp

SIGNUP_CREDITS = 10
SETTLE_DEADLINE_SECONDS = 5.0
CONVERSATION_FIELDS = {"id", "title", "modelId", "createdAt", "updatedAt"}
MESSAGE_FIELDS = {"id", "role", "content", "imageUrls", "credits", "createdAt"}
DONE_FIELDS = {"messageId", "inputTokens", "outputTokens", "credits", "userCredits"}
# A 1x1 transparent PNG.
PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR4"
    "nGNgYAAAAAMAASsJTYQAAAAASUVORK5CYII="
)


@pytest.fixture
async def http(
    gateway: ServedApp, chat_service: ChatProcess
) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway.client() as client:
        yield client


@pytest.fixture(scope="module")
async def api(settings: Settings, chat_service: ChatProcess) -> AsyncIterator[ChatApi]:
    client = ChatApi(settings)
    yield client
    await client.close()


@dataclass
class Streamed:
    """A reply read as the web client reads it."""

    status: int
    headers: httpx.Headers
    events: list[dict[str, Any]]
    raw: bytes

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["type"] == kind]

    @property
    def text(self) -> str:
        return "".join(event["content"] for event in self.of_type("content"))

    @property
    def last(self) -> dict[str, Any]:
        return self.events[-1]


def parse_events(raw: bytes) -> list[dict[str, Any]]:
    """Every block must be one whole `data:` line (or a keep-alive comment)."""
    events = []
    for block in raw.decode().split("\n\n"):
        if not block or block.startswith(":"):
            continue
        assert block.startswith("data: "), block
        assert "\n" not in block, block
        events.append(json.loads(block.removeprefix("data: ")))
    return events


async def send(
    http: httpx.AsyncClient,
    user: SignedInUser,
    conversation_id: str,
    content: str,
    **body: object,
) -> Streamed:
    """Post a message and read the whole stream, checking that every network
    chunk ends where an event ends (each event is flushed whole)."""
    raw = b""
    async with http.stream(
        "POST",
        f"/api/chat/conversations/{conversation_id}/messages",
        json={"content": content, **body},
        headers=user.auth,
    ) as response:
        async for chunk in response.aiter_raw():
            assert chunk.endswith(b"\n\n"), chunk
            raw += chunk
    return Streamed(response.status_code, response.headers, parse_events(raw), raw)


async def new_conversation(
    http: httpx.AsyncClient, user: SignedInUser, **body: object
) -> dict[str, Any]:
    response = await http.post(
        "/api/chat/conversations", json={"modelId": MODEL, **body}, headers=user.auth
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def balance(http: httpx.AsyncClient, user: SignedInUser) -> dict[str, Any]:
    response = await http.get("/api/credits/balance", headers=user.auth)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def messages(
    http: httpx.AsyncClient, user: SignedInUser, conversation_id: str
) -> list[dict[str, Any]]:
    response = await http.get(
        f"/api/chat/conversations/{conversation_id}", headers=user.auth
    )
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["messages"]
    return found


async def settled_reply(
    http: httpx.AsyncClient, user: SignedInUser, conversation_id: str
) -> dict[str, Any]:
    """The stored reply of a stream the client left, once it is settled."""
    started = time.monotonic()
    while time.monotonic() - started < SETTLE_DEADLINE_SECONDS:
        found = await messages(http, user, conversation_id)
        replies = [m for m in found if m["role"] == "assistant"]
        if replies and (await balance(http, user))["held"] == 0:
            return replies[-1]
        await asyncio.sleep(0.05)
    raise AssertionError("the reply was not settled in time")


class TestStreaming:
    async def test_reply_arrives_as_content_events_then_done(
        self, http: httpx.AsyncClient
    ) -> None:
        user = await register(http)
        conversation = await new_conversation(http, user)

        streamed = await send(http, user, conversation["id"], "Hi there [tokens=40]")

        assert streamed.status == 200
        assert streamed.headers["content-type"].startswith("text/event-stream")
        assert streamed.headers["cache-control"] == "no-cache, no-transform"
        assert streamed.headers["x-accel-buffering"] == "no"
        kinds = [event["type"] for event in streamed.events]
        assert kinds[0] == "start"
        # Pieces that were waiting together may go out as one event.
        assert set(kinds[1:-1]) == {"content"}
        assert len(kinds[1:-1]) > 1
        assert kinds[-1] == "done"
        assert len(streamed.text.split()) == 40
        assert streamed.last.keys() >= DONE_FIELDS
        assert streamed.last["outputTokens"] == 40
        stored = await messages(http, user, conversation["id"])
        assert [m["role"] for m in stored] == ["user", "assistant"]
        assert stored[1]["id"] == streamed.last["messageId"]
        assert stored[1]["content"] == streamed.text
        assert stored[1].keys() >= MESSAGE_FIELDS

    async def test_balance_drops_by_exactly_the_captured_cost(
        self, http: httpx.AsyncClient, api: ChatApi
    ) -> None:
        user = await register(http)
        conversation = await new_conversation(http, user)
        before = await balance(http, user)

        streamed = await send(http, user, conversation["id"], "Count [tokens=120]")

        done = streamed.last
        after = await balance(http, user)
        assert before["credits"] == SIGNUP_CREDITS
        assert done["credits"] > 0
        assert after["credits"] == pytest.approx(SIGNUP_CREDITS - done["credits"])
        assert done["userCredits"] == after["credits"]
        assert after["held"] == 0
        # The simulator reports a cost of 1 micro-USD per prompt token and 2
        # per reply token; the catalog prices exactly that.
        reported = done["inputTokens"] + 2 * done["outputTokens"]
        price = await api.price(done["inputTokens"], done["outputTokens"], reported)
        assert round(done["credits"] * 1_000_000) == price

    async def test_json_client_gets_the_whole_reply_at_once(
        self, http: httpx.AsyncClient
    ) -> None:
        user = await register(http)
        conversation = await new_conversation(http, user)

        response = await http.post(
            f"/api/chat/conversations/{conversation['id']}/messages",
            json={"content": "Hello [tokens=12]"},
            headers={**user.auth, "Accept": "application/json"},
        )

        assert response.status_code == 201, response.text
        body = response.json()
        assert body["userMessage"]["content"] == "Hello [tokens=12]"
        assert body["assistantMessage"]["outputTokens"] == 12
        assert body["assistantMessage"]["content"].startswith("[simulated]")
        assert body["userCredits"] == SIGNUP_CREDITS - body["credits"]

    async def test_concurrent_messages_in_one_conversation_keep_their_order(
        self, http: httpx.AsyncClient
    ) -> None:
        user = await register(http)
        conversation = await new_conversation(http, user)
        texts = [f"message {n} [tokens=30]" for n in range(4)]

        results = await asyncio.gather(
            *(send(http, user, conversation["id"], text) for text in texts)
        )

        stored = await messages(http, user, conversation["id"])
        assert len(stored) == 8
        assert [m["role"] for m in stored] == ["user", "assistant"] * 4
        for streamed in results:
            start, done = streamed.events[0], streamed.last
            position = next(
                i for i, m in enumerate(stored) if m["id"] == start["userMessageId"]
            )
            # Each reply directly follows its own message and answers it.
            assert stored[position + 1]["id"] == done["messageId"]
            said = stored[position]["content"].removesuffix(" [tokens=30]")
            assert f"You said: {said}." in stored[position + 1]["content"]

    async def test_first_exchange_titles_the_conversation(
        self, http: httpx.AsyncClient
    ) -> None:
        user = await register(http)
        conversation = await new_conversation(http, user)
        assert conversation["title"] == "New Chat"

        streamed = await send(http, user, conversation["id"], "Plan a trip to Oslo")

        listed = await http.get("/api/chat/conversations", headers=user.auth)
        title = listed.json()[0]["title"]
        assert title != "New Chat"
        assert streamed.last["title"] == title

    async def test_a_silent_model_gets_keep_alive_comments(
        self,
        http: httpx.AsyncClient,
        llm_simulator: LocalLLM,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        # Proxies drop connections silent for 30 s; the gateway speaks up
        # after KEEPALIVE_SECONDS (15 s, shortened here) without an event.
        monkeypatch.setattr(chat_routes, "KEEPALIVE_SECONDS", 0.05)
        user = await register(http)
        conversation = await new_conversation(http, user, title="Quiet")
        marker = llm_simulator.marker()
        await llm_simulator.fault("slow", marker, delay=0.3)

        streamed = await send(http, user, conversation["id"], f"{marker} [tokens=3]")

        assert streamed.raw.count(b": keep-alive\n\n") >= 3
        assert [e["type"] for e in streamed.events] == (
            ["start"] + ["content"] * 3 + ["done"]
        ), "0.3 s apart, no two pieces are sent together"


class TestDisconnect:
    async def test_leaving_mid_stream_stores_the_part_and_charges_only_it(
        self, http: httpx.AsyncClient, api: ChatApi, llm_simulator: LocalLLM
    ) -> None:
        user = await register(http)
        conversation = await new_conversation(http, user)
        marker = llm_simulator.marker()
        await llm_simulator.fault("slow", marker, delay=0.05)
        seen = 0

        async with http.stream(
            "POST",
            f"/api/chat/conversations/{conversation['id']}/messages",
            json={"content": f"{marker} [tokens=200]"},
            headers=user.auth,
        ) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: ") and '"content"' in line:
                    seen += 1
                    if seen == 3:
                        break

        reply = await settled_reply(http, user, conversation["id"])
        assert reply["status"] == "cut_off"
        assert 3 <= reply["outputTokens"] < 20
        assert len(reply["content"].split()) == reply["outputTokens"]
        # Charged from the tokens written (no usage came), by the catalog.
        price = await api.price(reply["inputTokens"], reply["outputTokens"])
        assert round(reply["credits"] * 1_000_000) == price
        after = await balance(http, user)
        assert after["credits"] == pytest.approx(SIGNUP_CREDITS - reply["credits"])
        requests = await llm_simulator.requests(marker)
        stream = next(r for r in requests if r["stream"])
        assert stream["disconnected"] is True
        assert stream["completed"] is False


class TestUpstreamFaults:
    async def test_error_mid_stream_releases_the_hold_and_keeps_the_message(
        self, http: httpx.AsyncClient, llm_simulator: LocalLLM
    ) -> None:
        user = await register(http)
        conversation = await new_conversation(http, user)
        marker = llm_simulator.marker()
        await llm_simulator.fault("mid_stream_error", marker)

        streamed = await send(http, user, conversation["id"], marker)

        kinds = [e["type"] for e in streamed.events]
        assert kinds[0] == "start"
        assert set(kinds[1:-1]) == {"content"}
        assert len(streamed.text.split()) == 3
        error = streamed.last
        assert error["error"]
        assert error["statusCode"] == 503
        assert error["code"] == "unavailable"
        assert await balance(http, user) == {"credits": SIGNUP_CREDITS, "held": 0}
        stored = await messages(http, user, conversation["id"])
        assert [(m["role"], m["content"]) for m in stored] == [("user", marker)]

    async def test_a_split_sse_line_loses_nothing(
        self, http: httpx.AsyncClient, llm_simulator: LocalLLM
    ) -> None:
        user = await register(http)
        marker = llm_simulator.marker()
        content = f"{marker} naïve café [tokens=25]"
        # Titled already, so no title request takes the one split reply.
        plain = await new_conversation(http, user, title="Plain")
        split = await new_conversation(http, user, title="Split")
        await llm_simulator.fault("split_lines", marker, times=1)

        broken = await send(http, user, split["id"], content)
        whole = await send(http, user, plain["id"], content)

        assert broken.last["type"] == "done"
        assert broken.text == whole.text
        assert "naïve café" in broken.text
        assert broken.last["outputTokens"] == whole.last["outputTokens"] == 25
        faults = [r["fault"] for r in await llm_simulator.requests(marker)]
        assert faults == ["split_lines", "ok"]

    @pytest.mark.parametrize(
        ("mode", "code", "status"),
        [
            ("rate_limit", "rate_limited", 429),
            ("error_500", "unavailable", 503),
            ("garbage", "unavailable", 503),
        ],
    )
    async def test_provider_failure_is_an_error_event_and_costs_nothing(
        self,
        http: httpx.AsyncClient,
        llm_simulator: LocalLLM,
        mode: str,
        code: str,
        status: int,
    ) -> None:
        user = await register(http)
        conversation = await new_conversation(http, user)
        marker = llm_simulator.marker()
        await llm_simulator.fault(mode, marker)

        streamed = await send(http, user, conversation["id"], marker)

        assert streamed.status == 200
        assert streamed.last["type"] == "error"
        assert streamed.last["code"] == code
        assert streamed.last["statusCode"] == status
        assert streamed.last["error"]
        assert await balance(http, user) == {"credits": SIGNUP_CREDITS, "held": 0}
        stored = await messages(http, user, conversation["id"])
        assert [m["role"] for m in stored] == ["user"]

    async def test_json_client_gets_the_provider_failure_as_a_status(
        self, http: httpx.AsyncClient, llm_simulator: LocalLLM
    ) -> None:
        user = await register(http)
        conversation = await new_conversation(http, user)
        marker = llm_simulator.marker()
        await llm_simulator.fault("rate_limit", marker)

        response = await http.post(
            f"/api/chat/conversations/{conversation['id']}/messages",
            json={"content": marker},
            headers={**user.auth, "Accept": "application/json"},
        )

        assert_error(response, 429, "rate_limited")
        assert response.headers["retry-after"] == "1"


class TestRefusals:
    async def test_empty_message_is_refused_before_anything_is_stored(
        self, http: httpx.AsyncClient
    ) -> None:
        user = await register(http)
        conversation = await new_conversation(http, user)

        streamed = await send(http, user, conversation["id"], "   ")

        # The web client reads any answer as a stream: one error event.
        assert streamed.status == 400
        assert streamed.headers["content-type"].startswith("text/event-stream")
        assert [e["type"] for e in streamed.events] == ["error"]
        assert streamed.last["statusCode"] == 400
        assert streamed.last["details"][0]["field"] == "content"
        assert await messages(http, user, conversation["id"]) == []

    async def test_oversized_message_is_refused(self, http: httpx.AsyncClient) -> None:
        user = await register(http)
        conversation = await new_conversation(http, user)

        response = await http.post(
            f"/api/chat/conversations/{conversation['id']}/messages",
            json={"content": "x" * 32_001},
            headers=user.auth,
        )

        assert_error(response, 400)

    async def test_unknown_model_is_refused(self, http: httpx.AsyncClient) -> None:
        user = await register(http)

        response = await http.post(
            "/api/chat/conversations",
            json={"modelId": "nobody/no-such-model"},
            headers=user.auth,
        )

        body = assert_error(response, 400, "invalid_argument")
        assert body["details"][0]["field"] == "modelId"

    async def test_too_few_credits_is_402_with_the_amounts(
        self, http: httpx.AsyncClient, api: ChatApi
    ) -> None:
        user = await register(http)
        conversation = await new_conversation(http, user)
        await api.leave_only(user.id, 3)

        json_answer = await http.post(
            f"/api/chat/conversations/{conversation['id']}/messages",
            json={"content": "Hello"},
            headers={**user.auth, "Accept": "application/json"},
        )
        streamed = await send(http, user, conversation["id"], "Hello")

        body = assert_error(json_answer, 402, "insufficient_credits")
        assert body["available"] == 0.000003
        assert body["required"] > body["available"]
        assert streamed.status == 402
        assert streamed.last["required"] == body["required"]
        assert streamed.last["available"] == body["available"]
        assert await messages(http, user, conversation["id"]) == []

    async def test_images_for_a_model_that_cannot_read_them_are_refused(
        self, http: httpx.AsyncClient
    ) -> None:
        user = await register(http)
        conversation = await new_conversation(http, user, modelId=TEXT_ONLY_MODEL)

        response = await http.post(
            f"/api/chat/conversations/{conversation['id']}/messages",
            json={"content": "What is this?", "imageUrls": [PIXEL]},
            headers={**user.auth, "Accept": "application/json"},
        )

        body = assert_error(response, 400)
        assert body["details"][0]["field"] == "imageUrls"

    async def test_an_image_that_is_not_base64_is_refused(
        self, http: httpx.AsyncClient
    ) -> None:
        user = await register(http)
        conversation = await new_conversation(http, user)

        response = await http.post(
            f"/api/chat/conversations/{conversation['id']}/messages",
            json={"content": "Look", "imageUrls": ["data:image/png;base64,@@@"]},
            headers={**user.auth, "Accept": "application/json"},
        )

        body = assert_error(response, 400)
        assert body["details"][0]["field"] == "imageUrls.0"


class TestModelFeatures:
    async def test_a_vision_model_reads_the_images_sent(
        self, http: httpx.AsyncClient
    ) -> None:
        user = await register(http)
        conversation = await new_conversation(http, user)

        streamed = await send(
            http, user, conversation["id"], "What is this?", imageUrls=[PIXEL]
        )

        assert "I saw 1 image." in streamed.text
        stored = await messages(http, user, conversation["id"])
        assert stored[0]["imageUrls"] == [PIXEL]

    async def test_web_search_uses_the_online_variant(
        self, http: httpx.AsyncClient, llm_simulator: LocalLLM
    ) -> None:
        user = await register(http)
        conversation = await new_conversation(http, user)
        marker = llm_simulator.marker()

        streamed = await send(http, user, conversation["id"], marker, webSearch=True)

        assert "I searched the web" in streamed.text
        models = [r["model"] for r in await llm_simulator.requests(marker)]
        assert f"{MODEL}:online" in models
        stored = await messages(http, user, conversation["id"])
        assert stored[1]["webSearchUsed"] is True

    async def test_the_system_prompt_and_history_are_sent(
        self, http: httpx.AsyncClient, llm_simulator: LocalLLM
    ) -> None:
        user = await register(http)
        conversation = await new_conversation(
            http, user, systemPrompt="Answer like a pirate."
        )
        marker = llm_simulator.marker()

        await send(http, user, conversation["id"], f"first {marker}")
        second = await send(http, user, conversation["id"], f"second {marker}")

        # system, first, its reply, second.
        assert "This conversation has 4 messages." in second.text


class TestConversations:
    async def test_list_is_newest_first_with_the_fields_the_client_reads(
        self, http: httpx.AsyncClient
    ) -> None:
        user = await register(http)
        older = await new_conversation(http, user)
        newer = await new_conversation(http, user)

        response = await http.get("/api/chat/conversations", headers=user.auth)

        assert response.status_code == 200
        listed = response.json()
        assert [c["id"] for c in listed] == [newer["id"], older["id"]]
        assert listed[0].keys() >= CONVERSATION_FIELDS
        assert response.headers["cache-control"] == "no-store"

    async def test_list_pages_with_a_cursor(self, http: httpx.AsyncClient) -> None:
        user = await register(http)
        created = [(await new_conversation(http, user))["id"] for _ in range(3)]

        first = await http.get(
            "/api/chat/conversations", params={"limit": 2}, headers=user.auth
        )
        cursor = first.headers["x-next-cursor"]
        second = await http.get(
            "/api/chat/conversations",
            params={"limit": 2, "cursor": cursor},
            headers=user.auth,
        )

        ids = [c["id"] for c in first.json() + second.json()]
        assert ids == list(reversed(created))
        assert "x-next-cursor" not in second.headers

    async def test_search_finds_titles_and_message_text(
        self, http: httpx.AsyncClient
    ) -> None:
        user = await register(http)
        titled = await new_conversation(http, user, title="Budget for Lisbon")
        talked = await new_conversation(http, user)
        await new_conversation(http, user, title="Something else")
        await send(http, user, talked["id"], "What grows in a LISBON garden?")

        response = await http.get(
            "/api/chat/conversations", params={"search": "lisbon"}, headers=user.auth
        )

        assert {c["id"] for c in response.json()} == {titled["id"], talked["id"]}

    async def test_rename_change_model_and_delete(
        self, http: httpx.AsyncClient
    ) -> None:
        user = await register(http)
        conversation = await new_conversation(http, user)
        path = f"/api/chat/conversations/{conversation['id']}"

        renamed = await http.patch(
            path,
            json={"title": "Renamed", "modelId": TEXT_ONLY_MODEL},
            headers=user.auth,
        )
        deleted = await http.delete(path, headers=user.auth)
        gone = await http.get(path, headers=user.auth)

        assert renamed.status_code == 200
        assert renamed.json()["title"] == "Renamed"
        assert renamed.json()["modelId"] == TEXT_ONLY_MODEL
        assert deleted.json() == {"success": True}
        assert_error(gone, 404, "not_found")

    async def test_messages_page_backwards_with_before(
        self, http: httpx.AsyncClient
    ) -> None:
        user = await register(http)
        conversation = await new_conversation(http, user)
        for n in range(3):
            await send(http, user, conversation["id"], f"turn {n} [tokens=3]")
        path = f"/api/chat/conversations/{conversation['id']}"

        newest = await http.get(path, params={"limit": 4}, headers=user.auth)
        older = await http.get(
            path,
            params={"limit": 4, "before": newest.json()["messagesCursor"]},
            headers=user.auth,
        )

        assert [
            m["content"] for m in newest.json()["messages"] if m["role"] == "user"
        ] == [
            "turn 1 [tokens=3]",
            "turn 2 [tokens=3]",
        ]
        assert [m["role"] for m in older.json()["messages"]] == ["user", "assistant"]
        assert older.json()["messagesCursor"] is None


class TestOwnership:
    async def test_another_users_conversation_is_404_on_every_route(
        self, http: httpx.AsyncClient
    ) -> None:
        owner = await register(http)
        other = await register(http)
        conversation = await new_conversation(http, owner, title="Private plans")
        await send(http, owner, conversation["id"], "secret words [tokens=3]")
        path = f"/api/chat/conversations/{conversation['id']}"
        as_json = {**other.auth, "Accept": "application/json"}

        answers = [
            await http.get(path, headers=other.auth),
            await http.patch(path, json={"title": "Mine"}, headers=other.auth),
            await http.delete(path, headers=other.auth),
            await http.post(
                f"{path}/messages", json={"content": "hi"}, headers=as_json
            ),
            await http.patch(
                f"{path}/share",
                json={"sharedWithWorkspace": False},
                headers=other.auth,
            ),
        ]
        streamed = await send(http, other, conversation["id"], "hi")
        listed = await http.get(
            "/api/chat/conversations", params={"search": "secret"}, headers=other.auth
        )

        for response in answers:
            assert_error(response, 404, "not_found")
        assert streamed.status == 404
        assert streamed.last["code"] == "not_found"
        assert listed.json() == []
        kept = await http.get(path, headers=owner.auth)
        assert kept.json()["title"] == "Private plans"
        assert len(kept.json()["messages"]) == 2

    async def test_conversation_routes_need_a_signed_in_user(
        self, http: httpx.AsyncClient
    ) -> None:
        response = await http.get("/api/chat/conversations")

        assert_error(response, 401)


class TestSharing:
    async def test_a_member_reads_a_shared_conversation_but_cannot_change_it(
        self, http: httpx.AsyncClient, api: ChatApi
    ) -> None:
        owner = await register(http)
        member = await register(http)
        workspace_id = await api.team(owner.id, member.id)
        conversation = await new_conversation(http, owner)
        path = f"/api/chat/conversations/{conversation['id']}"
        await api.workspace.UpdateWorkspace(
            _members_see_chats(workspace_id), metadata=api.user(owner.id)
        )

        shared = await http.patch(
            f"{path}/share",
            json={"sharedWithWorkspace": True, "workspaceId": workspace_id},
            headers=owner.auth,
        )
        read = await http.get(path, headers=member.auth)
        listed = await http.get(
            "/api/chat/conversations",
            params={"workspaceId": workspace_id},
            headers=member.auth,
        )
        renamed = await http.patch(path, json={"title": "x"}, headers=member.auth)
        await http.patch(
            f"{path}/share", json={"sharedWithWorkspace": False}, headers=owner.auth
        )
        unshared = await http.get(path, headers=member.auth)

        assert shared.status_code == 200
        assert shared.json()["sharedWithWorkspace"] is True
        assert read.status_code == 200
        assert read.json()["isOwner"] is False
        assert [c["id"] for c in listed.json()] == [conversation["id"]]
        assert_error(renamed, 403, "permission_denied")
        assert_error(unshared, 404, "not_found")

    async def test_sharing_with_a_workspace_one_is_not_in_is_404(
        self, http: httpx.AsyncClient, api: ChatApi
    ) -> None:
        owner = await register(http)
        stranger = await register(http)
        workspace_id = await api.team(stranger.id)
        conversation = await new_conversation(http, owner)

        response = await http.patch(
            f"/api/chat/conversations/{conversation['id']}/share",
            json={"sharedWithWorkspace": True, "workspaceId": workspace_id},
            headers=owner.auth,
        )

        assert_error(response, 404, "not_found")


class TestEstimatesAndEnhancement:
    async def test_estimate_is_public_and_priced_by_the_catalog(
        self, http: httpx.AsyncClient, api: ChatApi
    ) -> None:
        response = await http.post(
            "/api/chat/estimate",
            json={"modelId": MODEL, "inputText": "Hello there", "imageCount": 1},
        )

        assert response.status_code == 200, response.text
        body = response.json()
        assert body["imageTokens"] == 1000
        assert body["estimatedOutputTokens"] == 500
        expected = await api.price(body["estimatedInputTokens"], 500)
        assert round(body["estimatedCost"] * 1_000_000) == expected
        assert body["minCost"] < body["estimatedCost"] < body["maxCost"]

    async def test_estimate_of_an_unknown_model_is_404(
        self, http: httpx.AsyncClient
    ) -> None:
        response = await http.post(
            "/api/chat/estimate", json={"modelId": "no/such", "inputText": "x"}
        )

        assert_error(response, 404, "not_found")

    async def test_enhance_prompt_charges_the_caller(
        self, http: httpx.AsyncClient
    ) -> None:
        user = await register(http)

        response = await http.post(
            "/api/enhance-prompt",
            json={"prompt": "a cat on a roof", "variationType": "subtle"},
            headers=user.auth,
        )

        assert response.status_code == 200, response.text
        body = response.json()
        assert body["enhancedPrompt"].startswith("[simulated]")
        assert body["credits"] > 0
        assert body["remainingCredits"] == pytest.approx(
            SIGNUP_CREDITS - body["credits"]
        )
        assert await balance(http, user) == {
            "credits": body["remainingCredits"],
            "held": 0,
        }

    async def test_enhance_prompt_needs_a_prompt_or_an_image(
        self, http: httpx.AsyncClient
    ) -> None:
        user = await register(http)

        response = await http.post(
            "/api/enhance-prompt", json={"prompt": "  "}, headers=user.auth
        )

        assert_error(response, 400)
        assert await balance(http, user) == {"credits": SIGNUP_CREDITS, "held": 0}

    async def test_enhance_estimate(self, http: httpx.AsyncClient) -> None:
        user = await register(http)

        response = await http.post(
            "/api/enhance-prompt/estimate",
            json={"prompt": "a cat", "imageCount": 1},
            headers=user.auth,
        )

        assert response.status_code == 200, response.text
        assert response.json()["outputTokens"] == 250
        assert response.json()["estimatedCost"] > 0


def _members_see_chats(workspace_id: str) -> workspace_pb2.UpdateWorkspaceRequest:
    return workspace_pb2.UpdateWorkspaceRequest(
        workspace_id=workspace_id,
        privacy_settings=workspace_pb2.PrivacySettings(chat_visibility="members"),
    )
