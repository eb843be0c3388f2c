"""The grpc.aio server every service runs.

It serves the service's own servicers plus grpc.health.v1 and server
reflection, and wraps every method with one interceptor that, in order:
binds the request id and method to the log context, opens the call's server
span under the caller's `traceparent`, works out the caller and checks the
method's access rule, refuses Timestamps that name no instant, enforces a
deadline, maps DomainError (and anything unexpected) to a gRPC status, logs
failures, and counts and times the call by method and status code
(libs/metrics).
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode

from libs.config import Settings
from libs.errors import (
    DeadlineExceeded,
    DomainError,
    Internal,
    InvalidArgument,
    Unavailable,
)
from libs.grpc.deadline import set_deadline
from libs.grpc.identity import (
    REQUEST_ID_KEY,
    Access,
    CallerVerifier,
    authorize,
    set_current_caller,
)
from libs.grpc.messages import refuse_invalid_timestamps
from libs.grpc.status import STATUS_DETAILS_KEY, to_status_details
from libs.logs import get_logger
from libs.metrics import MetricsListener, RpcMetrics, listen_host
from libs.tracing import extract, make_current, start_span

log = get_logger(__name__)

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]
    Context = grpc.aio.ServicerContext[Any, Any]

_OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
SLOW_CALL_SECONDS = 1.0


@dataclass
class ServiceDefinition:
    """One servicer, its generated registration function and access rules.

    `access` maps each method name (e.g. "Login") to who may call it; every
    method of the service must appear, or calls to it are refused.
    """

    full_name: str
    servicer: object
    register: Callable[[Any, grpc.aio.Server], None]
    access: Mapping[str, Access] = field(default_factory=dict)


class _CallRecord:
    """One call's span, and its count and latency once it ends."""

    __slots__ = ("_metrics", "_started", "code", "span")

    def __init__(self, metrics: RpcMetrics) -> None:
        self._metrics = metrics
        self._started = time.perf_counter()
        self.span: Span = INVALID_SPAN
        # Until the call ends otherwise: the caller went away and the
        # handler was cancelled.
        self.code = grpc.StatusCode.CANCELLED
        metrics.in_flight.inc()

    @property
    def started(self) -> float:
        return self._started

    def end(self) -> None:
        self._metrics.in_flight.dec()
        self._metrics.seconds.observe(time.perf_counter() - self._started)
        self._metrics.handled(self.code).inc()
        if self.span.is_recording():
            self.span.set_attribute("rpc.grpc.status_code", self.code.value[0])
            if self.code is not grpc.StatusCode.OK:
                self.span.set_status(Status(StatusCode.ERROR, self.code.name))
        self.span.end()


class _ServiceInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        verifier: CallerVerifier,
        rules: Mapping[str, Access],
        max_timeout: float,
    ) -> None:
        self._verifier = verifier
        self._rules = rules
        self._max_timeout = max_timeout
        self._metrics: dict[str, RpcMetrics] = {}

    def _record(self, method: str) -> _CallRecord:
        metrics = self._metrics.get(method)
        if metrics is None:
            metrics = self._metrics[method] = RpcMetrics.of(method)
        return _CallRecord(metrics)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(_OPEN_SERVICES):
            return handler
        access = self._rules.get(method)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, method, access),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(
                    handler.unary_stream,  # type: ignore[arg-type]
                    method,
                    access,
                ),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _enter(
        self,
        context: Context,
        method: str,
        access: Access | None,
        record: _CallRecord,
    ) -> float:
        """Set up the call's context and return its time budget in seconds."""
        metadata = {
            key: value
            for key, value in context.invocation_metadata() or ()
            if isinstance(value, str)
        }
        request_id = metadata.get(REQUEST_ID_KEY) or uuid.uuid4().hex
        structlog.contextvars.bind_contextvars(request_id=request_id, rpc=method)
        record.span = _server_span(method, metadata, request_id)
        make_current(record.span)
        caller = self._verifier.caller_from_metadata(metadata)
        set_current_caller(caller)
        if access is None:
            log.error("rpc.no_access_rule", method=method)
            raise Internal()
        authorize(caller, access)
        remaining = context.time_remaining()
        budget = (
            self._max_timeout
            if remaining is None
            else min(remaining, self._max_timeout)
        )
        set_deadline(budget)
        return budget

    def _wrap_unary(
        self,
        behavior: Callable[..., Awaitable[Any]],
        method: str,
        access: Access | None,
    ) -> Callable[..., Awaitable[Any]]:
        async def unary(request: Any, context: Context) -> Any:
            record = self._record(method)
            try:
                budget = self._enter(context, method, access, record)
                refuse_invalid_timestamps(request)
                async with asyncio.timeout(budget):
                    response = await behavior(request, context)
                record.code = grpc.StatusCode.OK
                return response
            except Exception as exc:
                error = _as_domain_error(exc)
                record.code = error.grpc_status
                await _abort(context, error, exc, record.started)
                raise  # unreachable: abort raises
            finally:
                record.end()

        return unary

    def _wrap_stream(
        self,
        behavior: Callable[..., AsyncIterator[Any]],
        method: str,
        access: Access | None,
    ) -> Callable[..., AsyncIterator[Any]]:
        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            record = self._record(method)
            try:
                budget = self._enter(context, method, access, record)
                refuse_invalid_timestamps(request)
                async with asyncio.timeout(budget):
                    async for message in behavior(request, context):
                        yield message
                record.code = grpc.StatusCode.OK
            except Exception as exc:
                error = _as_domain_error(exc)
                record.code = error.grpc_status
                await _abort(context, error, exc, record.started)
            finally:
                record.end()

        return stream


def _server_span(method: str, metadata: Mapping[str, str], request_id: str) -> Span:
    """The call's span, a child of the caller's span when it sent one."""
    span = start_span(method.lstrip("/"), SpanKind.SERVER, extract(metadata))
    if span.is_recording():
        service, _, name = method.lstrip("/").rpartition("/")
        span.set_attributes(
            {
                "rpc.system": "grpc",
                "rpc.service": service,
                "rpc.method": name,
                "omnihub.request_id": request_id,
            }
        )
    return span


async def _abort(
    context: Context, error: DomainError, exc: BaseException, started: float
) -> None:
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    if isinstance(error, Internal):
        log.error("rpc.failed", elapsed_ms=elapsed_ms, exc_info=exc)
    else:
        log.info("rpc.refused", code=error.code, elapsed_ms=elapsed_ms)
    await context.abort(
        error.grpc_status,
        error.message,
        trailing_metadata=((STATUS_DETAILS_KEY, to_status_details(error)),),
    )


def _as_domain_error(exc: BaseException) -> DomainError:
    if isinstance(exc, DomainError):
        return exc
    if isinstance(exc, TimeoutError):
        return DeadlineExceeded()
    if _is_bad_data(exc):
        return InvalidArgument("The request contains a value that cannot be stored.")
    if getattr(exc, "connection_invalidated", False) or _database_refused(exc):
        # The database connection broke (the pool is already replaced) or
        # the server is out of connections or shutting down: try again.
        return Unavailable()
    if isinstance(exc, ConnectionError):
        # A connection refused or reset under us, as when the database stops
        # taking connections (the driver raises these unwrapped): try again.
        return Unavailable()
    return Internal()


def _database_refused(exc: BaseException) -> bool:
    """SQLSTATE class 08 (the connection failed or closed, also while it was
    being opened), 53 (insufficient resources, e.g. too many clients) or 57P
    (the server is shutting down or restarting)."""
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith(("08", "53", "57P"))


def _is_bad_data(exc: BaseException) -> bool:
    """PostgreSQL refused a value itself (SQLSTATE class 22: a NUL byte, an
    out-of-range number, text that is not a UUID): the caller's input, so a
    400, not a 500 — whichever service forgot to check it first."""
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith("22")


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """Channel arguments of a service's server: message sizes, keepalive and
    connection age (see the GRPC_* settings)."""
    options = [
        ("grpc.max_receive_message_length", settings.grpc_max_message_bytes),
        ("grpc.max_send_message_length", settings.grpc_max_message_bytes),
        ("grpc.keepalive_time_ms", _ms(settings.grpc_keepalive_time)),
        ("grpc.keepalive_timeout_ms", _ms(settings.grpc_keepalive_timeout)),
        # See channel_options in libs/grpc/client.py.
        ("grpc.http2.ping_timeout_ms", _ms(settings.grpc_keepalive_timeout)),
        # Clients' pings are accepted this often, also on idle connections.
        (
            "grpc.http2.min_ping_interval_without_data_ms",
            _ms(settings.grpc_min_ping_interval),
        ),
        (
            "grpc.keepalive_permit_without_calls",
            int(settings.grpc_keepalive_without_calls),
        ),
    ]
    if settings.grpc_max_connection_age > 0:
        # gRPC adds +/-10% jitter, so clients do not all reconnect at once;
        # calls under way may finish (the grace period is unlimited).
        options.append(
            ("grpc.max_connection_age_ms", _ms(settings.grpc_max_connection_age))
        )
    return options


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


class ServiceServer:
    """Builds, starts and gracefully stops one service's gRPC server."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        verifier: CallerVerifier,
        services: list[ServiceDefinition],
    ) -> None:
        self.name = name
        self._settings = settings
        self._services = services
        rules = {
            f"/{service.full_name}/{method}": access
            for service in services
            for method, access in service.access.items()
        }
        self._server = grpc.aio.server(
            interceptors=[
                _ServiceInterceptor(verifier, rules, settings.rpc_max_timeout)
            ],
            options=server_options(settings),
        )
        self._health = health.aio.HealthServicer()
        self._metrics: MetricsListener | None = None
        self.port = 0

    async def start(self, port: int, host: str | None = None) -> int:
        for service in self._services:
            service.register(service.servicer, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        names = [service.full_name for service in self._services]
        reflection.enable_server_reflection(
            [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], self._server
        )
        self.port = self._server.add_insecure_port(
            f"{host or self._settings.grpc_listen_host}:{port}"
        )
        await self._server.start()
        if self._settings.metrics_port is not None:
            self._metrics = MetricsListener.start(
                self._settings.metrics_port, host or listen_host(self._settings)
            )
        for name in ["", *names]:
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("grpc.started", port=self.port, services=names)
        return self.port

    async def stop(self, grace: float = 10.0) -> None:
        """Stop taking calls, let in-flight ones finish within `grace`."""
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)
        if self._metrics is not None:
            self._metrics.stop()
        log.info("grpc.stopped", grace=grace)

    @property
    def metrics_port(self) -> int | None:
        return self._metrics.port if self._metrics is not None else None

    async def wait_for_termination(self) -> None:
        await self._server.wait_for_termination()


async def run_until_signalled(server: ServiceServer, grace: float = 10.0) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(grace)
