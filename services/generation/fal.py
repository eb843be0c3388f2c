"""fal.ai's queue API and the webhooks it signs.

A generation is one queue job: `submit` posts the payload and keeps the
status, response and cancel URLs fal answers with (they name the model's
owner/app only, never its sub-path, so they are used as given and never
built here); `status` follows the job, `result` fetches its outputs and
`cancel` asks fal to drop it. A job that failed still ends `COMPLETED`:
the failure shows when the result is fetched, as an error status or a body
with `detail`/`error`, and surfaces here as a `FalError` whose
`error_type` is the platform's error category.

Submitting is never retried (a second POST is a second paid job); the GETs
and the cancel PUT are retried briefly on 429, 5xx, timeouts and lost
connections. Webhooks are ED25519-signed by fal and checked against fal's
published key set by `WebhookVerifier`.

Docs: https://fal.ai/docs/model-endpoints/queue,
https://docs.fal.ai/model-apis/model-endpoints/webhooks,
https://fal.ai/docs/errors.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from libs.config import Settings
from libs.logs import get_logger

log = get_logger(__name__)

T = TypeVar("T")

# Pauses between attempts of a status, result or cancel call.
RETRY_DELAYS = (0.2, 0.5)
DETAIL_LIMIT = 1000
REASON_LIMIT = 200
JWKS_MAX_AGE_SECONDS = 24 * 3600
# A signature no cached key verifies makes the verifier refetch the key set
# (fal rotated its keys), but not more often than this, so forged webhooks
# cannot turn us into a flood of requests to fal's key endpoint.
JWKS_REFETCH_INTERVAL_SECONDS = 60.0
JWKS_TIMEOUT_SECONDS = 10.0
QUEUE_STATES = frozenset({"IN_QUEUE", "IN_PROGRESS", "COMPLETED"})

CONTENT_WORDS = ("content", "moderation", "policy", "nsfw", "safety")
TIMEOUT_WORDS = ("timeout", "timed out")
CANCEL_WORDS = ("cancelled", "canceled")
RATE_LIMIT_WORDS = ("rate limit", "too many")
SERVER_WORDS = ("server error", "internal")

USER_MESSAGES = {
    "content_violation": "The provider's content checker refused this request.",
    "invalid_input": "The provider rejected the request's settings.",
    "timeout": "The provider took too long to answer.",
    "cancelled": "The request was cancelled.",
    "rate_limit": "The provider is busy right now.",
    "api_error": "The provider had an error on its side.",
    "unknown": "The provider could not complete the request.",
}


class FalError(Exception):
    """A fal call that failed, with the platform's error category.

    `message` is a short sentence fit to show the user; `detail` is fal's
    own body (cut to 1000 characters) for the error log; `retryable` says
    whether trying the same call again later may succeed.
    """

    def __init__(
        self,
        message: str,
        *,
        error_type: str,
        status: int | None = None,
        detail: str = "",
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.status = status
        self.detail = detail[:DETAIL_LIMIT]
        self.retryable = retryable


@dataclass(frozen=True)
class Submission:
    """What fal answered to a submit: where to follow the job."""

    request_id: str
    status_url: str
    response_url: str
    cancel_url: str
    queue_position: int | None
    simulated: bool


@dataclass(frozen=True)
class QueueStatus:
    state: str
    queue_position: int | None
    progress: str | None
    error: str | None


@dataclass(frozen=True)
class Outputs:
    urls: list[str]
    thumbnail_url: str | None
    media: str


def categorize(status: int | None, message: str) -> str:
    """The platform's error category for a failed provider call.

    The spec's table, first match wins, with two additions: fal's input
    validation status 422 is `invalid_input` (unless the message is about
    content, as fal's content_policy_violation errors are), and a message
    about cancellation beats the bare HTTP 400 rule, because fal answers a
    cancelled job's result with a 400.
    """
    text = message.lower()
    if _mentions(text, CONTENT_WORDS):
        return "content_violation"
    if _mentions(text, CANCEL_WORDS):
        return "cancelled"
    if status == 400:
        return "content_violation"
    if status == 422:
        return "invalid_input"
    if _mentions(text, TIMEOUT_WORDS):
        return "timeout"
    if status == 429 or _mentions(text, RATE_LIMIT_WORDS):
        return "rate_limit"
    if (status is not None and status >= 500) or _mentions(text, SERVER_WORDS):
        return "api_error"
    return "unknown"


def _mentions(text: str, words: Sequence[str]) -> bool:
    return any(word in text for word in words)


def error_reason(body: object, *, for_people: bool = False) -> str:
    """fal's explanation inside an error body, as one line.

    fal answers either a list of typed input errors under `detail`
    (`{"loc": ["body", "prompt"], "msg": ..., "type": ...}`), or a flat
    `{"detail": "...", "error_type": "..."}` for infrastructure failures;
    webhooks and some models use `error`. `for_people` keeps only the
    messages fal writes to be shown to users.
    """
    if not isinstance(body, Mapping):
        return ""
    parts: list[str] = []
    detail = body.get("detail")
    if isinstance(detail, str):
        parts.append(detail)
    elif isinstance(detail, list):
        typed = [_typed_error(item, with_type=not for_people) for item in detail[:5]]
        parts.extend(text for text in typed if text)
    if for_people and parts:
        return "; ".join(parts)
    for key in ("error", "error_type"):
        value = body.get(key)
        if isinstance(value, str) and value:
            parts.append(value)
    return "; ".join(parts)


def _typed_error(item: object, *, with_type: bool) -> str:
    if not isinstance(item, Mapping):
        return ""
    loc = item.get("loc")
    # The first element says where the field sits ("body"), not which it is.
    where = ".".join(str(part) for part in loc[1:]) if isinstance(loc, list) else ""
    message = str(item.get("msg") or "")
    kind = item.get("type")
    text = f"{where}: {message}" if where else message
    if with_type and isinstance(kind, str) and kind:
        return f"{text} ({kind})"
    return text


def failure_from(
    status: int | None, body_text: str, *, retryable: bool | None = None
) -> FalError:
    """The FalError for an error answer from fal (or a failed webhook)."""
    try:
        body: object = json.loads(body_text) if body_text else None
    except ValueError:
        body = None
    reason = error_reason(body) or body_text[:REASON_LIMIT]
    error_type = categorize(status, reason)
    message = USER_MESSAGES[error_type]
    if error_type == "invalid_input" and reason:
        # fal's `msg` texts are written to be shown to people.
        shown = error_reason(body, for_people=True) or reason
        message = f"{message[:-1]}: {shown[:REASON_LIMIT].rstrip('.')}."
    if retryable is None:
        retryable = status is not None and (status == 429 or status >= 500)
    return FalError(
        message,
        error_type=error_type,
        status=status,
        detail=body_text,
        retryable=retryable,
    )


def outputs_from_payload(payload: Mapping[str, Any]) -> Outputs:
    """The media URLs in a finished job's payload: `images[].url` in order,
    else `image.url`, else `video.url` (with its thumbnail when given)."""
    images = payload.get("images")
    if isinstance(images, list):
        urls = [url for url in (_url_of(image) for image in images) if url]
        if urls:
            return Outputs(urls=urls, thumbnail_url=None, media="image")
    image_url = _url_of(payload.get("image"))
    if image_url:
        return Outputs(urls=[image_url], thumbnail_url=None, media="image")
    video = payload.get("video")
    video_url = _url_of(video)
    if video_url and isinstance(video, Mapping):
        thumbnail = video.get("thumbnail_url")
        return Outputs(
            urls=[video_url],
            thumbnail_url=thumbnail if isinstance(thumbnail, str) else None,
            media="video",
        )
    raise FalError(
        "The provider's answer held no image or video.",
        error_type="unknown",
        detail=json.dumps(payload, default=str)[:DETAIL_LIMIT],
    )


def _url_of(item: object) -> str | None:
    if isinstance(item, str) and item:
        return item
    if isinstance(item, Mapping):
        url = item.get("url")
        if isinstance(url, str) and url:
            return url
    return None


class FalClient:
    """fal's queue API over HTTP, one connection pool per process."""

    def __init__(
        self,
        *,
        queue_url: str,
        key: str | None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._queue_url = queue_url.rstrip("/")
        self._origin = _origin(self._queue_url)
        headers = {"Authorization": f"Key {key}"} if key else {}
        self._http = httpx.AsyncClient(
            headers=headers, timeout=timeout, transport=transport
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> FalClient:
        key = settings.fal_key.get_secret_value() if settings.fal_key else None
        return cls(
            queue_url=settings.fal_queue_url, key=key, timeout=settings.fal_timeout
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def submit(
        self,
        endpoint: str,
        payload: Mapping[str, Any],
        *,
        webhook_url: str | None = None,
    ) -> Submission:
        """Queue one job. Never retried: if this raises, fal may or may not
        hold the job, and posting again could run (and bill) it twice."""
        params = {"fal_webhook": webhook_url} if webhook_url else None
        url = f"{self._queue_url}/{endpoint.strip('/')}"
        try:
            response = await self._http.post(url, json=dict(payload), params=params)
        except httpx.HTTPError as error:
            # Repeating a submit that may have reached fal could queue the
            # job twice, so only a connection never made is retryable.
            retryable = not _may_have_arrived(error)
            raise _transport_failure(error, retryable=retryable) from error
        if response.status_code >= 400:
            raise failure_from(response.status_code, response.text)
        submission = _submission_from(response)
        log.info(
            "fal.submitted",
            endpoint=endpoint,
            request_id=submission.request_id,
            queue_position=submission.queue_position,
            simulated=submission.simulated,
        )
        return submission

    async def status(self, status_url: str) -> QueueStatus:
        """Where the job is. fal answers 202 while it waits or runs and 200
        once done; both carry the same body."""
        self._check_origin(status_url)
        body = await self._with_retries(
            lambda: self._get_json(status_url, params={"logs": "1"})
        )
        return _queue_status_from(body)

    async def result(self, response_url: str) -> Outputs:
        """The finished job's media; a failed job raises its FalError."""
        self._check_origin(response_url)
        body = await self._with_retries(lambda: self._get_json(response_url))
        if body.get("detail") or body.get("error"):
            raise failure_from(None, json.dumps(body, default=str), retryable=False)
        return outputs_from_payload(body)

    async def cancel(self, cancel_url: str) -> str:
        """Ask fal to drop the job; answers fal's word for what happened:
        CANCELLATION_REQUESTED, ALREADY_COMPLETED or NOT_FOUND."""
        self._check_origin(cancel_url)
        state = await self._with_retries(lambda: self._put_cancel(cancel_url))
        log.info("fal.cancel_requested", answer=state)
        return state

    async def _get_json(
        self, url: str, params: Mapping[str, str] | None = None
    ) -> Mapping[str, Any]:
        try:
            response = await self._http.get(url, params=params)
        except httpx.HTTPError as error:
            raise _transport_failure(error, retryable=True) from error
        if response.status_code >= 400:
            raise failure_from(response.status_code, response.text)
        return _json_object(response)

    async def _put_cancel(self, url: str) -> str:
        try:
            response = await self._http.put(url)
        except httpx.HTTPError as error:
            raise _transport_failure(error, retryable=True) from error
        # fal answers "already completed" with a 400 that is not a failure.
        if response.status_code < 500 and response.status_code != 429:
            with_state = _cancel_state(response)
            if with_state is not None:
                return with_state
        raise failure_from(response.status_code, response.text)

    async def _with_retries(self, attempt: Callable[[], Awaitable[T]]) -> T:
        for delay in (*RETRY_DELAYS, None):
            try:
                return await attempt()
            except FalError as error:
                if not error.retryable or delay is None:
                    raise
                log.warning(
                    "fal.retrying",
                    error_type=error.error_type,
                    status=error.status,
                    delay=delay,
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _check_origin(self, url: str) -> None:
        """Our key goes only to the queue host it was configured for."""
        if _origin(url) != self._origin:
            raise FalError(
                "The provider answered with an unexpected address.",
                error_type="api_error",
                detail=f"URL outside {self._origin}: {url}",
            )


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _may_have_arrived(error: httpx.HTTPError) -> bool:
    """Whether fal may have received the request before it failed."""
    return not isinstance(error, httpx.ConnectError | httpx.ConnectTimeout)


def _transport_failure(error: httpx.HTTPError, *, retryable: bool) -> FalError:
    """A timeout or a lost connection."""
    timed_out = isinstance(error, httpx.TimeoutException)
    return FalError(
        "The provider took too long to answer."
        if timed_out
        else "The provider could not be reached.",
        error_type="timeout" if timed_out else "api_error",
        detail=f"{type(error).__name__}: {error}",
        retryable=retryable,
    )


def _json_object(response: httpx.Response) -> Mapping[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise FalError(
            "The provider sent an answer we could not read.",
            error_type="api_error",
            status=response.status_code,
            detail=response.text,
            retryable=True,
        )
    return body


def _submission_from(response: httpx.Response) -> Submission:
    try:
        body = _json_object(response)
    except FalError as error:
        # The job may be queued; without its id nothing can follow it.
        raise FalError(
            error.message,
            error_type=error.error_type,
            status=error.status,
            detail=error.detail,
        ) from error
    fields = [body.get(name) for name in ("request_id", "status_url")]
    fields += [body.get(name) for name in ("response_url", "cancel_url")]
    if not all(isinstance(value, str) and value for value in fields):
        raise FalError(
            "The provider accepted the request without saying where to follow it.",
            error_type="api_error",
            status=response.status_code,
            detail=response.text,
        )
    request_id, status_url, response_url, cancel_url = (str(v) for v in fields)
    return Submission(
        request_id=request_id,
        status_url=status_url,
        response_url=response_url,
        cancel_url=cancel_url,
        queue_position=_optional_int(body.get("queue_position")),
        simulated=response.headers.get("x-simulated", "").lower() == "true",
    )


def _queue_status_from(body: Mapping[str, Any]) -> QueueStatus:
    state = body.get("status")
    if state not in QUEUE_STATES:
        raise FalError(
            "The provider sent an answer we could not read.",
            error_type="api_error",
            detail=json.dumps(body, default=str),
            retryable=True,
        )
    error = body.get("error")
    return QueueStatus(
        state=str(state),
        queue_position=_optional_int(body.get("queue_position")),
        progress=_last_log_message(body.get("logs")),
        error=str(error) if error else None,
    )


def _last_log_message(logs: object) -> str | None:
    if not isinstance(logs, list):
        return None
    for entry in reversed(logs):
        if isinstance(entry, Mapping) and isinstance(entry.get("message"), str):
            return str(entry["message"])
    return None


def _cancel_state(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    state = body.get("status") if isinstance(body, dict) else None
    return state if isinstance(state, str) and state else None


def _optional_int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


# Webhooks


class WebhookRejected(Exception):
    """A webhook that is not provably fal's, fresh and ours; the message
    says which check failed."""


class WebhookKeysUnavailable(WebhookRejected):
    """fal's key set could not be fetched, so nothing can be verified; the
    delivery should be answered so that fal tries again later."""


@dataclass(frozen=True)
class WebhookEvent:
    request_id: str
    ok: bool
    payload: Mapping[str, Any] | None
    error: str | None

    def outputs(self) -> Outputs:
        """The media of a successful job (FalError if it holds none)."""
        return outputs_from_payload(self.payload or {})

    def failure(self) -> FalError:
        """The FalError a failed job's webhook stands for. fal names the
        HTTP status in `error` ("Invalid status code: 422") and puts the
        model's error body in `payload`."""
        status = _status_in(self.error or "")
        body = json.dumps(
            {"error": self.error, **dict(self.payload or {})}, default=str
        )
        return failure_from(status, body, retryable=False)


def _status_in(text: str) -> int | None:
    digits = [word for word in text.replace(":", " ").split() if word.isdigit()]
    for word in digits:
        if 400 <= int(word) <= 599:
            return int(word)
    return None


@dataclass(frozen=True)
class _SignedHeaders:
    request_id: str
    user_id: str
    timestamp: str
    signature: bytes


class WebhookVerifier:
    """Checks fal's ED25519 webhook signatures against fal's JWKS.

    The signed message is the request id, user id and timestamp headers and
    the hex SHA-256 of the raw body, joined by newlines; any key in the set
    may have signed it. Keys are cached for up to a day and refetched once
    when none of them verifies a signature (fal rotated them).
    """

    def __init__(
        self,
        *,
        jwks_url: str,
        user_id: str | None,
        max_age_seconds: int = 300,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._jwks_url = jwks_url
        self._user_id = user_id
        self._max_age = max_age_seconds
        self._clock = clock
        self._http = httpx.AsyncClient(
            timeout=JWKS_TIMEOUT_SECONDS, transport=transport
        )
        self._keys: list[Ed25519PublicKey] = []
        self._fetched_at: float | None = None
        self._fetch_lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookVerifier:
        return cls(jwks_url=settings.fal_jwks_url, user_id=settings.fal_user_id)

    async def close(self) -> None:
        await self._http.aclose()

    async def verify(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        """The event in a webhook delivery, or WebhookRejected."""
        signed = _signed_headers(headers)
        if self._user_id is not None and signed.user_id != self._user_id:
            raise WebhookRejected("the webhook was signed for another fal account")
        self._check_fresh(signed.timestamp)
        message = "\n".join(
            (
                signed.request_id,
                signed.user_id,
                signed.timestamp,
                hashlib.sha256(body).hexdigest(),
            )
        ).encode()
        if not await self._signature_holds(message, signed.signature):
            raise WebhookRejected("no fal key verifies the webhook signature")
        event = _event_from(body)
        if event.request_id != signed.request_id:
            raise WebhookRejected("the body names another request than the headers")
        return event

    def _check_fresh(self, timestamp: str) -> None:
        try:
            sent_at = int(timestamp)
        except ValueError:
            raise WebhookRejected("the webhook timestamp is not a number") from None
        if abs(self._clock() - sent_at) > self._max_age:
            raise WebhookRejected("the webhook timestamp is too old or in the future")

    async def _signature_holds(self, message: bytes, signature: bytes) -> bool:
        keys = await self._current_keys()
        if _any_verifies(keys, message, signature):
            return True
        refreshed = await self._refetch_after_miss(keys)
        return refreshed is not None and _any_verifies(refreshed, message, signature)

    async def _current_keys(self) -> list[Ed25519PublicKey]:
        async with self._fetch_lock:
            age = self._age()
            if age is None or age > JWKS_MAX_AGE_SECONDS:
                await self._fetch_keys(keep_stale=age is not None)
            return self._keys

    async def _refetch_after_miss(
        self, tried: list[Ed25519PublicKey]
    ) -> list[Ed25519PublicKey] | None:
        """Fetch the key set again after a signature none of `tried`
        verified, unless it was fetched moments ago; None if nothing new."""
        async with self._fetch_lock:
            if self._keys is not tried:
                # Another delivery refetched while this one waited.
                return self._keys
            age = self._age()
            if age is not None and age < JWKS_REFETCH_INTERVAL_SECONDS:
                return None
            await self._fetch_keys(keep_stale=True)
            return self._keys

    def _age(self) -> float | None:
        if self._fetched_at is None:
            return None
        return self._clock() - self._fetched_at

    async def _fetch_keys(self, *, keep_stale: bool) -> None:
        try:
            response = await self._http.get(self._jwks_url)
            response.raise_for_status()
            keys = _ed25519_keys(response.json())
        except (httpx.HTTPError, ValueError) as error:
            log.warning("fal.jwks_fetch_failed", error=type(error).__name__)
            if keep_stale and self._keys:
                return
            raise WebhookKeysUnavailable(
                "fal's webhook signing keys could not be fetched"
            ) from error
        self._keys = keys
        self._fetched_at = self._clock()
        log.info("fal.jwks_fetched", keys=len(keys))


def _signed_headers(headers: Mapping[str, str]) -> _SignedHeaders:
    lowered = {name.lower(): value for name, value in headers.items()}
    names = ("request-id", "user-id", "timestamp", "signature")
    values = [lowered.get(f"x-fal-webhook-{name}", "").strip() for name in names]
    if not all(values):
        raise WebhookRejected("the webhook lacks fal's signature headers")
    try:
        signature = bytes.fromhex(values[3])
    except ValueError:
        raise WebhookRejected("the webhook signature is not hex") from None
    return _SignedHeaders(values[0], values[1], values[2], signature)


def _any_verifies(
    keys: Sequence[Ed25519PublicKey], message: bytes, signature: bytes
) -> bool:
    for key in keys:
        try:
            key.verify(signature, message)
        except InvalidSignature:
            continue
        return True
    return False


def _ed25519_keys(document: object) -> list[Ed25519PublicKey]:
    """The Ed25519 keys of a JWKS document; other key types are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document")
    keys = []
    for entry in document["keys"]:
        if not isinstance(entry, dict):
            continue
        if entry.get("kty") != "OKP" or entry.get("crv") != "Ed25519":
            continue
        encoded = entry.get("x")
        if not isinstance(encoded, str):
            continue
        try:
            raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            keys.append(Ed25519PublicKey.from_public_bytes(raw))
        except (binascii.Error, ValueError):
            continue
    return keys


def _event_from(body: bytes) -> WebhookEvent:
    try:
        document = json.loads(body)
    except ValueError:
        raise WebhookRejected("the webhook body is not JSON") from None
    if not isinstance(document, dict):
        raise WebhookRejected("the webhook body is not a JSON object")
    request_id, status = document.get("request_id"), document.get("status")
    if not isinstance(request_id, str) or status not in ("OK", "ERROR"):
        raise WebhookRejected("the webhook body lacks request_id or status")
    payload = document.get("payload")
    error = document.get("error") or document.get("payload_error")
    return WebhookEvent(
        request_id=request_id,
        ok=status == "OK",
        payload=payload if isinstance(payload, dict) else None,
        error=str(error) if error else None,
    )
