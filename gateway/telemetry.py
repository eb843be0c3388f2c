"""What the gateway tells operators about the requests it answers.

Prometheus metrics, served at GET /metrics: requests by route template,
method and status, their latency and how many are in flight. Routes are
labelled by their template (`/api/generations/{generation_id}`), never by
the path asked for, so the number of series stays bounded whatever clients
send; a path no route matches is `unmatched`.

A server span per request, named after its route: the root of the request's
trace, or the child of a `traceparent` sent by a trusted proxy (an ingress
that traces). The spans of the gRPC calls made for the request are its
children.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Sequence

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.middleware import request_id_var
from libs.metrics import LATENCY_BUCKETS
from libs.tracing import extract, start_span

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_TRACE_HEADERS = (b"traceparent", b"tracestate")

HTTP_REQUESTS = Counter(
    "omnihub_http_requests",
    "HTTP requests the gateway answered, by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_SECONDS = Histogram(
    "omnihub_http_request_duration_seconds",
    "How long the gateway took over a request, to the end of its body.",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge(
    "omnihub_http_requests_in_flight",
    "Requests the gateway is answering now (event streams included).",
)


class RequestTelemetryMiddleware:
    """Counts and times every HTTP request and runs it inside its span."""

    def __init__(self, app: ASGIApp, trusted_proxies: Sequence[Network]) -> None:
        self.app = app
        self._trusted_proxies = tuple(trusted_proxies)
        self._seconds: dict[tuple[str, str], Histogram] = {}
        self._counts: dict[tuple[str, str, int], Counter] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        span = start_span(method, SpanKind.SERVER, self._parent(scope))
        if span.is_recording():
            span.set_attribute("omnihub.request_id", request_id_var.get())
        traced = span.get_span_context().is_valid
        token = otel_context.attach(trace.set_span_in_context(span)) if traced else None
        status = 500  # unless a response starts: the app failed before one

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        HTTP_IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            HTTP_IN_FLIGHT.dec()
            if token is not None:
                otel_context.detach(token)
            route = route_of(scope)
            self._observe(route, method, status, time.perf_counter() - started)
            _end(span, route, method, status)

    def _parent(self, scope: Scope) -> Context:
        """A trusted proxy's trace context, if it sent one; else an empty
        one (the request starts a trace)."""
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in _TRACE_HEADERS
        }
        if not carrier or not self._from_trusted_proxy(scope):
            return Context()
        return extract(carrier)

    def _from_trusted_proxy(self, scope: Scope) -> bool:
        client = scope.get("client")
        if not client:
            return False
        try:
            peer = ipaddress.ip_address(client[0])
        except ValueError:
            return False
        return any(peer in network for network in self._trusted_proxies)

    def _observe(self, route: str, method: str, status: int, seconds: float) -> None:
        histogram = self._seconds.get((route, method))
        if histogram is None:
            histogram = HTTP_SECONDS.labels(route, method)
            self._seconds[(route, method)] = histogram
        histogram.observe(seconds)
        counter = self._counts.get((route, method, status))
        if counter is None:
            counter = HTTP_REQUESTS.labels(route, method, str(status))
            self._counts[(route, method, status)] = counter
        counter.inc()


def route_of(scope: Scope) -> str:
    """The template of the route that answered (set in the scope by the
    router), or `unmatched`."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED


def _end(span: Span, route: str, method: str, status: int) -> None:
    if span.is_recording():
        span.update_name(f"{method} {route}")
        span.set_attributes(
            {
                "http.request.method": method,
                "http.route": route,
                "http.response.status_code": status,
            }
        )
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
    span.end()


async def metrics(request: Request) -> Response:
    """GET /metrics: this gateway's metrics in Prometheus' text format."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
