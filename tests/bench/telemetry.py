"""What metrics and traces cost per call: `python -m tests.bench.telemetry`.

Three measurements, each the median of several rounds of CPU time per
operation in this process (the machine's other load moves wall-clock
figures far more than the differences measured):

1. The per-call work the gRPC server interceptor added for telemetry, on
   its own: the call's metrics (in flight, latency, count by code) and its
   server span, with tracing off (the API's no-op tracer) and on (the SDK,
   spans dropped by the exporter), with and without a caller's traceparent.
2. The gateway's RequestTelemetryMiddleware around a trivial ASGI app,
   against the app alone, tracing off and on.
3. A whole unary call over loopback gRPC, client and server in this process:
   a bare grpc.aio server against ServiceServer (every interceptor step:
   identity, access rule, deadline, telemetry), tracing off; and the client
   interceptors that tracing on adds to every channel.

The SDK can be set once per process, so every "off" figure is measured
before it is.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from starlette.types import Message, Receive, Scope, Send

from gateway.telemetry import RequestTelemetryMiddleware
from libs.config import Settings
from libs.grpc.identity import Access, CallerVerifier
from libs.grpc.server import ServiceDefinition, ServiceServer, _CallRecord
from libs.grpc.tracing import client_interceptors
from libs.metrics import RpcMetrics
from libs.tokens import TokenSigner
from libs.tracing import configure_tracing, extract, make_current, start_span

ROUNDS = 7
SERVICE = "omnihub.bench.v1.Echo"
SECRET = "bench-telemetry-secret-" + "s" * 32
TRACEPARENT = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}


class _Dropping(SpanExporter):
    """Takes spans and keeps none: the SDK's cost without an exporter's."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _cpu_per_op(operation: Callable[[], object], count: int) -> float:
    """Median CPU microseconds per call of `operation`."""
    rounds = []
    for _ in range(ROUNDS):
        started = time.process_time()
        for _ in range(count):
            operation()
        rounds.append((time.process_time() - started) / count * 1e6)
    return statistics.median(rounds)


async def _cpu_per_call(call: Callable[[], Awaitable[object]], count: int) -> float:
    """Median CPU microseconds per awaited call, 50 at a time."""
    rounds = []
    for _ in range(ROUNDS):
        started = time.process_time()
        for _ in range(count // 50):
            await asyncio.gather(*(call() for _ in range(50)))
        rounds.append((time.process_time() - started) / count * 1e6)
    return statistics.median(rounds)


def _interceptor_telemetry(metadata: dict[str, str]) -> Callable[[], None]:
    metrics = RpcMetrics.of(f"/{SERVICE}/Echo")

    def one_call() -> None:
        record = _CallRecord(metrics)
        record.span = start_span(
            f"{SERVICE}/Echo", trace.SpanKind.SERVER, extract(metadata)
        )
        make_current(record.span)
        record.code = grpc.StatusCode.OK
        record.end()

    return lambda: _in_fresh_context(one_call)


def _in_fresh_context(function: Callable[[], None]) -> None:
    # As in the server, where every call runs in a task with its own context.
    import contextvars

    contextvars.Context().run(function)


async def _trivial_app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _asgi_request(app: Any) -> Callable[[], None]:
    scope: Scope = {
        "type": "http",
        "method": "GET",
        "path": "/bench",
        "headers": [(b"host", b"bench")],
        "client": ("203.0.113.9", 5000),
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        return None

    def one_request() -> None:
        coroutine = app(dict(scope), receive, send)
        try:
            coroutine.send(None)
        except StopIteration:
            return
        raise RuntimeError("the app waited on something")

    return lambda: _in_fresh_context(one_request)


async def _echo(request: bytes, context: Any) -> bytes:
    return request


def _register(servicer: Any, server: grpc.aio.Server) -> None:
    handler: grpc.RpcMethodHandler[Any, Any] = grpc.unary_unary_rpc_method_handler(
        _echo
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"Echo": handler}),)
    )


async def _bare_server() -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    _register(None, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def _our_server() -> tuple[ServiceServer, int]:
    settings = Settings(
        _env_file=None,
        environment="test",
        jwt_secret=SECRET,
        grpc_listen_host="127.0.0.1",
    )
    server = ServiceServer(
        "bench",
        settings,
        CallerVerifier(TokenSigner(SECRET), None),
        [ServiceDefinition(SERVICE, None, _register, {"Echo": Access.PUBLIC})],
    )
    return server, await server.start(0)


async def _calls(port: int, interceptors: list[grpc.aio.ClientInterceptor]) -> float:
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", interceptors=interceptors
    ) as channel:
        echo: Any = channel.unary_unary(f"/{SERVICE}/Echo")
        for _ in range(500):
            await echo(b"x")
        return await _cpu_per_call(lambda: echo(b"x"), 3000)


async def main() -> None:
    results: list[tuple[str, float]] = []
    middleware = RequestTelemetryMiddleware(_trivial_app, trusted_proxies=[])
    bare, bare_port = await _bare_server()
    ours, our_port = await _our_server()

    def measure(label: str, operation: Callable[[], object], count: int) -> None:
        results.append((label, _cpu_per_op(operation, count)))

    measure("interceptor telemetry, tracing off", _interceptor_telemetry({}), 20_000)
    measure(
        "interceptor telemetry, tracing off, caller sent traceparent",
        _interceptor_telemetry(TRACEPARENT),
        20_000,
    )
    measure("trivial ASGI app alone", _asgi_request(_trivial_app), 20_000)
    measure(
        "same app in RequestTelemetryMiddleware, tracing off",
        _asgi_request(middleware),
        20_000,
    )
    results.append(("unary call, bare grpc.aio server", await _calls(bare_port, [])))
    results.append(
        ("unary call, ServiceServer, tracing off", await _calls(our_port, []))
    )

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_Dropping()))
    trace.set_tracer_provider(provider)
    configure_tracing("bench")

    measure("interceptor telemetry, tracing on", _interceptor_telemetry({}), 20_000)
    measure(
        "same app in RequestTelemetryMiddleware, tracing on",
        _asgi_request(middleware),
        20_000,
    )
    results.append(
        (
            "unary call, ServiceServer, tracing on (client and server spans)",
            await _calls(our_port, client_interceptors()),
        )
    )
    await ours.stop(0)
    await bare.stop(0)

    width = max(len(label) for label, _ in results)
    print(f"{'CPU per operation (median of 7 rounds)':<{width}}  microseconds")
    for label, micros in results:
        print(f"{label:<{width}}  {micros:8.1f}")


if __name__ == "__main__":
    asyncio.run(main())
