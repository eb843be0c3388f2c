"""The OpenRouter client against the local OpenRouter simulator over
loopback HTTP: streamed replies, usage and cost, every way a reply can fail,
and an early close that reaches the upstream request."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from deploy.simulators.openrouter import create_app
from services.chat.openrouter import (
    Completion,
    ContentDelta,
    EventStreamDecoder,
    Finished,
    OpenRouterClient,
    OpenRouterError,
    StreamEvent,
    Usage,
)
from tests.suite import ServedApp, free_port, serve_asgi, suite_settings

API_KEY = "sk-or-client-test"
MODEL = "openai/gpt-4o-mini"


@pytest.fixture
async def simulator() -> AsyncIterator[ServedApp]:
    served = await serve_asgi(create_app(api_key=API_KEY))
    yield served
    await served.stop()


@pytest.fixture
async def control(simulator: ServedApp) -> AsyncIterator[httpx.AsyncClient]:
    """The simulator's own controls: faults and the request log."""
    async with simulator.client() as client:
        yield client


@pytest.fixture
async def openrouter(simulator: ServedApp) -> AsyncIterator[OpenRouterClient]:
    client = OpenRouterClient(
        base_url=f"{simulator.url}/api/v1",
        api_key=API_KEY,
        timeout=5.0,
        referer="https://omnihub.test",
        title="OmniHub Test",
    )
    yield client
    await client.close()


def marker() -> str:
    """Text unique to one test, so faults and request logs stay its own."""
    return f"m{uuid.uuid4().hex[:10]}"


def said(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def collect(
    client: OpenRouterClient,
    text: str,
    *,
    max_tokens: int = 256,
    model: str = MODEL,
    into: list[StreamEvent] | None = None,
) -> list[StreamEvent]:
    """Read a whole stream; `into` keeps what arrived before a failure."""
    events = into if into is not None else []
    stream = client.stream(model=model, messages=said(text), max_tokens=max_tokens)
    async for event in stream:
        events.append(event)
    return events


async def failure_of(client: OpenRouterClient, text: str) -> OpenRouterError:
    with pytest.raises(OpenRouterError) as caught:
        await collect(client, text)
    return caught.value


def reply_text(events: list[StreamEvent]) -> str:
    return "".join(event.text for event in events if isinstance(event, ContentDelta))


async def set_fault(control: httpx.AsyncClient, mode: str, **fields: Any) -> None:
    response = await control.post("/simulator/faults", json={"mode": mode, **fields})
    assert response.status_code == 200, response.text


async def requests_with(control: httpx.AsyncClient, match: str) -> list[dict[str, Any]]:
    response = await control.get("/simulator/requests", params={"match": match})
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def wait_for_request(
    control: httpx.AsyncClient,
    match: str,
    condition: Callable[[dict[str, Any]], bool],
) -> dict[str, Any]:
    """The logged request once it meets the condition; the simulator notices
    a disconnect a moment after the client leaves."""
    async with asyncio.timeout(3):
        while True:
            items = await requests_with(control, match)
            if items and condition(items[-1]):
                return items[-1]
            await asyncio.sleep(0.02)


class TestStream:
    async def test_stream_yields_deltas_then_one_finished_with_usage_and_cost(
        self, openrouter: OpenRouterClient
    ) -> None:
        events = await collect(openrouter, "hello there")

        *deltas, last = events
        assert len(deltas) == 10
        assert all(isinstance(event, ContentDelta) for event in deltas)
        assert reply_text(events) == (
            "[simulated] You said: hello there. This conversation has 1 messages."
        )
        assert isinstance(last, Finished)
        # 2 prompt tokens at 1 micro-dollar, 10 completion tokens at 2.
        assert last.usage == Usage(
            prompt_tokens=2, completion_tokens=10, cost_micros=22
        )
        assert last.finish_reason == "stop"
        assert last.model == MODEL
        assert last.generation_id is not None
        assert last.generation_id.startswith("gen-")

    async def test_stream_request_carries_key_attribution_and_max_tokens(
        self, openrouter: OpenRouterClient, control: httpx.AsyncClient
    ) -> None:
        tag = marker()

        await collect(openrouter, tag, max_tokens=77)

        (logged,) = await requests_with(control, tag)
        assert logged["status"] == 200
        assert logged["stream"] is True
        assert logged["max_tokens"] == 77
        assert logged["referer"] == "https://omnihub.test"
        assert logged["title"] == "OmniHub Test"

    async def test_reply_cut_by_max_tokens_finishes_with_length(
        self, openrouter: OpenRouterClient
    ) -> None:
        events = await collect(openrouter, "[tokens=50] go on", max_tokens=4)

        finished = events[-1]
        assert isinstance(finished, Finished)
        assert finished.finish_reason == "length"
        assert finished.usage is not None
        assert finished.usage.completion_tokens == 4
        assert reply_text(events) == "[simulated] You said: go"

    async def test_events_split_across_network_reads_are_reassembled(
        self, openrouter: OpenRouterClient, control: httpx.AsyncClient
    ) -> None:
        tag = marker()
        text = f"café ☕ naïve {tag}"
        await set_fault(control, "split_lines", match=tag, times=1)

        split = await collect(openrouter, text)
        plain = await collect(openrouter, text)

        assert [r["fault"] for r in await requests_with(control, tag)] == [
            "split_lines",
            "ok",
        ]
        assert split[:-1] == plain[:-1]
        assert "café ☕ naïve" in reply_text(split)
        finished, expected = split[-1], plain[-1]
        assert isinstance(finished, Finished)
        assert isinstance(expected, Finished)
        assert finished.usage == expected.usage

    async def test_keepalive_comments_between_tokens_are_skipped(self) -> None:
        served = await serve_asgi(create_app(api_key=API_KEY, keepalive_interval=0.02))
        client = OpenRouterClient(base_url=f"{served.url}/api/v1", api_key=API_KEY)
        tag = marker()
        async with served.client() as control:
            await set_fault(control, "slow", match=tag, delay=0.07)
            events = await collect(client, f"[tokens=4] {tag}")
            (logged,) = await requests_with(control, tag)
        await client.close()
        await served.stop()

        assert logged["keepalives"] >= 5
        assert reply_text(events) == f"[simulated] You said: {tag}."
        assert [type(event) for event in events] == [ContentDelta] * 4 + [Finished]

    async def test_error_chunk_mid_stream_raises_upstream(
        self, openrouter: OpenRouterClient, control: httpx.AsyncClient
    ) -> None:
        tag = marker()
        await set_fault(control, "mid_stream_error", match=tag)
        received: list[StreamEvent] = []

        with pytest.raises(OpenRouterError) as caught:
            await collect(openrouter, tag, into=received)

        assert caught.value.kind == "upstream"
        assert caught.value.status == 502
        assert caught.value.retryable is True
        assert reply_text(received) == "[simulated] You said:"
        assert not any(isinstance(event, Finished) for event in received)

    async def test_stream_that_ends_without_finishing_raises_unavailable(
        self, openrouter: OpenRouterClient, control: httpx.AsyncClient
    ) -> None:
        tag = marker()
        await set_fault(control, "cut_off", match=tag)

        error = await failure_of(openrouter, tag)

        assert error.kind == "unavailable"

    async def test_data_line_that_is_not_json_raises_malformed(
        self, openrouter: OpenRouterClient, control: httpx.AsyncClient
    ) -> None:
        tag = marker()
        await set_fault(control, "garbage", match=tag)

        error = await failure_of(openrouter, tag)

        assert error.kind == "malformed"
        assert error.retryable is False

    async def test_stalled_stream_raises_timeout(
        self, simulator: ServedApp, control: httpx.AsyncClient
    ) -> None:
        client = OpenRouterClient(
            base_url=f"{simulator.url}/api/v1", api_key=API_KEY, timeout=0.5
        )
        tag = marker()
        await set_fault(control, "stall", match=tag)

        started = time.monotonic()
        error = await failure_of(client, tag)
        waited = time.monotonic() - started
        await client.close()

        assert error.kind == "timeout"
        assert 0.5 <= waited < 2.0
        await wait_for_request(control, tag, lambda r: r["disconnected"])


class TestRefusedStream:
    async def test_rate_limited_request_raises_rate_limit(
        self, openrouter: OpenRouterClient, control: httpx.AsyncClient
    ) -> None:
        tag = marker()
        await set_fault(control, "rate_limit", match=tag, retry_after=7)

        error = await failure_of(openrouter, tag)

        assert (error.kind, error.status, error.retryable) == ("rate_limit", 429, True)
        assert error.retry_after == 7.0
        assert len(await requests_with(control, tag)) == 1

    async def test_server_error_raises_unavailable(
        self, openrouter: OpenRouterClient, control: httpx.AsyncClient
    ) -> None:
        tag = marker()
        await set_fault(control, "error_500", match=tag)

        error = await failure_of(openrouter, tag)

        assert (error.kind, error.status, error.retryable) == ("unavailable", 500, True)

    async def test_out_of_credits_raises_payment_required(
        self, openrouter: OpenRouterClient, control: httpx.AsyncClient
    ) -> None:
        tag = marker()
        await set_fault(control, "payment_required", match=tag)

        error = await failure_of(openrouter, tag)

        assert (error.kind, error.status, error.retryable) == (
            "payment_required",
            402,
            False,
        )

    async def test_wrong_key_raises_unauthorized(self, simulator: ServedApp) -> None:
        client = OpenRouterClient(
            base_url=f"{simulator.url}/api/v1", api_key="sk-or-wrong"
        )

        error = await failure_of(client, "hi")
        await client.close()

        assert (error.kind, error.status) == ("unauthorized", 401)
        assert "sk-or-wrong" not in error.message

    async def test_missing_key_raises_unauthorized_without_calling_out(
        self, simulator: ServedApp, control: httpx.AsyncClient
    ) -> None:
        client = OpenRouterClient(base_url=f"{simulator.url}/api/v1", api_key=None)
        tag = marker()

        error = await failure_of(client, tag)
        await client.close()

        assert error.kind == "unauthorized"
        assert error.message == "OpenRouter API key not configured"
        assert await requests_with(control, tag) == []

    async def test_invalid_model_raises_invalid_request_with_the_reason(
        self, openrouter: OpenRouterClient
    ) -> None:
        with pytest.raises(OpenRouterError) as caught:
            await collect(openrouter, "hi", model="no such model")

        assert (caught.value.kind, caught.value.status) == ("invalid_request", 400)
        assert "no such model is not a valid model ID" in caught.value.message

    async def test_unreachable_server_raises_unavailable(self) -> None:
        client = OpenRouterClient(
            base_url=f"http://127.0.0.1:{free_port()}/api/v1", api_key=API_KEY
        )

        error = await failure_of(client, "hi")
        await client.close()

        assert (error.kind, error.retryable) == ("unavailable", True)


class TestEarlyClose:
    async def test_closing_the_stream_early_stops_the_upstream_request(
        self, openrouter: OpenRouterClient, control: httpx.AsyncClient
    ) -> None:
        tag = marker()
        await set_fault(control, "slow", match=tag, delay=0.05)
        stream = openrouter.stream(
            model=MODEL, messages=said(f"[tokens=200] {tag}"), max_tokens=500
        )

        first = await anext(stream)
        await stream.aclose()

        assert isinstance(first, ContentDelta)
        logged = await wait_for_request(control, tag, lambda r: r["disconnected"])
        assert logged["completed"] is False

    async def test_cancelling_the_reading_task_stops_the_upstream_request(
        self, openrouter: OpenRouterClient, control: httpx.AsyncClient
    ) -> None:
        tag = marker()
        await set_fault(control, "slow", match=tag, delay=0.05)
        first_delta = asyncio.Event()

        async def read_reply() -> None:
            stream = openrouter.stream(
                model=MODEL, messages=said(f"[tokens=200] {tag}"), max_tokens=500
            )
            async for _ in stream:
                first_delta.set()

        reader = asyncio.create_task(read_reply())
        await first_delta.wait()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader

        logged = await wait_for_request(control, tag, lambda r: r["disconnected"])
        assert logged["completed"] is False


class TestComplete:
    async def test_complete_returns_text_and_usage(
        self, openrouter: OpenRouterClient, control: httpx.AsyncClient
    ) -> None:
        tag = marker()

        completion = await openrouter.complete(
            model=MODEL, messages=said(f"title please {tag}"), max_tokens=64
        )

        assert completion == Completion(
            text=f"[simulated] You said: title please {tag}. "
            "This conversation has 1 messages.",
            usage=Usage(prompt_tokens=3, completion_tokens=11, cost_micros=25),
            model=MODEL,
        )
        (logged,) = await requests_with(control, tag)
        assert (logged["stream"], logged["max_tokens"]) == (False, 64)

    async def test_complete_sends_again_once_after_a_rate_limit(
        self, openrouter: OpenRouterClient, control: httpx.AsyncClient
    ) -> None:
        tag = marker()
        await set_fault(control, "rate_limit", match=tag, times=1, retry_after=0)

        completion = await openrouter.complete(
            model=MODEL, messages=said(tag), max_tokens=64
        )

        assert completion.text.startswith("[simulated]")
        statuses = [r["status"] for r in await requests_with(control, tag)]
        assert statuses == [429, 200]

    async def test_complete_gives_up_after_the_second_server_error(
        self, openrouter: OpenRouterClient, control: httpx.AsyncClient
    ) -> None:
        tag = marker()
        await set_fault(control, "error_500", match=tag, times=3)

        with pytest.raises(OpenRouterError) as caught:
            await openrouter.complete(model=MODEL, messages=said(tag), max_tokens=64)

        assert caught.value.kind == "unavailable"
        assert len(await requests_with(control, tag)) == 2

    async def test_complete_does_not_wait_out_a_long_retry_after(
        self, openrouter: OpenRouterClient, control: httpx.AsyncClient
    ) -> None:
        tag = marker()
        await set_fault(control, "rate_limit", match=tag, retry_after=30)

        with pytest.raises(OpenRouterError) as caught:
            await openrouter.complete(model=MODEL, messages=said(tag), max_tokens=64)

        assert (caught.value.kind, caught.value.retry_after) == ("rate_limit", 30.0)
        assert len(await requests_with(control, tag)) == 1

    async def test_complete_with_an_error_body_in_a_200_raises_upstream(
        self, openrouter: OpenRouterClient, control: httpx.AsyncClient
    ) -> None:
        tag = marker()
        await set_fault(control, "mid_stream_error", match=tag)

        with pytest.raises(OpenRouterError) as caught:
            await openrouter.complete(model=MODEL, messages=said(tag), max_tokens=64)

        assert (caught.value.kind, caught.value.status) == ("upstream", 502)

    async def test_complete_with_a_cut_off_body_raises_malformed(
        self, openrouter: OpenRouterClient, control: httpx.AsyncClient
    ) -> None:
        tag = marker()
        await set_fault(control, "garbage", match=tag)

        with pytest.raises(OpenRouterError) as caught:
            await openrouter.complete(model=MODEL, messages=said(tag), max_tokens=64)

        assert caught.value.kind == "malformed"


class TestFromSettings:
    async def test_client_from_settings_uses_the_configured_url_and_key(
        self, simulator: ServedApp
    ) -> None:
        settings = suite_settings(
            "postgresql://unused@127.0.0.1/unused",
            openrouter_base_url=f"{simulator.url}/api/v1",
            openrouter_api_key=API_KEY,
        )
        client = OpenRouterClient.from_settings(settings)

        completion = await client.complete(
            model=MODEL, messages=said("hi"), max_tokens=16
        )
        await client.close()

        assert completion.text.startswith("[simulated] You said: hi.")


class TestEventStreamDecoder:
    def test_event_split_inside_a_character_and_a_crlf_is_reassembled(self) -> None:
        wire = 'data: {"text": "café"}\r\n\r\n'.encode()
        decoder = EventStreamDecoder()
        cut_char = wire.index("é".encode()) + 1
        cut_line = wire.index(b"\r\n") + 1

        first = decoder.feed(wire[:cut_char])
        second = decoder.feed(wire[cut_char:cut_line])
        third = decoder.feed(wire[cut_line:])

        assert (first, second, third) == ([], [], ['{"text": "café"}'])

    def test_comments_are_skipped_and_data_lines_of_one_event_are_joined(
        self,
    ) -> None:
        decoder = EventStreamDecoder()

        events = decoder.feed(
            b": OPENROUTER PROCESSING\n\nevent: message\ndata: one\ndata:two\n\n"
        )

        assert events == ["one\ntwo"]

    def test_last_event_without_its_blank_line_is_kept_at_the_end(self) -> None:
        decoder = EventStreamDecoder()

        assert decoder.feed(b"data: [DONE]") == []
        assert decoder.finish() == ["[DONE]"]
