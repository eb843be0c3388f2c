"""Pure ASGI middleware (cheaper than BaseHTTPMiddleware on every request)."""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

import orjson
import structlog
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from libs.flags import MAINTENANCE_MODE, FeatureFlags

REQUEST_ID_HEADER = b"x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")

request_id_var: ContextVar[str] = ContextVar("gateway_request_id", default="")


class RequestIdMiddleware:
    """Takes a sane X-Request-Id or makes one, binds it to the log context and
    echoes it on the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                candidate = value.decode("latin-1")
                if _VALID_REQUEST_ID.match(candidate):
                    request_id = candidate
                break
        request_id = request_id or uuid.uuid4().hex
        request_id_var.set(request_id)
        structlog.contextvars.bind_contextvars(request_id=request_id)
        encoded = request_id.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (REQUEST_ID_HEADER, encoded),
                ]
            await send(message)

        await self.app(scope, receive, send_with_id)


# Far above what a browser sends (its cookies stay under ~8 KB); requests
# beyond these are attacks or mistakes.
MAX_HEADER_COUNT = 100
MAX_HEADER_BYTES = 64 * 1024


class HeaderLimitMiddleware:
    """Refuses requests with too many or too large headers with 431.

    httptools, uvicorn's parser, sets no limit of its own: this keeps such
    requests away from the app."""

    # TODO: the headers are read whole before this runs; bound what is read
    # at the ingress in front (nginx: large_client_header_buffers).

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = scope["headers"]
            size = sum(len(name) + len(value) + 4 for name, value in headers)
            if len(headers) > MAX_HEADER_COUNT or size > MAX_HEADER_BYTES:
                await _send_error(
                    send, 431, "The request headers are too large.", "headers_too_large"
                )
                return
        await self.app(scope, receive, send)


class BodySizeLimitMiddleware:
    """Refuses bodies over `max_bytes` with 413, by header and while reading."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        has_body = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.max_bytes:
                    await _too_large(send, self.max_bytes)
                    return
                has_body = value != b"0"
            elif name == b"transfer-encoding":
                has_body = True
        if not has_body:
            # Nothing to count (most GETs): skip the wrapping.
            await self.app(scope, receive, send)
            return
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI lets HTTPException through its body parsing, so
                    # the app's handler renders this as the usual error shape.
                    raise HTTPException(413, too_large_message(self.max_bytes))
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            response_started = (
                response_started or message["type"] == "http.response.start"
            )
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except HTTPException as exc:
            if exc.status_code != 413 or response_started:
                raise
            await _too_large(send, self.max_bytes)


def too_large_message(max_bytes: int) -> str:
    return f"The request body is larger than {max_bytes // (1024 * 1024)} MB."


async def _too_large(send: Send, max_bytes: int) -> None:
    await _send_error(send, 413, too_large_message(max_bytes), "body_too_large")


async def _send_error(send: Send, status: int, message: str, code: str) -> None:
    body = orjson.dumps(
        {"statusCode": status, "error": message, "message": message, "code": code}
    )
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# While maintenance mode is on these still answer: probes, the operators'
# routes (to turn it off again), the public settings that announce it, the
# API docs, and the providers' webhooks (a payment or a finished generation
# must not be lost to a maintenance window).
MAINTENANCE_OPEN_PATHS = (
    "/healthz",
    "/readyz",
    "/docs",
    "/openapi.json",
    "/api/webhooks/fal",
    "/api/payments/webhook",
)
MAINTENANCE_OPEN_PREFIXES = ("/api/admin/", "/api/settings")


class MaintenanceMiddleware:
    """Answers 503 with the operators' maintenance message while the
    `maintenance_mode` feature flag is on (read from memory: the flags are
    polled in the background, never on a request's path)."""

    def __init__(self, app: ASGIApp, flags: FeatureFlags) -> None:
        self.app = app
        self.flags = flags

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not self.flags.enabled(MAINTENANCE_MODE)
            or _open_during_maintenance(scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        message = self.flags.maintenance_message
        body = orjson.dumps(
            {
                "statusCode": 503,
                "error": message,
                "message": message,
                "code": "maintenance",
            }
        )
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _open_during_maintenance(path: str) -> bool:
    return path in MAINTENANCE_OPEN_PATHS or path.startswith(MAINTENANCE_OPEN_PREFIXES)
