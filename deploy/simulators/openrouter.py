"""A local OpenRouter: chat completions, streamed or whole, with a simulated
model whose replies are deterministic and marked as simulated.

    OPENROUTER_API_KEY=sk-or-local python -m deploy.simulators.openrouter \\
        --port 9030 [--token-delay 0.05] [--keepalive-interval 5]

Point the chat service at it with OPENROUTER_BASE_URL=http://127.0.0.1:9030/api/v1
and the same OPENROUTER_API_KEY.

OpenRouter API, `Authorization: Bearer <key>`, OpenRouter's error shape
`{"error": {"code", "message", "metadata"?}}`:
    POST /api/v1/chat/completions   {model, messages, max_tokens?, stream?}

The simulated model:
    - A token is one whitespace-separated word of the reply; a streamed chunk
      carries one token (with the space before it), so completion_tokens is
      the number of chunks. prompt_tokens is the number of whitespace-separated
      words in the text of every message (image parts count nothing).
    - The reply reads "[simulated] You said: <the first 12 words of the last
      user message>. This conversation has N messages.", plus "I saw K images."
      when messages carry `image_url` parts and "I searched the web before
      answering." for a model id ending in `:online`.
    - `[tokens=N]` in the last user message asks for exactly N tokens: the
      reply is padded with filler words or cut to length. Either way the reply
      is cut to `max_tokens`, and then finish_reason is "length" not "stop".
    - cost (USD) = 0.000001 per prompt token + 0.000002 per completion token.

A stream opens with a `: OPENROUTER PROCESSING` comment and repeats it every
`keepalive_interval` seconds while the model pauses (slow tokens, a stall);
then one `data:` chunk per token, a last chunk with finish_reason and usage,
and `data: [DONE]`. Every response carries `X-Simulated: true` and a whole
reply or stream an `X-Generation-Id`.

Simulator controls (no auth: bind to loopback only):
    POST /simulator/faults  {"mode": ..., "times": n?, "match": text?,
        "retry_after": s?, "delay": s?}
        mode is one of
          ok                the faults registered with this `match` are removed
          rate_limit        429 with Retry-After (`retry_after`, default 1)
          error_500         500
          payment_required  402: the account is out of credits
          mid_stream_error  a 200 stream: 3 tokens, then a chunk with `error`
                            and finish_reason "error", then the end (no
                            [DONE]); a whole reply is a 200 with an error body
          stall             3 tokens, then only keep-alives until the client
                            leaves; a whole reply never comes
          garbage           a 200 whose data line (or body) is not JSON
          cut_off           3 tokens, then the stream ends: no finish_reason,
                            no [DONE] (a whole reply is cut mid-JSON)
          split_lines       every frame written in two network writes cut at
                            an awkward byte (inside a UTF-8 character, between
                            \\r and \\n, or mid-line), with CRLF line ends
          slow              `delay` seconds (default 0.2) before each token
        `match` scopes the fault to requests whose last user message contains
        it, so tests running at the same time do not see each other's faults;
        `times` makes it wear off after n requests.
    GET  /simulator/faults              the faults in force
    GET  /simulator/requests?match=...  requests received: model, message
        count, max_tokens, stream, fault, status, keep-alives sent, and whether
        the stream ran to its end or the client disconnected early
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from libs.logs import get_logger

log = get_logger(__name__)

FAULT_MODES = frozenset(
    {
        "ok",
        "rate_limit",
        "error_500",
        "payment_required",
        "mid_stream_error",
        "stall",
        "garbage",
        "cut_off",
        "split_lines",
        "slow",
    }
)
PROMPT_TOKEN_PRICE = Decimal("0.000001")
COMPLETION_TOKEN_PRICE = Decimal("0.000002")
KEEPALIVE = b": OPENROUTER PROCESSING\n\n"
ECHOED_WORDS = 12
TOKENS_BEFORE_FAULT = 3
DEFAULT_KEEPALIVE_SECONDS = 5.0
DEFAULT_SLOW_DELAY_SECONDS = 0.2
DEFAULT_RETRY_AFTER_SECONDS = 1
SPLIT_PAUSE_SECONDS = 0.005
MAX_HANG_SECONDS = 60.0
MAX_REQUESTED_TOKENS = 100_000
LOGGED_TEXT_LENGTH = 200

_TOKENS_MARKER = re.compile(r"\[tokens=(\d+)\]")
_MODEL_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*/[A-Za-z0-9._-]+(:[a-z]+)?$")
_FILLER = (
    "and",
    "the",
    "simulated",
    "model",
    "keeps",
    "talking",
    "to",
    "reach",
    "the",
    "length",
    "asked",
    "for",
)
_ROLES = frozenset({"system", "user", "assistant", "tool"})


def openrouter_error(
    status: int,
    message: str,
    *,
    metadata: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    error: dict[str, Any] = {"code": status, "message": message}
    if metadata is not None:
        error["metadata"] = dict(metadata)
    return JSONResponse({"error": error}, status_code=status, headers=headers)


@dataclass
class Fault:
    mode: str
    match: str | None = None
    remaining: int | None = None
    retry_after: int = DEFAULT_RETRY_AFTER_SECONDS
    delay: float = DEFAULT_SLOW_DELAY_SECONDS

    def applies_to(self, text: str) -> bool:
        return self.match is None or self.match in text

    def take(self) -> None:
        if self.remaining is not None:
            self.remaining -= 1

    @property
    def worn_off(self) -> bool:
        return self.remaining is not None and self.remaining <= 0


@dataclass
class ReceivedRequest:
    """What the simulator saw of one chat completion request, and how it ended."""

    id: int
    model: str | None
    messages: int
    max_tokens: int | None
    stream: bool
    last_user_message: str
    referer: str | None
    title: str | None
    fault: str = "ok"
    status: int = 200
    keepalives: int = 0
    completed: bool = False
    disconnected: bool = False


@dataclass(frozen=True)
class Conversation:
    """The parts of a valid request the simulated model reads."""

    model: str
    messages: Sequence[Mapping[str, Any]]
    max_tokens: int | None
    stream: bool


@dataclass(frozen=True)
class SimulatedReply:
    tokens: tuple[str, ...]
    prompt_tokens: int
    finish_reason: str

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    @property
    def completion_tokens(self) -> int:
        return len(self.tokens)

    def usage(self) -> dict[str, Any]:
        cost = (
            self.prompt_tokens * PROMPT_TOKEN_PRICE
            + self.completion_tokens * COMPLETION_TOKEN_PRICE
        )
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "cost": float(cost),
        }


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a message: its content string, or its text parts joined."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = [
        part.get("text", "")
        for part in content
        if isinstance(part, dict) and part.get("type") == "text"
    ]
    return " ".join(text for text in texts if isinstance(text, str))


def image_count(messages: Sequence[Mapping[str, Any]]) -> int:
    return sum(
        1
        for message in messages
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if isinstance(part, dict) and part.get("type") == "image_url"
    )


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message)
    return ""


def simulated_reply(conversation: Conversation) -> SimulatedReply:
    messages = conversation.messages
    last = last_user_text(messages)
    words = sentence_of(conversation.model, messages, last).split()
    marker = _TOKENS_MARKER.search(last)
    wanted = min(int(marker.group(1)), MAX_REQUESTED_TOKENS) if marker else len(words)
    cap = conversation.max_tokens
    length = wanted if cap is None else min(wanted, cap)
    while len(words) < length:
        words.append(_FILLER[len(words) % len(_FILLER)])
    words = words[:length]
    return SimulatedReply(
        tokens=tuple(word if i == 0 else " " + word for i, word in enumerate(words)),
        prompt_tokens=sum(len(message_text(m).split()) for m in messages),
        finish_reason="length" if length < wanted else "stop",
    )


def sentence_of(
    model: str, messages: Sequence[Mapping[str, Any]], last_user_message: str
) -> str:
    said = _TOKENS_MARKER.sub(" ", last_user_message).split()
    echo = " ".join(said[:ECHOED_WORDS])
    ending = " ..." if len(said) > ECHOED_WORDS else "."
    parts = ["[simulated]"]
    if model.endswith(":online"):
        parts.append("I searched the web before answering.")
    parts.append(f"You said: {echo}{ending}" if echo else "You said nothing.")
    parts.append(f"This conversation has {len(messages)} messages.")
    images = image_count(messages)
    if images:
        parts.append(f"I saw {images} image{'s' if images != 1 else ''}.")
    return " ".join(parts)


def conversation_problem(body: object) -> str | None:
    """OpenRouter's kind of 400 message for an unusable request, or None."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return "No model was given: specify `model`."
    if not _MODEL_ID.match(model):
        return f"{model} is not a valid model ID"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return 'Input required: specify "prompt" or "messages"'
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            return "Every message needs a role: system, user, assistant or tool."
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (
        not isinstance(max_tokens, int)
        or isinstance(max_tokens, bool)
        or max_tokens < 1
    ):
        return "max_tokens must be a positive integer."
    if not isinstance(body.get("stream", False), bool):
        return "stream must be a boolean."
    return None


class EventFrames:
    """The bytes of one simulated stream, frame by frame: each item yielded
    is one network write."""

    def __init__(
        self,
        reply: SimulatedReply,
        conversation: Conversation,
        fault: Fault | None,
        record: ReceivedRequest,
        *,
        generation_id: str,
        token_delay: float,
        keepalive_interval: float,
    ) -> None:
        self.reply = reply
        self.model = conversation.model
        self.mode = fault.mode if fault is not None else "ok"
        self.slow_delay = fault.delay if fault is not None else 0.0
        self.record = record
        self.generation_id = generation_id
        self.token_delay = token_delay
        self.keepalive_interval = keepalive_interval
        self.created = int(time.time())
        self.newline = "\r\n" if self.mode == "split_lines" else "\n"

    async def __aiter__(self) -> AsyncIterator[bytes]:
        frames = self._frames()
        if self.mode == "split_lines":
            frames = self._split(frames)
        async for frame in frames:
            yield frame

    async def _frames(self) -> AsyncIterator[bytes]:
        yield self._keepalive()
        if self.mode == "garbage":
            yield self._line('data: {"id": "gen-cut-off", "choices": [')
            return
        stop_early = self.mode in ("mid_stream_error", "stall", "cut_off")
        for index, token in enumerate(self.reply.tokens):
            if stop_early and index == TOKENS_BEFORE_FAULT:
                break
            async for keepalive in self._pause(self._delay()):
                yield keepalive
            yield self._data(self._chunk({"content": token}, index=index))
        if self.mode == "stall":
            async for keepalive in self._pause(MAX_HANG_SECONDS):
                yield keepalive
            return
        if self.mode == "mid_stream_error":
            yield self._data(self._error_chunk())
            return
        if self.mode == "cut_off":
            return
        yield self._data(self._last_chunk())
        yield self._line("data: [DONE]")

    async def _split(self, frames: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for number, frame in _numbered(frames):
            cut = awkward_offset(frame, number)
            yield frame[:cut]
            # A pause between the halves so they reach the client as two reads.
            await asyncio.sleep(SPLIT_PAUSE_SECONDS)
            yield frame[cut:]

    def _delay(self) -> float:
        return self.slow_delay if self.mode == "slow" else self.token_delay

    async def _pause(self, seconds: float) -> AsyncIterator[bytes]:
        """Wait, sending OpenRouter's keep-alive comment every interval."""
        remaining = seconds
        while remaining > 0:
            step = min(remaining, self.keepalive_interval)
            await asyncio.sleep(step)
            remaining -= step
            if remaining > 0:
                yield self._keepalive()

    def _keepalive(self) -> bytes:
        self.record.keepalives += 1
        return KEEPALIVE.replace(b"\n", self.newline.encode())

    def _line(self, text: str) -> bytes:
        return (text + self.newline * 2).encode()

    def _data(self, chunk: Mapping[str, Any]) -> bytes:
        return self._line("data: " + json.dumps(chunk, ensure_ascii=False))

    def _chunk(self, delta: Mapping[str, Any], *, index: int = 1) -> dict[str, Any]:
        if index == 0:
            delta = {"role": "assistant", **delta}
        return {
            "id": self.generation_id,
            "provider": "Simulator",
            "model": self.model,
            "object": "chat.completion.chunk",
            "created": self.created,
            "choices": [
                {
                    "index": 0,
                    "delta": dict(delta),
                    "finish_reason": None,
                    "native_finish_reason": None,
                    "logprobs": None,
                }
            ],
        }

    def _last_chunk(self) -> dict[str, Any]:
        chunk = self._chunk({"content": ""})
        choice = chunk["choices"][0]
        choice["finish_reason"] = self.reply.finish_reason
        choice["native_finish_reason"] = self.reply.finish_reason
        chunk["usage"] = self.reply.usage()
        return chunk

    def _error_chunk(self) -> dict[str, Any]:
        chunk = self._chunk({"content": ""})
        chunk["choices"][0]["finish_reason"] = "error"
        chunk["error"] = {
            "code": 502,
            "message": "The simulated provider failed in the middle of the reply.",
        }
        return chunk


async def _numbered(frames: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, bytes]]:
    number = 0
    async for frame in frames:
        yield number, frame
        number += 1


def awkward_offset(frame: bytes, number: int) -> int:
    """Where to cut a frame in two: inside its first multi-byte UTF-8
    character if it has one, else by turns between \\r and \\n or mid-line."""
    if len(frame) < 2:
        return len(frame)
    lead = next((i for i, byte in enumerate(frame) if byte >= 0xC0), None)
    if lead is not None:
        return lead + 1
    if number % 2 == 0 and b"\r\n" in frame:
        return frame.index(b"\r\n") + 1
    return len(frame) // 2


class SimulatedEventStream(StreamingResponse):
    """Writes the frames until they end or the client disconnects, whichever
    comes first, and records which it was."""

    def __init__(
        self,
        frames: EventFrames,
        record: ReceivedRequest,
        headers: Mapping[str, str],
    ) -> None:
        super().__init__(frames, media_type="text/event-stream", headers=headers)
        self.record = record

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": self.status_code,
                "headers": self.raw_headers,
            }
        )
        writer = asyncio.create_task(self._write(send))
        watcher = asyncio.create_task(_client_leaves(receive))
        done, _ = await asyncio.wait(
            {writer, watcher}, return_when=asyncio.FIRST_COMPLETED
        )
        if writer in done:
            watcher.cancel()
            writer.result()
            self.record.completed = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        self.record.disconnected = True
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        log.info("openrouter_simulator.client_left", request=self.record.id)

    async def _write(self, send: Send) -> None:
        async for frame in self.body_iterator:
            body = frame if isinstance(frame, bytes) else str(frame).encode()
            await send({"type": "http.response.body", "body": body, "more_body": True})


async def _client_leaves(receive: Receive) -> None:
    # The body was read by the endpoint, so the next message is the disconnect.
    while (await receive())["type"] != "http.disconnect":
        pass


class OpenRouterSimulator:
    def __init__(
        self, api_key: str, token_delay: float, keepalive_interval: float
    ) -> None:
        self._api_key = api_key
        self.token_delay = token_delay
        self.keepalive_interval = keepalive_interval
        self.faults: list[Fault] = []
        self.requests: list[ReceivedRequest] = []

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/simulator/faults", self.set_fault, methods=["POST"]),
            Route("/simulator/faults", self.list_faults, methods=["GET"]),
            Route("/simulator/requests", self.list_requests, methods=["GET"]),
        ]

    # OpenRouter API

    async def chat_completions(self, request: Request) -> Response:
        raw = await request.body()
        body = _json_or_none(raw)
        record = self._record(request, body)
        refusal = self._refusal(request, body)
        if refusal is not None:
            record.status = refusal.status_code
            return refusal
        assert isinstance(body, dict)  # conversation_problem checked it
        conversation = Conversation(
            model=body["model"],
            messages=body["messages"],
            max_tokens=body.get("max_tokens"),
            stream=body.get("stream", False),
        )
        fault = self._take_fault(record.last_user_message)
        record.fault = fault.mode if fault is not None else "ok"
        failure = fault_response(fault)
        if failure is not None:
            record.status = failure.status_code
            return failure
        reply = simulated_reply(conversation)
        log.info(
            "openrouter_simulator.reply",
            request=record.id,
            model=conversation.model,
            stream=conversation.stream,
            fault=record.fault,
            completion_tokens=reply.completion_tokens,
        )
        if conversation.stream:
            return self._stream(reply, conversation, fault, record)
        return await self._whole(reply, conversation, fault, request, record)

    def _record(self, request: Request, body: object) -> ReceivedRequest:
        document = body if isinstance(body, dict) else {}
        messages = document.get("messages")
        messages = messages if isinstance(messages, list) else []
        max_tokens = document.get("max_tokens")
        record = ReceivedRequest(
            id=len(self.requests) + 1,
            model=document.get("model")
            if isinstance(document.get("model"), str)
            else None,
            messages=len(messages),
            max_tokens=max_tokens if isinstance(max_tokens, int) else None,
            stream=document.get("stream") is True,
            last_user_message=last_user_text(
                [m for m in messages if isinstance(m, dict)]
            ),
            referer=request.headers.get("http-referer"),
            title=request.headers.get("x-title"),
        )
        self.requests.append(record)
        return record

    def _refusal(self, request: Request, body: object) -> Response | None:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key:
            return openrouter_error(401, "No auth credentials found")
        if not hmac.compare_digest(key.encode(), self._api_key.encode()):
            return openrouter_error(401, "User not found.")
        problem = conversation_problem(body)
        if problem is not None:
            return openrouter_error(400, problem)
        return None

    def _take_fault(self, last_user_message: str) -> Fault | None:
        fault = next((f for f in self.faults if f.applies_to(last_user_message)), None)
        if fault is None:
            return None
        fault.take()
        if fault.worn_off:
            self.faults.remove(fault)
        return fault

    def _stream(
        self,
        reply: SimulatedReply,
        conversation: Conversation,
        fault: Fault | None,
        record: ReceivedRequest,
    ) -> Response:
        generation_id = new_generation_id()
        frames = EventFrames(
            reply,
            conversation,
            fault,
            record,
            generation_id=generation_id,
            token_delay=self.token_delay,
            keepalive_interval=self.keepalive_interval,
        )
        headers = {
            "Cache-Control": "no-cache",
            "X-Generation-Id": generation_id,
        }
        return SimulatedEventStream(frames, record, headers)

    async def _whole(
        self,
        reply: SimulatedReply,
        conversation: Conversation,
        fault: Fault | None,
        request: Request,
        record: ReceivedRequest,
    ) -> Response:
        mode = fault.mode if fault is not None else "ok"
        if mode == "stall":
            record.disconnected = await hold_until_client_leaves(request)
            return openrouter_error(408, "The simulated model never answered.")
        if mode in ("garbage", "cut_off"):
            return Response(
                b'{"id": "gen-cut-off", "choi', media_type="application/json"
            )
        if mode == "slow" and fault is not None:
            await asyncio.sleep(fault.delay)
        generation_id = new_generation_id()
        headers = {"X-Generation-Id": generation_id}
        record.completed = True
        if mode == "mid_stream_error":
            body = {
                "id": generation_id,
                "error": {
                    "code": 502,
                    "message": "The simulated provider failed while answering.",
                },
            }
            return JSONResponse(body, headers=headers)
        return JSONResponse(
            whole_completion(reply, conversation, generation_id), headers=headers
        )

    # Controls

    async def set_fault(self, request: Request) -> Response:
        body = _json_or_none(await request.body())
        if not isinstance(body, dict):
            return openrouter_error(400, "The body must be a JSON object.")
        fault_or_problem = fault_from(body)
        if isinstance(fault_or_problem, str):
            return openrouter_error(400, fault_or_problem)
        fault = fault_or_problem
        self.faults = [f for f in self.faults if f.match != fault.match]
        if fault.mode != "ok":
            self.faults.append(fault)
        log.info("openrouter_simulator.fault_set", mode=fault.mode, match=fault.match)
        return await self.list_faults(request)

    async def list_faults(self, request: Request) -> Response:
        return JSONResponse({"items": [asdict(fault) for fault in self.faults]})

    async def list_requests(self, request: Request) -> Response:
        match = request.query_params.get("match")
        chosen = [
            record
            for record in self.requests
            if match is None or match in record.last_user_message
        ]
        return JSONResponse({"items": [summary(record) for record in chosen]})


def fault_from(body: Mapping[str, Any]) -> Fault | str:
    """The fault a control request asks for, or why it cannot be set."""
    mode = body.get("mode")
    if mode not in FAULT_MODES:
        return f"mode must be one of {', '.join(sorted(FAULT_MODES))}"
    match, times = body.get("match"), body.get("times")
    if match is not None and (not isinstance(match, str) or not match):
        return "match must be a non-empty string"
    if times is not None and (
        not isinstance(times, int) or isinstance(times, bool) or times < 1
    ):
        return "times must be a positive integer"
    retry_after = body.get("retry_after", DEFAULT_RETRY_AFTER_SECONDS)
    if (
        not isinstance(retry_after, int)
        or isinstance(retry_after, bool)
        or retry_after < 0
    ):
        return "retry_after must be a whole number of seconds"
    delay = body.get("delay", DEFAULT_SLOW_DELAY_SECONDS)
    if not isinstance(delay, int | float) or isinstance(delay, bool) or delay < 0:
        return "delay must be a number of seconds"
    return Fault(mode, match, times, retry_after, float(delay))


def fault_response(fault: Fault | None) -> Response | None:
    """The refusal a fault stands for, before any reply is written."""
    if fault is None:
        return None
    if fault.mode == "rate_limit":
        return openrouter_error(
            429,
            "Rate limit exceeded: the simulator was told to refuse this request.",
            metadata={"provider_name": "Simulator"},
            headers={"Retry-After": str(fault.retry_after)},
        )
    if fault.mode == "error_500":
        return openrouter_error(500, "Internal Server Error")
    if fault.mode == "payment_required":
        return openrouter_error(
            402,
            "Insufficient credits. Add more using https://openrouter.ai/credits",
        )
    return None


def whole_completion(
    reply: SimulatedReply, conversation: Conversation, generation_id: str
) -> dict[str, Any]:
    return {
        "id": generation_id,
        "provider": "Simulator",
        "model": conversation.model,
        "object": "chat.completion",
        "created": int(time.time()),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.text},
                "finish_reason": reply.finish_reason,
                "native_finish_reason": reply.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": reply.usage(),
    }


def summary(record: ReceivedRequest) -> dict[str, Any]:
    document = asdict(record)
    document["last_user_message"] = record.last_user_message[:LOGGED_TEXT_LENGTH]
    return document


def new_generation_id() -> str:
    return f"gen-{int(time.time())}-{secrets.token_urlsafe(12)}"


async def hold_until_client_leaves(request: Request) -> bool:
    """Answer nothing until the client disconnects (True) or a minute passes."""
    try:
        async with asyncio.timeout(MAX_HANG_SECONDS):
            await _client_leaves(request.receive)
    except TimeoutError:
        return False
    return True


def _json_or_none(raw: bytes) -> object:
    try:
        return json.loads(raw or b"null")
    except ValueError:
        return None


class MarkSimulated:
    """Adds `X-Simulated: true` to every response, errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"x-simulated", b"true")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_marked)


def create_app(
    *,
    api_key: str,
    token_delay: float = 0.0,
    keepalive_interval: float = DEFAULT_KEEPALIVE_SECONDS,
) -> Starlette:
    simulator = OpenRouterSimulator(api_key, token_delay, keepalive_interval)
    app = Starlette(routes=simulator.routes())
    app.add_middleware(MarkSimulated)
    app.state.simulator = simulator
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.simulators.openrouter",
        description="Serve a local OpenRouter with a simulated model. The API key "
        "is --key or OPENROUTER_API_KEY.",
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--key", default=os.environ.get("OPENROUTER_API_KEY"))
    parser.add_argument(
        "--token-delay", type=float, default=0.0, help="seconds between tokens"
    )
    parser.add_argument(
        "--keepalive-interval",
        type=float,
        default=DEFAULT_KEEPALIVE_SECONDS,
        help="seconds between keep-alive comments while the model pauses",
    )
    args = parser.parse_args(argv)
    if not args.key:
        parser.error("set OPENROUTER_API_KEY or pass --key")
    app = create_app(
        api_key=args.key,
        token_delay=args.token_delay,
        keepalive_interval=args.keepalive_interval,
    )
    log.info("openrouter_simulator.starting", host=args.host, port=args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
