"""OpenRouter chat completions: streamed replies for chat, whole replies for
titles and prompt enhancement.

A streamed reply is OpenAI-style server-sent events. The reader keeps a line
buffer, because an event can arrive split across network reads (even inside a
UTF-8 character or between \\r and \\n); it skips SSE comments such as
OpenRouter's `: OPENROUTER PROCESSING` keep-alive; and it stops at
`data: [DONE]`. Usage, with the cost in USD, arrives in the last chunk.

Failures are one exception, OpenRouterError, whose `kind` says what happened:
a refusal before the stream (HTTP 4xx/5xx with OpenRouter's
`{"error": {"code", "message", "metadata"}}` body), an error chunk inside a 200
stream (`upstream`: once the model has started, OpenRouter answers 200 and
reports failures in-band), an unreadable body, a stream that ends without
finishing, or no byte for `timeout` seconds. Keep-alive comments are bytes, so
they keep a slow reply alive.

Nothing is retried once bytes of a reply were received. `complete` sends its
request a second time after a 429, a 5xx or a failed connection, since no
reply was started; `stream` sends it once, and the caller decides.

Local runs and tests point `base_url` at deploy/simulators/openrouter.py; the
code path is the same.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import re
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, TypeAlias

import httpx

from libs.config import Settings
from libs.logs import get_logger

log = get_logger(__name__)

CONNECT_TIMEOUT_SECONDS = 10.0
RETRY_BACKOFF_SECONDS = 0.5
# A 429 asking for a longer wait is passed to the caller instead of waited out.
MAX_RETRY_AFTER_SECONDS = 2.0
LOGGED_MESSAGE_LENGTH = 300
SHOWN_MESSAGE_LENGTH = 200

_MICROS_PER_DOLLAR = Decimal(1_000_000)
_RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_LINE_END = re.compile(r"\r\n|\r|\n")
_DONE = "[DONE]"

_MESSAGES = {
    "rate_limit": "The chat model is receiving too many requests. Try again soon.",
    "unavailable": "The chat model is not reachable right now. Try again.",
    "timeout": "The chat model took too long to answer. Try again.",
    "malformed": "The chat model sent a reply that could not be read.",
    "invalid_request": "The chat model refused the request.",
    "unauthorized": "The chat provider refused this server's API key.",
    "moderation": "The model's moderation flagged this message.",
    "upstream": "The chat model failed while answering. Try again.",
    "payment_required": "Chat is unavailable: the provider account is out of credits.",
    "cut_off": "The chat model's reply was cut off. Try again.",
    "not_configured": "OpenRouter API key not configured",
}


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    # usage.cost (USD) in millionths of a dollar; None when OpenRouter sent none.
    cost_micros: int | None


@dataclass(frozen=True)
class ContentDelta:
    text: str


@dataclass(frozen=True)
class Finished:
    usage: Usage | None
    finish_reason: str | None
    model: str | None
    generation_id: str | None


StreamEvent: TypeAlias = ContentDelta | Finished


@dataclass(frozen=True)
class Completion:
    text: str
    usage: Usage | None
    model: str | None


class OpenRouterError(Exception):
    """A failed call. `kind` is one of rate_limit, unavailable, timeout,
    malformed, invalid_request, unauthorized, upstream, payment_required;
    `message` is a sentence a user may see; `retryable` says whether the same
    request may succeed later; `retry_after` is OpenRouter's Retry-After."""

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return (
            f"OpenRouterError({self.message!r}, kind={self.kind!r}, "
            f"status={self.status!r}, retryable={self.retryable!r})"
        )


class _Malformed(ValueError):
    """A chunk or body is not the document OpenRouter sends."""


class OpenRouterClient:
    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
        referer: str = "https://omnihub.local",
        title: str = "OmniHub",
    ) -> None:
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._api_key = api_key
        self._headers = {"HTTP-Referer": referer, "X-Title": title}
        # httpx applies the read timeout to each network read, which makes it
        # the "no byte for `timeout` seconds" stall limit of a stream.
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(
                timeout, connect=min(timeout, CONNECT_TIMEOUT_SECONDS)
            ),
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenRouterClient:
        key = settings.openrouter_api_key
        return cls(
            base_url=settings.openrouter_base_url,
            api_key=key.get_secret_value() if key is not None else None,
            timeout=settings.openrouter_timeout,
        )

    def __repr__(self) -> str:
        return f"OpenRouterClient(url={self._url!r})"

    async def stream(
        self,
        *,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        max_tokens: int,
        extra: Mapping[str, Any] | None = None,
    ) -> AsyncGenerator[StreamEvent, None]:
        """The reply as ContentDelta events, then exactly one Finished.

        Closing the generator early (aclose, or the task reading it being
        cancelled) closes the HTTP response, which ends the request upstream;
        wrap it in `contextlib.aclosing` so that happens at once.
        """
        body = self._body(model, messages, max_tokens, extra, stream=True)
        response = await self._open_stream(body)
        try:
            async for event in _events_of(response):
                yield event
        finally:
            await response.aclose()

    async def complete(
        self,
        *,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        max_tokens: int,
        extra: Mapping[str, Any] | None = None,
    ) -> Completion:
        body = self._body(model, messages, max_tokens, extra, stream=False)
        response = await self._post_whole(body)
        document = _document_of(response)
        try:
            completion = _completion_from(document)
        except _Malformed as exc:
            raise _malformed(exc) from exc
        _log_usage(completion.model, document.get("id"), completion.usage)
        return completion

    async def close(self) -> None:
        await self._http.aclose()

    def _body(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        max_tokens: int,
        extra: Mapping[str, Any] | None,
        *,
        stream: bool,
    ) -> dict[str, Any]:
        return {
            **(extra or {}),
            "model": model,
            "messages": [dict(message) for message in messages],
            "max_tokens": max_tokens,
            "stream": stream,
            # OpenRouter now always reports usage and calls this a no-op; it
            # is sent so that usage with cost comes even where it is honoured.
            "usage": {"include": True},
        }

    def _request(self, body: Mapping[str, Any], *, stream: bool) -> httpx.Request:
        if self._api_key is None:
            raise OpenRouterError(_MESSAGES["not_configured"], kind="unauthorized")
        headers = {
            **self._headers,
            "Authorization": f"Bearer {self._api_key}",
            "Accept": "text/event-stream" if stream else "application/json",
        }
        return self._http.build_request("POST", self._url, json=body, headers=headers)

    async def _open_stream(self, body: Mapping[str, Any]) -> httpx.Response:
        """The response of a stream that started, or the error it answered."""
        request = self._request(body, stream=True)
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _transport_failure(exc) from exc
        if response.status_code == 200 and not _is_json(response):
            return response
        try:
            await response.aread()
        except httpx.HTTPError as exc:
            raise _transport_failure(exc) from exc
        finally:
            await response.aclose()
        if response.status_code != 200:
            raise _refusal(response)
        # A 200 with a JSON body instead of a stream carries an error or junk.
        raise _in_band(response)

    async def _post_whole(self, body: Mapping[str, Any]) -> httpx.Response:
        """Send the request, and once more after a 429, a 5xx or a failed
        connection: no reply was started, so nothing is paid twice."""
        request = self._request(body, stream=False)
        try:
            response = await self._send_whole(request)
        except httpx.ConnectError as exc:
            log.warning("openrouter.retrying", error=type(exc).__name__)
            await asyncio.sleep(RETRY_BACKOFF_SECONDS)
        else:
            wait = _retry_wait(response)
            if wait is None:
                return response
            log.warning("openrouter.retrying", status=response.status_code, wait=wait)
            await asyncio.sleep(wait)
        try:
            return await self._http.send(request)
        except httpx.HTTPError as exc:
            raise _transport_failure(exc) from exc

    async def _send_whole(self, request: httpx.Request) -> httpx.Response:
        """One attempt; a failed connection is left to the caller to retry."""
        try:
            return await self._http.send(request)
        except httpx.ConnectError:
            raise
        except httpx.HTTPError as exc:
            raise _transport_failure(exc) from exc


def _retry_wait(response: httpx.Response) -> float | None:
    """Seconds to wait before sending a refused request again, or None when
    it should not be sent again."""
    if response.status_code not in _RETRYABLE_STATUSES - {408}:
        return None
    retry_after = _retry_after(response)
    if retry_after is None:
        return RETRY_BACKOFF_SECONDS
    return retry_after if retry_after <= MAX_RETRY_AFTER_SECONDS else None


# Reading a stream


class EventStreamDecoder:
    """Server-sent events from network chunks: returns the `data` of each
    complete event, whatever the chunk boundaries were."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._text = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        self._text += self._decoder.decode(chunk)
        return self._take_lines(final=False)

    def finish(self) -> list[str]:
        """The events left when the stream ended, even one without its blank
        line."""
        self._text += self._decoder.decode(b"", final=True)
        events = self._take_lines(final=True)
        if self._text:
            events += self._read_line(self._text)
            self._text = ""
        if self._data:
            events.append("\n".join(self._data))
            self._data = []
        return events

    def _take_lines(self, *, final: bool) -> list[str]:
        events: list[str] = []
        start = 0
        for match in _LINE_END.finditer(self._text):
            # A \r at the very end may be the first half of a \r\n.
            if match.group() == "\r" and match.end() == len(self._text) and not final:
                break
            events += self._read_line(self._text[start : match.start()])
            start = match.end()
        self._text = self._text[start:]
        return events

    def _read_line(self, line: str) -> list[str]:
        if not line:
            event, self._data = self._data, []
            return ["\n".join(event)] if event else []
        if line.startswith(":"):
            return []  # a comment, e.g. OpenRouter's keep-alive
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value.removeprefix(" "))
        return []


@dataclass
class _ReplyProgress:
    """What the chunks read so far said about the reply."""

    generation_id: str | None
    model: str | None = None
    finish_reason: str | None = None
    usage: Usage | None = None

    def take(self, chunk: Mapping[str, Any]) -> str:
        """Note what a chunk says and return its text."""
        if chunk.get("error") is not None:
            raise _upstream(chunk["error"])
        self.generation_id = self.generation_id or _optional_text(chunk, "id")
        self.model = _optional_text(chunk, "model") or self.model
        if chunk.get("usage") is not None:
            self.usage = _usage_from(chunk["usage"])
        choice = _first_choice(chunk)
        if choice is None:
            return ""
        if choice.get("error") is not None or choice.get("finish_reason") == "error":
            raise _upstream(choice.get("error"))
        self.finish_reason = _optional_text(choice, "finish_reason") or (
            self.finish_reason
        )
        delta = choice.get("delta")
        content = delta.get("content") if isinstance(delta, dict) else None
        return content if isinstance(content, str) else ""

    def finished(self) -> Finished:
        _log_usage(self.model, self.generation_id, self.usage)
        return Finished(self.usage, self.finish_reason, self.model, self.generation_id)


async def _events_of(response: httpx.Response) -> AsyncIterator[StreamEvent]:
    reply = _ReplyProgress(generation_id=response.headers.get("x-generation-id"))
    async for data in _data_of(response):
        if data == _DONE:
            break
        try:
            text = reply.take(_chunk_from(data))
        except _Malformed as exc:
            raise _malformed(exc) from exc
        if text:
            yield ContentDelta(text)
    else:
        if reply.finish_reason is None:
            log.warning("openrouter.stream_cut_off", generation_id=reply.generation_id)
            raise OpenRouterError(_MESSAGES["cut_off"], kind="unavailable")
    yield reply.finished()


async def _data_of(response: httpx.Response) -> AsyncIterator[str]:
    """The data of each event of the stream, in order."""
    decoder = EventStreamDecoder()
    try:
        async for chunk in response.aiter_bytes():
            for data in decoder.feed(chunk):
                yield data
    except httpx.HTTPError as exc:
        raise _transport_failure(exc) from exc
    for data in decoder.finish():
        yield data


def _chunk_from(data: str) -> dict[str, Any]:
    try:
        # Decimal keeps usage.cost exactly as written.
        chunk = json.loads(data, parse_float=Decimal)
    except ValueError as exc:
        raise _Malformed(f"a data line is not JSON: {data[:80]!r}") from exc
    if not isinstance(chunk, dict):
        raise _Malformed("a chunk is not a JSON object")
    return chunk


def _first_choice(document: Mapping[str, Any]) -> dict[str, Any] | None:
    choices = document.get("choices")
    if choices is None or choices == []:
        return None
    if not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise _Malformed("choices is not a list of objects")
    choice: dict[str, Any] = choices[0]
    return choice


# Whole replies


def _document_of(response: httpx.Response) -> dict[str, Any]:
    if response.status_code != 200:
        raise _refusal(response)
    try:
        document = json.loads(response.content, parse_float=Decimal)
    except ValueError as exc:
        raise _malformed(exc) from exc
    if not isinstance(document, dict):
        raise _malformed(_Malformed("the body is not a JSON object"))
    if document.get("error") is not None:
        raise _upstream(document["error"])
    return document


def _completion_from(document: Mapping[str, Any]) -> Completion:
    choice = _first_choice(document)
    if choice is None:
        raise _Malformed("the reply has no choices")
    if choice.get("error") is not None or choice.get("finish_reason") == "error":
        raise _upstream(choice.get("error"))
    message = choice.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    usage = document.get("usage")
    return Completion(
        text=content if isinstance(content, str) else "",
        usage=_usage_from(usage) if usage is not None else None,
        model=_optional_text(document, "model"),
    )


def _usage_from(usage: object) -> Usage:
    if not isinstance(usage, dict):
        raise _Malformed("usage is not an object")
    return Usage(
        prompt_tokens=_count(usage, "prompt_tokens"),
        completion_tokens=_count(usage, "completion_tokens"),
        cost_micros=_micros(usage.get("cost")),
    )


def _count(usage: Mapping[str, Any], name: str) -> int:
    value = usage.get(name, 0)
    # bool is an int to Python, never to OpenRouter.
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _Malformed(f"usage.{name} is not a count")
    return value


def _micros(cost: object) -> int | None:
    """USD as whole millionths of a dollar, half a millionth rounded up."""
    if cost is None:
        return None
    if isinstance(cost, bool) or not isinstance(cost, int | Decimal | str):
        raise _Malformed("usage.cost is not a number")
    try:
        dollars = Decimal(cost)
    except InvalidOperation as exc:
        raise _Malformed("usage.cost is not a number") from exc
    if not dollars.is_finite() or dollars < 0:
        raise _Malformed("usage.cost is not a price")
    micros = (dollars * _MICROS_PER_DOLLAR).quantize(Decimal(1), ROUND_HALF_UP)
    return int(micros)


def _optional_text(document: Mapping[str, Any], name: str) -> str | None:
    value = document.get(name)
    return value if isinstance(value, str) and value else None


def _is_json(response: httpx.Response) -> bool:
    content_type: str = response.headers.get("content-type", "")
    return content_type.startswith("application/json")


def _log_usage(model: str | None, generation_id: object, usage: Usage | None) -> None:
    log.info(
        "openrouter.reply_finished",
        model=model,
        generation_id=generation_id,
        prompt_tokens=usage.prompt_tokens if usage else None,
        completion_tokens=usage.completion_tokens if usage else None,
        cost_micros=usage.cost_micros if usage else None,
    )


# Errors


def _refusal(response: httpx.Response) -> OpenRouterError:
    """The error an HTTP refusal before any reply stands for."""
    status = response.status_code
    message, metadata = _error_details(response)
    log.warning(
        "openrouter.request_refused",
        status=status,
        provider_message=(message or "")[:LOGGED_MESSAGE_LENGTH],
    )
    if status == 429:
        return OpenRouterError(
            _MESSAGES["rate_limit"],
            kind="rate_limit",
            status=status,
            retryable=True,
            retry_after=_retry_after(response),
        )
    if status == 402:
        return OpenRouterError(
            _MESSAGES["payment_required"], kind="payment_required", status=status
        )
    if status in (401, 403):
        flagged = "reasons" in metadata or "flagged_input" in metadata
        shown = _MESSAGES["moderation" if flagged else "unauthorized"]
        return OpenRouterError(shown, kind="unauthorized", status=status)
    if status == 408:
        return OpenRouterError(
            _MESSAGES["timeout"], kind="timeout", status=status, retryable=True
        )
    if 400 <= status < 500:
        return OpenRouterError(
            _shown_refusal(message), kind="invalid_request", status=status
        )
    return OpenRouterError(
        _MESSAGES["unavailable"], kind="unavailable", status=status, retryable=True
    )


def _shown_refusal(provider_message: str | None) -> str:
    """OpenRouter's reason for a 4xx is about the request (model id, context
    length), so the user is shown it."""
    if not provider_message:
        return _MESSAGES["invalid_request"]
    reason = provider_message[:SHOWN_MESSAGE_LENGTH].rstrip(".")
    return f"{_MESSAGES['invalid_request'][:-1]}: {reason}."


def _in_band(response: httpx.Response) -> OpenRouterError:
    """A 200 that answered a stream request with a JSON document."""
    try:
        document = json.loads(response.content)
    except ValueError as exc:
        return _malformed(exc)
    if isinstance(document, dict) and document.get("error") is not None:
        return _upstream(document["error"])
    return _malformed(_Malformed("a JSON body came instead of an event stream"))


def _error_details(response: httpx.Response) -> tuple[str | None, dict[str, Any]]:
    """OpenRouter's `error.message` and `error.metadata`, when it sent them."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return None, {}
    if not isinstance(error, dict):
        return None, {}
    message = error.get("message")
    metadata = error.get("metadata")
    return (
        message if isinstance(message, str) else None,
        metadata if isinstance(metadata, dict) else {},
    )


def _upstream(error: object) -> OpenRouterError:
    """An error OpenRouter reported inside a 200 answer."""
    details = error if isinstance(error, dict) else {}
    code = details.get("code")
    status = code if isinstance(code, int) and not isinstance(code, bool) else None
    message = details.get("message")
    log.warning(
        "openrouter.upstream_error",
        code=code,
        provider_message=str(message)[:LOGGED_MESSAGE_LENGTH],
    )
    return OpenRouterError(
        _MESSAGES["upstream"],
        kind="upstream",
        status=status,
        retryable=status in _RETRYABLE_STATUSES,
    )


def _malformed(exc: Exception) -> OpenRouterError:
    log.warning("openrouter.malformed_reply", error=str(exc)[:LOGGED_MESSAGE_LENGTH])
    return OpenRouterError(_MESSAGES["malformed"], kind="malformed")


def _transport_failure(exc: httpx.HTTPError) -> OpenRouterError:
    log.warning("openrouter.transport_error", error=type(exc).__name__)
    if isinstance(exc, httpx.TimeoutException):
        return OpenRouterError(_MESSAGES["timeout"], kind="timeout", retryable=True)
    return OpenRouterError(_MESSAGES["unavailable"], kind="unavailable", retryable=True)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
