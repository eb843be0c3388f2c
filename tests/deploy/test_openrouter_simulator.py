"""The OpenRouter simulator speaks OpenRouter's protocol: chat completions
streamed as server-sent events or whole, its error shape, usage with cost,
keep-alive comments and the faults tests inject, over loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from deploy.simulators.openrouter import create_app
from tests.suite import ServedApp, serve_asgi

API_KEY = "sk-or-simulator-test"
MODEL = "openai/gpt-4o-mini"
COMPLETIONS = "/api/v1/chat/completions"
KEEPALIVE = ": OPENROUTER PROCESSING"


@dataclass
class RawStream:
    """A stream as it came off the wire: the network reads and their text."""

    reads: list[bytes]
    response: httpx.Response

    @property
    def text(self) -> str:
        return b"".join(self.reads).decode()

    @property
    def events(self) -> list[str]:
        normalised = self.text.replace("\r\n", "\n")
        return [event for event in normalised.split("\n\n") if event]

    @property
    def chunks(self) -> list[dict[str, Any]]:
        return [
            json.loads(event.removeprefix("data: "))
            for event in self.events
            if event.startswith("data: {")
        ]

    @property
    def content(self) -> str:
        return "".join(
            chunk["choices"][0]["delta"].get("content") or "" for chunk in self.chunks
        )


@pytest.fixture
async def simulator() -> AsyncIterator[ServedApp]:
    served = await serve_asgi(create_app(api_key=API_KEY))
    yield served
    await served.stop()


@pytest.fixture
async def api(simulator: ServedApp) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with simulator.client(headers=headers) as client:
        yield client


def decodes(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def marker() -> str:
    """Text unique to one test, so faults and request logs stay its own."""
    return f"m{uuid.uuid4().hex[:10]}"


def chat(text: str, **fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], **fields}


async def read_stream(api: httpx.AsyncClient, body: dict[str, Any]) -> RawStream:
    async with api.stream("POST", COMPLETIONS, json={**body, "stream": True}) as reply:
        reads = [read async for read in reply.aiter_raw()]
    return RawStream(reads, reply)


async def whole(api: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await api.post(COMPLETIONS, json=body)
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


async def set_fault(api: httpx.AsyncClient, mode: str, **fields: Any) -> None:
    response = await api.post("/simulator/faults", json={"mode": mode, **fields})
    assert response.status_code == 200, response.text


async def requests_with(api: httpx.AsyncClient, match: str) -> list[dict[str, Any]]:
    response = await api.get("/simulator/requests", params={"match": match})
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def wait_for_request(
    api: httpx.AsyncClient,
    match: str,
    condition: Callable[[dict[str, Any]], bool],
) -> dict[str, Any]:
    """The logged request once it meets the condition; the simulator notices
    a disconnect a moment after the client leaves."""
    async with asyncio.timeout(3):
        while True:
            items = await requests_with(api, match)
            if items and condition(items[-1]):
                return items[-1]
            await asyncio.sleep(0.02)


class TestStreaming:
    async def test_stream_sends_a_chunk_per_token_then_usage_and_done(
        self, api: httpx.AsyncClient
    ) -> None:
        stream = await read_stream(api, chat("[tokens=5] hello"))

        assert stream.response.headers["content-type"].startswith("text/event-stream")
        assert stream.response.headers["x-generation-id"].startswith("gen-")
        chunks = stream.chunks
        assert len(chunks) == 6
        assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
        assert {chunk["id"] for chunk in chunks} == {
            stream.response.headers["x-generation-id"]
        }
        assert [c["choices"][0]["finish_reason"] for c in chunks[:5]] == [None] * 5
        assert stream.content == "[simulated] You said: hello. This"
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
        assert chunks[-1]["usage"] == {
            "prompt_tokens": 2,
            "completion_tokens": 5,
            "total_tokens": 7,
            "cost": pytest.approx(2 * 0.000001 + 5 * 0.000002),
        }
        assert stream.events[-1] == "data: [DONE]"

    async def test_stream_opens_with_a_keepalive_comment(
        self, api: httpx.AsyncClient
    ) -> None:
        stream = await read_stream(api, chat("hi"))

        assert stream.events[0] == KEEPALIVE

    async def test_slow_model_sends_keepalives_while_it_pauses(self) -> None:
        served = await serve_asgi(create_app(api_key=API_KEY, keepalive_interval=0.03))
        tag = marker()
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with served.client(headers=headers) as api:
            await set_fault(api, "slow", match=tag, delay=0.1)
            stream = await read_stream(api, chat(f"[tokens=3] {tag}"))
        await served.stop()

        kinds = ["keepalive" if e == KEEPALIVE else "data" for e in stream.events]
        assert kinds.count("keepalive") >= 4
        assert kinds[1] == "keepalive"
        assert stream.content == "[simulated] You said:"

    async def test_every_response_is_marked_simulated(
        self, api: httpx.AsyncClient
    ) -> None:
        stream = await read_stream(api, chat("hi"))
        refused = await api.post(COMPLETIONS, json={"model": MODEL})

        assert stream.response.headers["x-simulated"] == "true"
        assert refused.headers["x-simulated"] == "true"


class TestSimulatedModel:
    async def test_whole_reply_is_a_chat_completion_with_usage(
        self, api: httpx.AsyncClient
    ) -> None:
        document = await whole(api, chat("hello there"))

        assert document["object"] == "chat.completion"
        assert document["model"] == MODEL
        assert document["choices"][0]["message"] == {
            "role": "assistant",
            "content": "[simulated] You said: hello there. "
            "This conversation has 1 messages.",
        }
        assert document["choices"][0]["finish_reason"] == "stop"
        assert document["usage"]["prompt_tokens"] == 2
        assert document["usage"]["completion_tokens"] == 10

    async def test_reply_echoes_twelve_words_of_the_last_user_message(
        self, api: httpx.AsyncClient
    ) -> None:
        words = " ".join(f"w{i}" for i in range(20))
        messages = [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": words},
        ]

        document = await whole(api, {"model": MODEL, "messages": messages})

        assert document["choices"][0]["message"]["content"] == (
            "[simulated] You said: w0 w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 ... "
            "This conversation has 4 messages."
        )
        assert document["usage"]["prompt_tokens"] == 2 + 2 + 2 + 20

    async def test_tokens_marker_makes_the_reply_exactly_that_long(
        self, api: httpx.AsyncClient
    ) -> None:
        document = await whole(api, chat("write a lot [tokens=40]"))

        content = document["choices"][0]["message"]["content"]
        assert len(content.split()) == 40
        assert content.startswith("[simulated] You said: write a lot.")
        assert document["usage"]["completion_tokens"] == 40

    async def test_max_tokens_cuts_the_reply_with_finish_reason_length(
        self, api: httpx.AsyncClient
    ) -> None:
        document = await whole(api, chat("[tokens=40] long", max_tokens=7))

        assert len(document["choices"][0]["message"]["content"].split()) == 7
        assert document["choices"][0]["finish_reason"] == "length"
        assert document["usage"]["completion_tokens"] == 7

    async def test_cost_is_the_documented_rate_per_token(
        self, api: httpx.AsyncClient
    ) -> None:
        document = await whole(api, chat("one two three [tokens=100]"))

        assert document["usage"]["cost"] == pytest.approx(4 * 0.000001 + 100 * 0.000002)

    async def test_reply_says_how_many_images_it_saw(
        self, api: httpx.AsyncClient
    ) -> None:
        image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}
        content = [{"type": "text", "text": "what is this"}, image, image]

        document = await whole(
            api, {"model": MODEL, "messages": [{"role": "user", "content": content}]}
        )

        reply = document["choices"][0]["message"]["content"]
        assert reply.startswith("[simulated] You said: what is this.")
        assert reply.endswith("I saw 2 images.")

    async def test_online_model_says_it_searched_the_web(
        self, api: httpx.AsyncClient
    ) -> None:
        document = await whole(api, {**chat("news today"), "model": f"{MODEL}:online"})

        assert document["model"] == f"{MODEL}:online"
        assert document["choices"][0]["message"]["content"].startswith(
            "[simulated] I searched the web before answering."
        )


class TestRefusals:
    @pytest.mark.parametrize(
        ("authorization", "message"),
        [
            (None, "No auth credentials found"),
            ("Bearer sk-or-wrong", "User not found."),
            (f"Basic {API_KEY}", "No auth credentials found"),
        ],
    )
    async def test_request_without_the_key_gets_openrouter_401(
        self, simulator: ServedApp, authorization: str | None, message: str
    ) -> None:
        headers = {"Authorization": authorization} if authorization else {}
        async with simulator.client(headers=headers) as client:
            response = await client.post(COMPLETIONS, json=chat("hi"))

        assert response.status_code == 401
        assert response.json() == {"error": {"code": 401, "message": message}}

    @pytest.mark.parametrize(
        "body",
        [
            {"messages": [{"role": "user", "content": "hi"}]},
            {"model": "not a model", "messages": [{"role": "user", "content": "hi"}]},
            {"model": MODEL},
            {"model": MODEL, "messages": []},
            {"model": MODEL, "messages": [{"content": "no role"}]},
            {**chat("hi"), "max_tokens": 0},
        ],
    )
    async def test_unusable_request_gets_openrouter_400(
        self, api: httpx.AsyncClient, body: dict[str, Any]
    ) -> None:
        response = await api.post(COMPLETIONS, json=body)

        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == 400
        assert error["message"]


class TestFaults:
    async def test_rate_limit_answers_429_with_retry_after(
        self, api: httpx.AsyncClient
    ) -> None:
        tag = marker()
        await set_fault(api, "rate_limit", match=tag, retry_after=7)

        response = await api.post(COMPLETIONS, json=chat(tag))

        assert response.status_code == 429
        assert response.headers["retry-after"] == "7"
        assert response.json()["error"]["code"] == 429

    async def test_fault_only_touches_requests_that_match(
        self, api: httpx.AsyncClient
    ) -> None:
        tag = marker()
        await set_fault(api, "error_500", match=tag)

        other = await api.post(COMPLETIONS, json=chat("someone else's test"))
        mine = await api.post(COMPLETIONS, json=chat(f"mine {tag}"))

        assert other.status_code == 200
        assert mine.status_code == 500
        assert mine.json()["error"]["code"] == 500

    async def test_fault_wears_off_after_times(self, api: httpx.AsyncClient) -> None:
        tag = marker()
        await set_fault(api, "payment_required", match=tag, times=2)

        statuses = [
            (await api.post(COMPLETIONS, json=chat(tag))).status_code for _ in range(3)
        ]

        assert statuses == [402, 402, 200]

    async def test_ok_mode_removes_the_fault(self, api: httpx.AsyncClient) -> None:
        tag = marker()
        await set_fault(api, "error_500", match=tag)
        await set_fault(api, "ok", match=tag)

        response = await api.post(COMPLETIONS, json=chat(tag))

        assert response.status_code == 200
        assert (await api.get("/simulator/faults")).json() == {"items": []}

    async def test_unknown_fault_mode_is_refused(self, api: httpx.AsyncClient) -> None:
        response = await api.post("/simulator/faults", json={"mode": "explode"})

        assert response.status_code == 400

    async def test_mid_stream_error_sends_tokens_then_an_error_chunk(
        self, api: httpx.AsyncClient
    ) -> None:
        tag = marker()
        await set_fault(api, "mid_stream_error", match=tag)

        stream = await read_stream(api, chat(tag))

        assert stream.response.status_code == 200
        assert stream.content == "[simulated] You said:"
        last = stream.chunks[-1]
        assert last["error"]["code"] == 502
        assert last["choices"][0]["finish_reason"] == "error"
        assert "data: [DONE]" not in stream.events

    async def test_cut_off_stream_ends_without_finishing(
        self, api: httpx.AsyncClient
    ) -> None:
        tag = marker()
        await set_fault(api, "cut_off", match=tag)

        stream = await read_stream(api, chat(tag))

        assert len(stream.chunks) == 3
        assert {c["choices"][0]["finish_reason"] for c in stream.chunks} == {None}
        assert "data: [DONE]" not in stream.events

    async def test_garbage_sends_a_data_line_that_is_not_json(
        self, api: httpx.AsyncClient
    ) -> None:
        tag = marker()
        await set_fault(api, "garbage", match=tag)

        stream = await read_stream(api, chat(tag))

        data = [
            e.removeprefix("data: ") for e in stream.events if e.startswith("data:")
        ]
        assert len(data) == 1
        with pytest.raises(json.JSONDecodeError):
            json.loads(data[0])

    async def test_split_lines_cuts_every_frame_across_two_writes(
        self, api: httpx.AsyncClient
    ) -> None:
        tag = marker()
        await set_fault(api, "split_lines", match=tag)

        split = await read_stream(api, chat(f"café ☕ {tag}"))
        plain = await read_stream(api, chat(f"café ☕ {tag}"))

        cut_reads = [read for read in split.reads if not read.endswith(b"\r\n\r\n")]
        assert len(cut_reads) >= len(split.events)
        assert any(read.endswith(b"\r") for read in split.reads)
        assert not all(decodes(read) for read in split.reads)
        assert split.content == plain.content
        assert "café ☕" in split.content

    async def test_stall_sends_only_keepalives_until_the_client_leaves(self) -> None:
        served = await serve_asgi(create_app(api_key=API_KEY, keepalive_interval=0.03))
        tag = marker()
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with served.client(headers=headers) as api:
            await set_fault(api, "stall", match=tag)
            received = b""
            body = {**chat(tag), "stream": True}
            async with api.stream("POST", COMPLETIONS, json=body) as reply:
                async for read in reply.aiter_raw():
                    received += read
                    if received.count(KEEPALIVE.encode()) >= 4:
                        break
            logged = await wait_for_request(api, tag, lambda r: r["disconnected"])
        await served.stop()

        assert received.count(b'"content"') == 3
        assert b"[DONE]" not in received
        assert logged["completed"] is False

    async def test_slow_spaces_the_tokens_by_the_delay(
        self, api: httpx.AsyncClient
    ) -> None:
        tag = marker()
        await set_fault(api, "slow", match=tag, delay=0.1)

        started = time.monotonic()
        stream = await read_stream(api, chat(f"[tokens=4] {tag}"))

        assert time.monotonic() - started >= 0.4
        assert len(stream.chunks) == 5


class TestRequestLog:
    async def test_log_records_each_request_as_received(
        self, api: httpx.AsyncClient
    ) -> None:
        tag = marker()
        headers = {"HTTP-Referer": "https://omnihub.test", "X-Title": "OmniHub"}
        body = {
            "model": MODEL,
            "messages": [
                {"role": "user", "content": "earlier"},
                {"role": "assistant", "content": "reply"},
                {"role": "user", "content": tag},
            ],
            "max_tokens": 64,
            "stream": True,
        }

        async with api.stream("POST", COMPLETIONS, json=body, headers=headers) as r:
            await r.aread()
        logged = await wait_for_request(api, tag, lambda r: r["completed"])

        assert {key: logged[key] for key in logged if key != "id"} == {
            "model": MODEL,
            "messages": 3,
            "max_tokens": 64,
            "stream": True,
            "last_user_message": tag,
            "referer": "https://omnihub.test",
            "title": "OmniHub",
            "fault": "ok",
            "status": 200,
            "keepalives": 1,
            "completed": True,
            "disconnected": False,
        }

    async def test_client_leaving_mid_stream_is_logged_as_disconnected(
        self, api: httpx.AsyncClient
    ) -> None:
        tag = marker()
        await set_fault(api, "slow", match=tag, delay=0.05)

        body = {**chat(f"[tokens=200] {tag}"), "stream": True}
        async with api.stream("POST", COMPLETIONS, json=body) as reply:
            async for read in reply.aiter_raw():
                if b'"content"' in read:
                    break
        logged = await wait_for_request(api, tag, lambda r: r["disconnected"])

        assert logged["completed"] is False
