"""The grpc.aio server every service runs.

It serves the service's own servicers plus grpc.health.v1 and server
reflection, and wraps every method with one interceptor that, in order:
binds the request id and method to the log context, works out the caller and
checks the method's access rule, enforces a deadline, maps DomainError (and
anything unexpected) to a gRPC status, and logs failures.
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
    TRACEPARENT_KEY,
    Access,
    CallerVerifier,
    authorize,
    set_current_caller,
)
from libs.grpc.status import STATUS_DETAILS_KEY, to_status_details
from libs.logs import get_logger

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

    def _enter(self, context: Context, method: str, access: Access | None) -> float:
        """Set up the call's context and return its time budget in seconds."""
        metadata = {
            key: value
            for key, value in context.invocation_metadata() or ()
            if isinstance(value, str)
        }
        request_id = metadata.get(REQUEST_ID_KEY) or uuid.uuid4().hex
        structlog.contextvars.bind_contextvars(
            request_id=request_id,
            trace_id=_trace_id(metadata.get(TRACEPARENT_KEY)),
            rpc=method,
        )
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
            started = time.perf_counter()
            try:
                budget = self._enter(context, method, access)
                async with asyncio.timeout(budget):
                    return await behavior(request, context)
            except Exception as exc:
                await _abort(context, exc, started)
                raise  # unreachable: abort raises

        return unary

    def _wrap_stream(
        self,
        behavior: Callable[..., AsyncIterator[Any]],
        method: str,
        access: Access | None,
    ) -> Callable[..., AsyncIterator[Any]]:
        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            started = time.perf_counter()
            try:
                budget = self._enter(context, method, access)
                async with asyncio.timeout(budget):
                    async for message in behavior(request, context):
                        yield message
            except Exception as exc:
                await _abort(context, exc, started)

        return stream


def _trace_id(traceparent: str | None) -> str | None:
    """The trace id of a W3C traceparent header (version-traceid-spanid-flags)."""
    if traceparent and traceparent.count("-") == 3:
        return traceparent.split("-")[1]
    return None


async def _abort(context: Context, exc: BaseException, started: float) -> None:
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    error = _as_domain_error(exc)
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
    return Internal()


def _database_refused(exc: BaseException) -> bool:
    """SQLSTATE class 53 (insufficient resources, e.g. too many clients) or
    57P (the server is shutting down or restarting)."""
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith(("53", "57P"))


def _is_bad_data(exc: BaseException) -> bool:
    """PostgreSQL refused a value itself (SQLSTATE class 22: a NUL byte, an
    out-of-range number, text that is not a UUID): the caller's input, so a
    400, not a 500 — whichever service forgot to check it first."""
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith("22")


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
            options=[
                ("grpc.max_receive_message_length", settings.grpc_max_message_bytes),
                ("grpc.max_send_message_length", settings.grpc_max_message_bytes),
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.keepalive_timeout_ms", 10_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                ("grpc.keepalive_permit_without_calls", 1),
            ],
        )
        self._health = health.aio.HealthServicer()
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
        for name in ["", *names]:
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("grpc.started", port=self.port, services=names)
        return self.port

    async def stop(self, grace: float = 10.0) -> None:
        """Stop taking calls, let in-flight ones finish within `grace`."""
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)
        log.info("grpc.stopped", grace=grace)

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
