"""gRPC connections for scale: keepalive, connection age and per-method
deadlines, from the settings to what gRPC then does on real connections.

The keepalive test freezes a server process (SIGSTOP): its sockets stay
open, so only keepalive pings can tell that nothing answers any more.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from omnihub.auth.v1 import auth_pb2, auth_pb2_grpc
from pydantic import ValidationError

from libs.config import Settings
from libs.grpc.client import (
    METHOD_TIMEOUTS,
    Upstreams,
    channel_options,
    service_descriptor,
)
from libs.grpc.deadline import set_deadline
from libs.grpc.identity import Access, CallerVerifier
from libs.grpc.server import ServiceDefinition, ServiceServer, server_options
from libs.tokens import InternalTokenSource, TokenSigner
from tests.database import ROOT
from tests.suite import free_port

SECRET = "connections-test-secret-" + "s" * 32
PEER_SERVICE = "omnihub.test.v1.Peer"
# Keepalive fast enough for a test: a silent peer is found in about a second.
QUICK_KEEPALIVE: dict[str, Any] = {
    "grpc_keepalive_time": 0.5,
    "grpc_keepalive_timeout": 0.5,
    "grpc_min_ping_interval": 0.5,
}


def _settings(**values: Any) -> Settings:
    return Settings(_env_file=None, environment="test", jwt_secret=SECRET, **values)


def _upstreams(settings: Settings) -> Upstreams:
    return Upstreams(settings, InternalTokenSource(TokenSigner(SECRET), "tests", 60))


class TestKeepaliveSettings:
    def test_channels_ping_as_configured(self) -> None:
        settings = _settings(grpc_keepalive_time=45, grpc_keepalive_timeout=5)

        options = dict(channel_options(settings, "auth"))

        assert options["grpc.keepalive_time_ms"] == 45_000
        assert options["grpc.keepalive_timeout_ms"] == 5_000
        assert options["grpc.http2.ping_timeout_ms"] == 5_000
        assert options["grpc.keepalive_permit_without_calls"] == 1
        assert options["grpc.http2.max_pings_without_data"] == 0

    def test_idle_pings_can_be_turned_off(self) -> None:
        settings = _settings(grpc_keepalive_without_calls=False)

        options = dict(channel_options(settings, "auth"))

        assert options["grpc.keepalive_permit_without_calls"] == 0

    def test_servers_accept_pings_at_the_minimum_interval(self) -> None:
        settings = _settings(grpc_min_ping_interval=20, grpc_keepalive_time=20)

        options = dict(server_options(settings))

        assert options["grpc.http2.min_ping_interval_without_data_ms"] == 20_000
        assert options["grpc.keepalive_permit_without_calls"] == 1

    def test_clients_may_not_ping_faster_than_servers_allow(self) -> None:
        with pytest.raises(ValidationError, match="GRPC_KEEPALIVE_TIME"):
            _settings(grpc_keepalive_time=5, grpc_min_ping_interval=10)

    def test_connection_age_is_limited_unless_zero(self) -> None:
        assert dict(server_options(_settings()))["grpc.max_connection_age_ms"] == (
            300_000
        )
        assert "grpc.max_connection_age_ms" not in dict(
            server_options(_settings(grpc_max_connection_age=0))
        )


FROZEN_PEER = """
import asyncio, sys
import grpc
from omnihub.auth.v1 import auth_pb2
from libs.config import Settings
from libs.grpc.server import server_options

async def login(request, context):
    return auth_pb2.LoginResponse()

async def main():
    settings = Settings(
        _env_file=None, grpc_keepalive_time=0.5, grpc_keepalive_timeout=0.5,
        grpc_min_ping_interval=0.5,
    )
    server = grpc.aio.server(options=server_options(settings))
    handler = grpc.unary_unary_rpc_method_handler(
        login,
        request_deserializer=auth_pb2.LoginRequest.FromString,
        response_serializer=auth_pb2.LoginResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "omnihub.auth.v1.AuthService", {"Login": handler}),))
    server.add_insecure_port("127.0.0.1:" + sys.argv[1])
    await server.start()
    print("serving", flush=True)
    await server.wait_for_termination()

asyncio.run(main())
"""


@pytest.fixture
async def peer_process() -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        FROZEN_PEER,
        str(port),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'protos'}"},
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
    assert line.strip() == b"serving"
    yield process, port
    process.send_signal(signal.SIGCONT)
    process.kill()
    await process.wait()


class TestKeepaliveBehaviour:
    async def test_call_to_a_frozen_peer_fails_fast_instead_of_hanging(
        self, peer_process: tuple[asyncio.subprocess.Process, int]
    ) -> None:
        process, port = peer_process
        upstreams = _upstreams(
            _settings(auth_address=f"127.0.0.1:{port}", **QUICK_KEEPALIVE)
        )
        stub = auth_pb2_grpc.AuthServiceStub(upstreams.channel("auth"))
        try:
            await stub.Login(auth_pb2.LoginRequest(), timeout=5)
            process.send_signal(signal.SIGSTOP)
            started = time.monotonic()

            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Login(auth_pb2.LoginRequest(), timeout=10)

            elapsed = time.monotonic() - started
        finally:
            await upstreams.close()
        # Without keepalive the call would wait out its 10 s deadline.
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        assert elapsed < 5


class Peer:
    async def peer(self, request: bytes, context: Any) -> bytes:
        return str(context.peer()).encode()


def _register(peer: Any, server: grpc.aio.Server) -> None:
    handler: grpc.RpcMethodHandler[Any, Any] = grpc.unary_unary_rpc_method_handler(
        peer.peer
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(PEER_SERVICE, {"Peer": handler}),)
    )


class TestConnectionAge:
    async def test_clients_reconnect_when_a_connection_is_old(self) -> None:
        # The reconnection is what makes a client resolve a dns:/// name
        # again and find replicas started since it connected.
        settings = _settings(grpc_listen_host="127.0.0.1", grpc_max_connection_age=0.3)
        server = ServiceServer(
            "peer",
            settings,
            CallerVerifier(TokenSigner(SECRET), None),
            [
                ServiceDefinition(
                    PEER_SERVICE, Peer(), _register, {"Peer": Access.PUBLIC}
                )
            ],
        )
        port = await server.start(0)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call: Any = channel.unary_unary(f"/{PEER_SERVICE}/Peer")
                first = await call(b"", timeout=5)
                await asyncio.sleep(1.0)
                later = await call(b"", timeout=5)
        finally:
            await server.stop(grace=0)

        assert first != later  # another client port: another connection


class TestMethodTimeouts:
    def test_every_entry_names_a_method_that_exists(self) -> None:
        for name in METHOD_TIMEOUTS:
            service, _, method = name.lstrip("/").rpartition("/")
            if service == "grpc.health.v1.Health":
                assert method == "Check"
                continue
            package = service.split(".")[1]
            descriptor = service_descriptor(package)
            assert descriptor.full_name == service
            assert method in descriptor.methods_by_name

    def test_a_method_listed_gets_its_own_deadline(self) -> None:
        upstreams = _upstreams(_settings(rpc_timeout=7.5))
        watch = "/omnihub.generation.v1.GenerationService/WatchGeneration"

        timeout = contextvars.copy_context().run(upstreams.timeout, watch)

        assert timeout == METHOD_TIMEOUTS[watch]

    def test_other_methods_get_rpc_timeout(self) -> None:
        upstreams = _upstreams(_settings(rpc_timeout=7.5))

        timeout = contextvars.copy_context().run(
            upstreams.timeout, "/omnihub.auth.v1.AuthService/GetMe"
        )

        assert timeout == 7.5

    def test_a_methods_deadline_is_capped_by_the_call_being_served(self) -> None:
        upstreams = _upstreams(_settings())

        def inside_a_call() -> float:
            set_deadline(0.5)
            return upstreams.timeout(
                "/omnihub.generation.v1.GenerationService/WatchGeneration"
            )

        assert 0.4 < contextvars.copy_context().run(inside_a_call) <= 0.5
