"""The ServiceServer every service runs, over real gRPC on loopback.

It serves a probe service built for these tests: each method shows one thing
the interceptor must do (check a rule, keep a deadline, hide a crash), so a
failure points at the interceptor rather than at some service's logic.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from datetime import datetime
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from libs import errors
from libs.config import Settings
from libs.grpc.deadline import remaining
from libs.grpc.identity import (
    AUTHORIZATION_KEY,
    INTERNAL_TOKEN_KEY,
    Access,
    CallerVerifier,
    current_caller,
)
from libs.grpc.server import ServiceDefinition, ServiceServer
from libs.grpc.status import from_rpc_error
from libs.revocation import RevocationBatch, RevocationList
from libs.tokens import Audience, TokenSigner
from tests.suite import free_port

SERVICE = "omnihub.test.v1.Probe"
SECRET = "server-test-secret-" + "s" * 32
MAX_TIMEOUT = 1.0
LEAKY_TEXT = "postgres password hunter2"

Context = grpc.aio.ServicerContext[bytes, bytes]

ACCESS = {
    "Public": Access.PUBLIC,
    "Whoami": Access.USER,
    "AdminOnly": Access.ADMIN,
    "ServiceOnly": Access.SERVICE,
    "Sleep": Access.PUBLIC,
    "Remaining": Access.PUBLIC,
    "Crash": Access.PUBLIC,
    "Refuse": Access.PUBLIC,
    "ReadDatabase": Access.PUBLIC,
    "ReadClosingDatabase": Access.PUBLIC,
    "Count": Access.PUBLIC,
    "CrashMidStream": Access.PUBLIC,
    # "Unruled" and "UnruledStream" are served but deliberately have no rule.
}


class Probe:
    def __init__(self) -> None:
        self.ran: list[str] = []
        self.sleep_started = asyncio.Event()
        self.sleep_cancelled = asyncio.Event()

    async def public(self, request: bytes, context: Context) -> bytes:
        return b"ok"

    async def whoami(self, request: bytes, context: Context) -> bytes:
        return current_caller().user_id.encode()

    async def admin_only(self, request: bytes, context: Context) -> bytes:
        return current_caller().admin_id.encode()

    async def service_only(self, request: bytes, context: Context) -> bytes:
        return (current_caller().service or "").encode()

    async def unruled(self, request: bytes, context: Context) -> bytes:
        self.ran.append("Unruled")
        return b"ran"

    async def sleep(self, request: bytes, context: Context) -> bytes:
        self.sleep_started.set()
        try:
            await asyncio.sleep(float(request.decode()))
        except asyncio.CancelledError:
            self.sleep_cancelled.set()
            raise
        return b"slept"

    async def remaining(self, request: bytes, context: Context) -> bytes:
        return str(remaining(100.0)).encode()

    async def crash(self, request: bytes, context: Context) -> bytes:
        raise RuntimeError(LEAKY_TEXT)

    async def refuse(self, request: bytes, context: Context) -> bytes:
        raise errors.NotFound("No such probe.")

    async def read_database(self, request: bytes, context: Context) -> bytes:
        """A read from a database that refuses connections (nothing listens
        on the port), as PostgreSQL does while it restarts."""
        await _read_one(free_port())
        return b"read"

    async def read_closing_database(self, request: bytes, context: Context) -> bytes:
        """A read from a database that closes each new connection before it
        is open, as a server going down does."""

        async def close_at_once(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            await reader.read(8)  # the start of the startup message
            writer.close()

        server = await asyncio.start_server(close_at_once, "127.0.0.1", 0)
        try:
            await _read_one(server.sockets[0].getsockname()[1])
        finally:
            server.close()
        return b"read"

    async def count(self, request: bytes, context: Context) -> AsyncIterator[bytes]:
        for number in range(3):
            yield str(number).encode()

    async def crash_mid_stream(
        self, request: bytes, context: Context
    ) -> AsyncIterator[bytes]:
        yield b"first"
        raise RuntimeError(LEAKY_TEXT)

    async def unruled_stream(
        self, request: bytes, context: Context
    ) -> AsyncIterator[bytes]:
        self.ran.append("UnruledStream")
        yield b"ran"


async def _read_one(port: int) -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/omnihub"
    engine = create_async_engine(url, connect_args={"ssl": False})
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    finally:
        await engine.dispose()


def _register(probe: Any, server: grpc.aio.Server) -> None:
    unary = {
        "Public": probe.public,
        "Whoami": probe.whoami,
        "AdminOnly": probe.admin_only,
        "ServiceOnly": probe.service_only,
        "Unruled": probe.unruled,
        "Sleep": probe.sleep,
        "Remaining": probe.remaining,
        "Crash": probe.crash,
        "Refuse": probe.refuse,
        "ReadDatabase": probe.read_database,
        "ReadClosingDatabase": probe.read_closing_database,
    }
    streams = {
        "Count": probe.count,
        "CrashMidStream": probe.crash_mid_stream,
        "UnruledStream": probe.unruled_stream,
    }
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        **{
            name: grpc.unary_unary_rpc_method_handler(behaviour)
            for name, behaviour in unary.items()
        },
        **{
            name: grpc.unary_stream_rpc_method_handler(behaviour)
            for name, behaviour in streams.items()
        },
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, handlers),)
    )


async def _no_revocations(since: datetime | None) -> RevocationBatch:
    return RevocationBatch([], datetime.now().astimezone())


class ProbeServer:
    def __init__(self) -> None:
        self.signer = TokenSigner(SECRET)
        self.revocations = RevocationList(
            _no_revocations, poll_interval=60, retention_seconds=60
        )
        settings = Settings(
            _env_file=None,
            environment="test",
            jwt_secret=SECRET,
            rpc_max_timeout=MAX_TIMEOUT,
            grpc_listen_host="127.0.0.1",
        )
        self.probe = Probe()
        self.server = ServiceServer(
            "probe",
            settings,
            CallerVerifier(self.signer, self.revocations),
            [ServiceDefinition(SERVICE, self.probe, _register, ACCESS)],
        )

    async def start(self) -> str:
        port = await self.server.start(0, host="127.0.0.1")
        return f"127.0.0.1:{port}"

    def user_token(self, session_id: str = "session-1") -> str:
        return self.signer.issue(Audience.USER, "user-7", 60, session_id=session_id)

    def admin_token(self) -> str:
        return self.signer.issue(Audience.ADMIN, "admin-3", 60, session_id="s-a")

    def internal_token(self) -> str:
        return self.signer.issue(Audience.INTERNAL, "gateway", 60)


@pytest.fixture(scope="module")
async def probe_server() -> AsyncIterator[tuple[ProbeServer, grpc.aio.Channel]]:
    served = ProbeServer()
    address = await served.start()
    async with grpc.aio.insecure_channel(address) as channel:
        yield served, channel
    await served.server.stop(grace=0)


async def call(
    channel: grpc.aio.Channel,
    method: str,
    request: bytes = b"",
    *,
    metadata: tuple[tuple[str, str], ...] = (),
    deadline: float | None = 10,
) -> bytes:
    unary: Any = channel.unary_unary(f"/{SERVICE}/{method}")
    reply: bytes = await unary(request, metadata=metadata, timeout=deadline)
    return reply


async def refused(
    channel: grpc.aio.Channel,
    method: str,
    request: bytes = b"",
    *,
    metadata: tuple[tuple[str, str], ...] = (),
    deadline: float | None = 10,
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(channel, method, request, metadata=metadata, deadline=deadline)
    return caught.value


def open_stream(
    channel: grpc.aio.Channel,
    method: str,
    *,
    metadata: tuple[tuple[str, str], ...] = (),
) -> AsyncIterable[bytes]:
    streaming: Any = channel.unary_stream(f"/{SERVICE}/{method}")
    stream: AsyncIterable[bytes] = streaming(b"", metadata=metadata, timeout=10)
    return stream


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return ((AUTHORIZATION_KEY, f"Bearer {token}"),)


def internal(token: str) -> tuple[tuple[str, str], ...]:
    return ((INTERNAL_TOKEN_KEY, token),)


Served = tuple[ProbeServer, grpc.aio.Channel]


class TestAccessRules:
    async def test_method_without_rule_is_refused_before_it_runs(
        self, probe_server: Served
    ) -> None:
        served, channel = probe_server

        error = await refused(
            channel, "Unruled", metadata=internal(served.internal_token())
        )

        assert error.code() is not grpc.StatusCode.OK
        assert "Unruled" not in served.probe.ran

    async def test_streaming_method_without_rule_is_refused_before_it_runs(
        self, probe_server: Served
    ) -> None:
        served, channel = probe_server
        stream = open_stream(
            channel, "UnruledStream", metadata=internal(served.internal_token())
        )

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _drain(stream, into=[])

        assert caught.value.code() is not grpc.StatusCode.OK
        assert "UnruledStream" not in served.probe.ran

    async def test_public_method_needs_no_credentials(
        self, probe_server: Served
    ) -> None:
        _, channel = probe_server

        assert await call(channel, "Public") == b"ok"

    async def test_user_method_sees_the_verified_user(
        self, probe_server: Served
    ) -> None:
        served, channel = probe_server

        reply = await call(channel, "Whoami", metadata=bearer(served.user_token()))

        assert reply == b"user-7"

    async def test_user_method_without_credentials_is_unauthenticated(
        self, probe_server: Served
    ) -> None:
        _, channel = probe_server

        error = await refused(channel, "Whoami")

        assert error.code() is grpc.StatusCode.UNAUTHENTICATED

    async def test_user_method_with_only_a_service_token_is_unauthenticated(
        self, probe_server: Served
    ) -> None:
        # The service is known, the person on whose behalf it calls is not.
        served, channel = probe_server

        error = await refused(
            channel, "Whoami", metadata=internal(served.internal_token())
        )

        assert error.code() is grpc.StatusCode.UNAUTHENTICATED

    async def test_user_method_with_admin_token_is_permission_denied(
        self, probe_server: Served
    ) -> None:
        served, channel = probe_server

        error = await refused(channel, "Whoami", metadata=bearer(served.admin_token()))

        assert error.code() is grpc.StatusCode.PERMISSION_DENIED

    async def test_admin_method_with_user_token_is_permission_denied(
        self, probe_server: Served
    ) -> None:
        served, channel = probe_server

        error = await refused(
            channel, "AdminOnly", metadata=bearer(served.user_token())
        )

        assert error.code() is grpc.StatusCode.PERMISSION_DENIED

    async def test_service_method_with_internal_token_sees_the_service(
        self, probe_server: Served
    ) -> None:
        served, channel = probe_server

        reply = await call(
            channel, "ServiceOnly", metadata=internal(served.internal_token())
        )

        assert reply == b"gateway"

    async def test_service_method_with_user_token_is_permission_denied(
        self, probe_server: Served
    ) -> None:
        served, channel = probe_server

        error = await refused(
            channel, "ServiceOnly", metadata=bearer(served.user_token())
        )

        assert error.code() is grpc.StatusCode.PERMISSION_DENIED

    async def test_user_token_posing_as_internal_token_is_refused(
        self, probe_server: Served
    ) -> None:
        served, channel = probe_server

        error = await refused(
            channel, "ServiceOnly", metadata=internal(served.user_token())
        )

        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        assert isinstance(from_rpc_error(error), errors.InvalidToken)

    async def test_token_of_another_secret_is_refused(
        self, probe_server: Served
    ) -> None:
        _, channel = probe_server
        foreign = TokenSigner("another-secret-" + "x" * 32).issue(
            Audience.USER, "user-7", 60, session_id="session-1"
        )

        error = await refused(channel, "Whoami", metadata=bearer(foreign))

        assert isinstance(from_rpc_error(error), errors.InvalidToken)

    async def test_token_of_revoked_session_is_refused(
        self, probe_server: Served
    ) -> None:
        served, channel = probe_server
        token = served.user_token(session_id="session-revoked")
        served.revocations.add("session-revoked")

        error = await refused(channel, "Whoami", metadata=bearer(token))

        assert isinstance(from_rpc_error(error), errors.InvalidToken)


class TestDeadlines:
    async def test_server_cuts_a_call_at_its_own_maximum(
        self, probe_server: Served
    ) -> None:
        # The client allows 10 s; the server allows no call more than 1 s.
        _, channel = probe_server
        started = asyncio.get_running_loop().time()

        error = await refused(channel, "Sleep", b"5", deadline=10)

        elapsed = asyncio.get_running_loop().time() - started
        assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert isinstance(from_rpc_error(error), errors.DeadlineExceeded)
        assert MAX_TIMEOUT * 0.9 <= elapsed < MAX_TIMEOUT + 1.5

    async def test_work_stops_when_the_callers_deadline_passes(
        self, probe_server: Served
    ) -> None:
        served, channel = probe_server
        served.probe.sleep_cancelled.clear()

        error = await refused(channel, "Sleep", b"5", deadline=0.3)

        assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        await asyncio.wait_for(served.probe.sleep_cancelled.wait(), timeout=1.0)

    async def test_outgoing_calls_get_what_is_left_of_the_callers_deadline(
        self, probe_server: Served
    ) -> None:
        _, channel = probe_server

        left = float(await call(channel, "Remaining", deadline=0.8))

        # The deadline travels as a rounded grpc-timeout header.
        assert 0.3 < left <= 0.81

    async def test_outgoing_calls_are_capped_by_the_servers_maximum(
        self, probe_server: Served
    ) -> None:
        _, channel = probe_server

        left = float(await call(channel, "Remaining", deadline=None))

        assert 0.5 < left <= MAX_TIMEOUT


class TestFailures:
    async def test_domain_error_keeps_its_status_and_code(
        self, probe_server: Served
    ) -> None:
        _, channel = probe_server

        error = await refused(channel, "Refuse")

        assert error.code() is grpc.StatusCode.NOT_FOUND
        rebuilt = from_rpc_error(error)
        assert type(rebuilt) is errors.NotFound
        assert rebuilt.message == "No such probe."

    async def test_unexpected_exception_is_internal_without_its_text(
        self, probe_server: Served
    ) -> None:
        _, channel = probe_server

        error = await refused(channel, "Crash")

        assert error.code() is grpc.StatusCode.INTERNAL
        assert error.details() == errors.Internal.default_message
        assert not _mentions(error, "hunter2")

    async def test_a_database_refusing_connections_is_unavailable(
        self, probe_server: Served
    ) -> None:
        _, channel = probe_server

        error = await refused(channel, "ReadDatabase")

        assert error.code() is grpc.StatusCode.UNAVAILABLE

    async def test_a_database_closing_new_connections_is_unavailable(
        self, probe_server: Served
    ) -> None:
        _, channel = probe_server

        error = await refused(channel, "ReadClosingDatabase")

        assert error.code() is grpc.StatusCode.UNAVAILABLE

    async def test_stream_is_served_in_order(self, probe_server: Served) -> None:
        _, channel = probe_server
        stream = open_stream(channel, "Count")

        received = [message async for message in stream]

        assert received == [b"0", b"1", b"2"]

    async def test_stream_failing_midway_is_internal_without_its_text(
        self, probe_server: Served
    ) -> None:
        _, channel = probe_server
        stream = open_stream(channel, "CrashMidStream")
        received: list[bytes] = []

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _drain(stream, into=received)

        assert received == [b"first"]
        assert caught.value.code() is grpc.StatusCode.INTERNAL
        assert not _mentions(caught.value, "hunter2")


async def _drain(stream: AsyncIterable[bytes], into: list[bytes]) -> None:
    async for message in stream:
        into.append(message)


def _mentions(error: grpc.aio.AioRpcError, text: str) -> bool:
    values = [error.details() or ""]
    for _key, value in error.trailing_metadata() or ():
        values.append(
            value.decode(errors="replace") if isinstance(value, bytes) else value
        )
    return any(text in value for value in values)


class TestOpenServices:
    @pytest.mark.parametrize("service", ["", SERVICE])
    async def test_health_answers_serving_without_credentials(
        self, probe_server: Served, service: str
    ) -> None:
        _, channel = probe_server

        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )

        assert response.status == health_pb2.HealthCheckResponse.SERVING

    async def test_health_of_unknown_service_is_not_found(
        self, probe_server: Served
    ) -> None:
        _, channel = probe_server

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="omnihub.nope.v1.Nope"),
                timeout=5,
            )

        assert caught.value.code() is grpc.StatusCode.NOT_FOUND

    async def test_reflection_lists_the_services(self, probe_server: Served) -> None:
        _, channel = probe_server
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)

        replies = [
            reply
            async for reply in stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                timeout=5,
            )
        ]

        names = {s.name for s in replies[0].list_services_response.service}
        assert {SERVICE, "grpc.health.v1.Health"} <= names


class TestShutdown:
    async def test_call_in_flight_finishes_during_graceful_stop(self) -> None:
        served = ProbeServer()
        address = await served.start()
        async with grpc.aio.insecure_channel(address) as channel:
            in_flight = asyncio.create_task(call(channel, "Sleep", b"0.3"))
            await asyncio.wait_for(served.probe.sleep_started.wait(), timeout=5)

            await served.server.stop(grace=3)

            assert await in_flight == b"slept"
            error = await refused(channel, "Public", deadline=2)
            assert error.code() is grpc.StatusCode.UNAVAILABLE
