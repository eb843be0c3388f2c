"""The gateway when the auth service is down or stuck: it answers 503 or 504
with the error shape within its deadline, never hangs and never says 500."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from omnihub.auth.v1 import auth_pb2, auth_pb2_grpc

from libs.config import Settings
from services.auth.main import AuthProcess
from tests.gateway.factories import (
    PASSWORD,
    SignedInUser,
    assert_error,
    extra_gateway,
    register,
    sibling_settings,
)
from tests.suite import ServedApp, free_port, run_service

RPC_TIMEOUT_SECONDS = 1.0
# A refused connection should fail at once; a stuck upstream by the deadline.
UNREACHABLE_BUDGET_SECONDS = 5.0
STUCK_BUDGET_SECONDS = RPC_TIMEOUT_SECONDS + 2.0
STALL_SECONDS = 60.0


class StalledAuth(auth_pb2_grpc.AuthServiceServicer):
    """An auth service that takes calls and never answers them. Only the
    revocation feed answers, so the gateway starts as it would normally."""

    async def ListRevokedSessions(  # noqa: N802 - the generated servicer's names
        self, request: auth_pb2.ListRevokedSessionsRequest, context: Any
    ) -> auth_pb2.ListRevokedSessionsResponse:
        as_of = Timestamp()
        as_of.FromDatetime(datetime.now(UTC))
        return auth_pb2.ListRevokedSessionsResponse(as_of=as_of)

    async def Login(  # noqa: N802 - the generated servicer's names
        self, request: auth_pb2.LoginRequest, context: Any
    ) -> auth_pb2.LoginResponse:
        await asyncio.sleep(STALL_SECONDS)
        return auth_pb2.LoginResponse()

    async def GetMe(  # noqa: N802 - the generated servicer's names
        self, request: auth_pb2.GetMeRequest, context: Any
    ) -> auth_pb2.GetMeResponse:
        await asyncio.sleep(STALL_SECONDS)
        return auth_pb2.GetMeResponse()


async def _timed(
    http: httpx.AsyncClient, method: str, path: str, **kwargs: Any
) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await http.request(method, path, **kwargs)
    return response, time.monotonic() - started


def _login_body(user: SignedInUser) -> dict[str, str]:
    return {"email": user.email, "password": PASSWORD}


@pytest.fixture
async def user(gateway: ServedApp) -> SignedInUser:
    async with gateway.client() as http:
        return await register(http)


@pytest.fixture
async def gateway_to_nowhere(settings: Settings) -> AsyncIterator[ServedApp]:
    nowhere = sibling_settings(settings, auth_address=f"127.0.0.1:{free_port()}")
    async with extra_gateway(nowhere) as gateway:
        yield gateway


@pytest.fixture
async def gateway_to_stalled_auth(settings: Settings) -> AsyncIterator[ServedApp]:
    server = grpc.aio.server()
    # The typed stub marks every method abstract; unlisted ones answer
    # UNIMPLEMENTED at run time, which is all this fake needs.
    stalled_auth = StalledAuth()  # type: ignore[abstract]
    auth_pb2_grpc.add_AuthServiceServicer_to_server(stalled_auth, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    stalled = sibling_settings(
        settings, auth_address=f"127.0.0.1:{port}", rpc_timeout=RPC_TIMEOUT_SECONDS
    )
    try:
        async with extra_gateway(stalled) as gateway:
            yield gateway
    finally:
        await server.stop(grace=0)


@pytest.fixture
async def gateway_to_silent_socket(settings: Settings) -> AsyncIterator[ServedApp]:
    """A gateway whose auth address accepts TCP connections and never speaks
    HTTP/2, so gRPC waits on a handshake that never completes."""
    connections: list[asyncio.StreamWriter] = []

    async def accept(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        connections.append(writer)
        await reader.read()

    port = free_port()
    silent = sibling_settings(
        settings, auth_address=f"127.0.0.1:{port}", rpc_timeout=RPC_TIMEOUT_SECONDS
    )
    listener = await asyncio.start_server(accept, "127.0.0.1", port)
    try:
        async with extra_gateway(silent) as gateway:
            yield gateway
    finally:
        listener.close()
        for writer in connections:
            writer.close()


class TestAuthUnreachable:
    async def test_login_is_unavailable(
        self, gateway_to_nowhere: ServedApp, user: SignedInUser
    ) -> None:
        async with gateway_to_nowhere.client() as http:
            response, elapsed = await _timed(
                http, "POST", "/api/auth/login", json=_login_body(user)
            )

        assert_error(response, 503, "unavailable")
        assert elapsed < UNREACHABLE_BUDGET_SECONDS

    async def test_me_is_unavailable(
        self, gateway_to_nowhere: ServedApp, user: SignedInUser
    ) -> None:
        async with gateway_to_nowhere.client() as http:
            response, elapsed = await _timed(
                http, "GET", "/api/auth/me", headers=user.auth
            )

        assert_error(response, 503, "unavailable")
        assert elapsed < UNREACHABLE_BUDGET_SECONDS

    async def test_auth_stopping_mid_session_is_unavailable(
        self, settings: Settings
    ) -> None:
        own = sibling_settings(settings, auth_address=f"127.0.0.1:{free_port()}")
        auth = await run_service(AuthProcess(), own)
        async with extra_gateway(own) as gateway, gateway.client() as http:
            signed_in = await register(http)
            await auth.stop(grace=0)
            response, elapsed = await _timed(
                http, "GET", "/api/auth/me", headers=signed_in.auth
            )

        assert_error(response, 503, "unavailable")
        assert elapsed < UNREACHABLE_BUDGET_SECONDS


class TestAuthStuck:
    async def test_login_gives_up_at_deadline(
        self, gateway_to_stalled_auth: ServedApp, user: SignedInUser
    ) -> None:
        async with gateway_to_stalled_auth.client() as http:
            response, elapsed = await _timed(
                http, "POST", "/api/auth/login", json=_login_body(user)
            )

        assert_error(response, 504, "deadline_exceeded")
        assert RPC_TIMEOUT_SECONDS <= elapsed < STUCK_BUDGET_SECONDS

    async def test_me_gives_up_at_deadline(
        self, gateway_to_stalled_auth: ServedApp, user: SignedInUser
    ) -> None:
        async with gateway_to_stalled_auth.client() as http:
            response, elapsed = await _timed(
                http, "GET", "/api/auth/me", headers=user.auth
            )

        assert_error(response, 504, "deadline_exceeded")
        assert RPC_TIMEOUT_SECONDS <= elapsed < STUCK_BUDGET_SECONDS

    async def test_silent_socket_fails_within_deadline(
        self, gateway_to_silent_socket: ServedApp, user: SignedInUser
    ) -> None:
        async with gateway_to_silent_socket.client() as http:
            response, elapsed = await _timed(
                http, "POST", "/api/auth/login", json=_login_body(user)
            )

        assert response.status_code in {503, 504}, response.text
        assert_error(response, response.status_code)
        assert elapsed < STUCK_BUDGET_SECONDS
