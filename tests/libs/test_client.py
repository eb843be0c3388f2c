"""Upstreams: the channels, deadlines and metadata of outgoing calls.

Retries are checked against a real gRPC server that speaks the auth service's
protocol and answers UNAVAILABLE a set number of times, because that is the
only way to see what the channel's service config makes gRPC do.
"""

from __future__ import annotations

import contextvars
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from omnihub.auth.v1 import auth_pb2, auth_pb2_grpc

from libs.config import Settings
from libs.grpc.client import Upstreams, service_config, service_descriptor
from libs.grpc.deadline import set_deadline
from libs.grpc.identity import AUTHORIZATION_KEY, INTERNAL_TOKEN_KEY, REQUEST_ID_KEY
from libs.tokens import Audience, InternalTokenSource, TokenSigner
from tests.suite import SERVICES

SECRET = "client-test-secret-" + "s" * 32
AUTH_SERVICE = "omnihub.auth.v1.AuthService"

METHODS: dict[str, tuple[type[Message], Message]] = {
    "GetMe": (auth_pb2.GetMeRequest, auth_pb2.GetMeResponse(user=auth_pb2.User())),
    "ListSessions": (auth_pb2.ListSessionsRequest, auth_pb2.ListSessionsResponse()),
    "ListRevokedSessions": (
        auth_pb2.ListRevokedSessionsRequest,
        auth_pb2.ListRevokedSessionsResponse(),
    ),
    "Login": (auth_pb2.LoginRequest, auth_pb2.LoginResponse()),
}


class FlakyAuth:
    """Answers `failures[method]` calls with `failure_code`, then succeeds."""

    def __init__(self) -> None:
        self.failures: Counter[str] = Counter()
        self.failure_code = grpc.StatusCode.UNAVAILABLE
        self.attempts: Counter[str] = Counter()
        self.metadata: list[dict[str, str]] = []
        self.server = grpc.aio.server()
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                self._behaviour(name, reply),
                request_deserializer=request_type.FromString,
                response_serializer=type(reply).SerializeToString,
            )
            for name, (request_type, reply) in METHODS.items()
        }
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(AUTH_SERVICE, handlers),)
        )

    def _behaviour(self, name: str, reply: Message) -> Callable[..., Any]:
        async def behaviour(request: Message, context: Any) -> Message:
            self.attempts[name] += 1
            self.metadata.append(dict(context.invocation_metadata()))
            if self.failures[name] > 0:
                self.failures[name] -= 1
                await context.abort(self.failure_code, "flaky")
            return reply

        return behaviour

    def reset(self) -> None:
        self.failures.clear()
        self.attempts.clear()
        self.metadata.clear()
        self.failure_code = grpc.StatusCode.UNAVAILABLE


def _settings(**values: Any) -> Settings:
    return Settings(_env_file=None, environment="test", jwt_secret=SECRET, **values)


def _upstreams(settings: Settings) -> Upstreams:
    tokens = InternalTokenSource(TokenSigner(SECRET), "gateway", 60)
    return Upstreams(settings, tokens)


@pytest.fixture(scope="module")
async def flaky() -> AsyncIterator[tuple[FlakyAuth, Upstreams]]:
    auth = FlakyAuth()
    port = auth.server.add_insecure_port("127.0.0.1:0")
    await auth.server.start()
    upstreams = _upstreams(_settings(auth_address=f"127.0.0.1:{port}"))
    yield auth, upstreams
    await upstreams.close()
    await auth.server.stop(0)


@pytest.fixture
def auth(flaky: tuple[FlakyAuth, Upstreams]) -> FlakyAuth:
    flaky[0].reset()
    return flaky[0]


@pytest.fixture
def stub(flaky: tuple[FlakyAuth, Upstreams]) -> auth_pb2_grpc.AuthServiceAsyncStub:
    return auth_pb2_grpc.AuthServiceStub(flaky[1].channel("auth"))


def _request(method: str) -> Message:
    return METHODS[method][0]()


class TestServiceConfig:
    def test_auth_retries_exactly_its_side_effect_free_methods(self) -> None:
        config = json.loads(service_config(service_descriptor("auth")))

        (policy,) = config["methodConfig"]
        assert {name["method"] for name in policy["name"]} == {
            "GetMe",
            "ListSessions",
            "ListRevokedSessions",
            "LookupUsers",
            "GetProfile",
            # Operators' requests (the admin service): reads, and changes
            # keyed by the admin task that asks for them.
            "ListUsers",
            "GetUser",
            "SetUserStatus",
            "DeleteUserData",
            "ListAdmins",
            "CreateAdmin",
            "UpdateAdmin",
            # Signups by day for the admin dashboard (a read).
            "SummarizeUsers",
        }
        assert {name["service"] for name in policy["name"]} == {AUTH_SERVICE}
        assert policy["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]

    @pytest.mark.parametrize("service", SERVICES)
    def test_every_service_is_balanced_per_call(self, service: str) -> None:
        config = json.loads(service_config(service_descriptor(service)))

        assert config["loadBalancingConfig"] == [{"round_robin": {}}]


class TestRetries:
    @pytest.mark.parametrize("method", ["GetMe", "ListSessions", "ListRevokedSessions"])
    async def test_side_effect_free_call_is_retried_on_unavailable(
        self, auth: FlakyAuth, stub: Any, method: str
    ) -> None:
        auth.failures[method] = 2

        await getattr(stub, method)(_request(method), timeout=5)

        assert auth.attempts[method] == 3

    async def test_login_is_not_retried(self, auth: FlakyAuth, stub: Any) -> None:
        auth.failures["Login"] = 1

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Login(auth_pb2.LoginRequest(), timeout=5)

        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        assert auth.attempts["Login"] == 1

    async def test_retries_give_up_after_three_attempts(
        self, auth: FlakyAuth, stub: Any
    ) -> None:
        auth.failures["GetMe"] = 10

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetMe(auth_pb2.GetMeRequest(), timeout=5)

        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        assert auth.attempts["GetMe"] == 3

    async def test_other_failures_are_not_retried(
        self, auth: FlakyAuth, stub: Any
    ) -> None:
        auth.failures["GetMe"] = 1
        auth.failure_code = grpc.StatusCode.INTERNAL

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetMe(auth_pb2.GetMeRequest(), timeout=5)

        assert caught.value.code() is grpc.StatusCode.INTERNAL
        assert auth.attempts["GetMe"] == 1


class TestMetadata:
    async def test_calls_carry_the_internal_token_of_this_process(
        self, auth: FlakyAuth, stub: Any, flaky: tuple[FlakyAuth, Upstreams]
    ) -> None:
        upstreams = flaky[1]

        await stub.GetMe(
            auth_pb2.GetMeRequest(),
            timeout=5,
            metadata=upstreams.metadata(
                authorization="Bearer user-token", request_id="req-42"
            ),
        )

        (received,) = auth.metadata
        claims = TokenSigner(SECRET).verify(
            received[INTERNAL_TOKEN_KEY], Audience.INTERNAL
        )
        assert claims.subject == "gateway"
        assert received[AUTHORIZATION_KEY] == "Bearer user-token"
        assert received[REQUEST_ID_KEY] == "req-42"

    def test_absent_caller_details_are_left_out(self) -> None:
        upstreams = _upstreams(_settings())

        keys = [key for key, _ in upstreams.metadata()]

        assert keys == [INTERNAL_TOKEN_KEY]


class TestChannelsAndDeadlines:
    async def test_one_channel_per_service(self) -> None:
        upstreams = _upstreams(_settings())

        try:
            assert upstreams.channel("auth") is upstreams.channel("auth")
            assert upstreams.channel("auth") is not upstreams.channel("billing")
        finally:
            await upstreams.close()

    def test_timeout_is_the_default_outside_a_call(self) -> None:
        upstreams = _upstreams(_settings(rpc_timeout=7.5))

        assert contextvars.copy_context().run(upstreams.timeout) == 7.5

    def test_timeout_is_capped_by_the_call_being_served(self) -> None:
        upstreams = _upstreams(_settings(rpc_timeout=7.5))

        def inside_a_call() -> float:
            set_deadline(0.5)
            return upstreams.timeout()

        assert 0.4 < contextvars.copy_context().run(inside_a_call) <= 0.5

    def test_timeout_never_goes_negative(self) -> None:
        upstreams = _upstreams(_settings())

        def after_the_deadline() -> float:
            set_deadline(-1.0)
            return upstreams.timeout()

        assert contextvars.copy_context().run(after_the_deadline) == 0.0
