"""DomainError -> rich gRPC status -> DomainError, over a real grpc.aio server.

The server here is the smallest one that can fail a call: one generic method
that aborts the way it is told to, so each test decides what goes on the wire.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from libs import errors
from libs.errors import DomainError, FieldViolation
from libs.grpc.status import (
    ERROR_DOMAIN,
    STATUS_DETAILS_KEY,
    from_rpc_error,
    to_status_details,
)
from tests.suite import free_port

Context = grpc.aio.ServicerContext[bytes, bytes]
Failure = Callable[[Context], Awaitable[None]]

METHOD = "/omnihub.test.v1.Failing/Fail"


def _fail_method(channel: grpc.aio.Channel) -> Any:
    """The method as raw bytes in, bytes out (no protobuf on either side)."""
    return channel.unary_unary(METHOD)


class FailingServer:
    """Runs one planned failure per call, chosen by the request's bytes."""

    def __init__(self) -> None:
        self._planned: dict[bytes, Failure] = {}
        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "omnihub.test.v1.Failing",
                    {"Fail": grpc.unary_unary_rpc_method_handler(self._fail)},
                ),
            )
        )

    async def _fail(self, request: bytes, context: Context) -> bytes:
        await self._planned.pop(request)(context)
        return b"not reached"

    async def call(
        self, channel: grpc.aio.Channel, failure: Failure
    ) -> grpc.aio.AioRpcError:
        key = uuid.uuid4().bytes
        self._planned[key] = failure
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _fail_method(channel)(key, timeout=5)
        return caught.value


@pytest.fixture(scope="module")
async def failing() -> AsyncIterator[tuple[FailingServer, grpc.aio.Channel]]:
    failing = FailingServer()
    port = failing.server.add_insecure_port("127.0.0.1:0")
    await failing.server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield failing, channel
    await failing.server.stop(0)


def raising(error: DomainError) -> Failure:
    """Abort the way the OmniHub server interceptor does."""

    async def abort(context: Context) -> None:
        await context.abort(
            error.grpc_status,
            error.message,
            trailing_metadata=((STATUS_DETAILS_KEY, to_status_details(error)),),
        )

    return abort


def aborting(code: grpc.StatusCode, message: str, *details: Any) -> Failure:
    """Abort with a plain status, or with a hand-made rich one."""

    async def abort(context: Context) -> None:
        trailing: tuple[tuple[str, bytes], ...] = ()
        if details:
            status = status_pb2.Status(code=code.value[0], message=message)
            for detail in details:
                packed = any_pb2.Any()
                packed.Pack(detail)
                status.details.append(packed)
            trailing = ((STATUS_DETAILS_KEY, status.SerializeToString()),)
        await context.abort(code, message, trailing_metadata=trailing)

    return abort


def _every_error_class() -> list[type[DomainError]]:
    found: list[type[DomainError]] = []
    pending = list(DomainError.__subclasses__())
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return sorted(found, key=lambda cls: cls.__name__)


class TestRoundTrip:
    @pytest.mark.parametrize(
        "error_class", _every_error_class(), ids=lambda cls: cls.__name__
    )
    async def test_every_error_class_comes_back_as_itself(
        self,
        failing: tuple[FailingServer, grpc.aio.Channel],
        error_class: type[DomainError],
    ) -> None:
        server, channel = failing

        rpc_error = await server.call(channel, raising(error_class("Said plainly.")))
        rebuilt = from_rpc_error(rpc_error)

        assert rpc_error.code() is error_class.grpc_status
        assert type(rebuilt) is error_class
        assert rebuilt.message == "Said plainly."

    async def test_field_violations_come_back_in_order(
        self, failing: tuple[FailingServer, grpc.aio.Channel]
    ) -> None:
        server, channel = failing
        violations = (
            FieldViolation("email", "Enter a valid e-mail address."),
            FieldViolation("password", "Too short."),
        )

        rpc_error = await server.call(
            channel, raising(errors.InvalidArgument("Bad", violations=violations))
        )

        assert from_rpc_error(rpc_error).violations == violations

    @pytest.mark.parametrize(("wait", "seconds"), [(1.2, 2.0), (0.1, 1.0), (30, 30)])
    async def test_retry_delay_comes_back_in_whole_seconds_rounded_up(
        self,
        failing: tuple[FailingServer, grpc.aio.Channel],
        wait: float,
        seconds: float,
    ) -> None:
        server, channel = failing

        rpc_error = await server.call(
            channel, raising(errors.RateLimited(retry_after=wait))
        )

        assert from_rpc_error(rpc_error).retry_after == seconds

    async def test_context_comes_back(
        self, failing: tuple[FailingServer, grpc.aio.Channel]
    ) -> None:
        server, channel = failing

        rpc_error = await server.call(
            channel, raising(errors.InsufficientCredits.amounts(1_200_000, 500_000))
        )

        assert from_rpc_error(rpc_error).context == {
            "required": "1.2",
            "available": "0.5",
        }

    async def test_message_outside_ascii_survives(
        self, failing: tuple[FailingServer, grpc.aio.Channel]
    ) -> None:
        server, channel = failing
        message = "Zugriff verweigert, bitte später erneut 🙏"

        rpc_error = await server.call(
            channel, raising(errors.PermissionDenied(message))
        )

        assert from_rpc_error(rpc_error).message == message

    async def test_standard_grpc_clients_read_the_same_status(
        self, failing: tuple[FailingServer, grpc.aio.Channel]
    ) -> None:
        server, channel = failing

        rpc_error = await server.call(channel, raising(errors.AccountDisabled()))
        status = rpc_status.from_call(rpc_error)  # checks code and message agree

        assert status is not None
        info = error_details_pb2.ErrorInfo()
        assert status.details[0].Unpack(info)
        assert (info.reason, info.domain) == ("account_disabled", ERROR_DOMAIN)


class TestWithoutOurDetails:
    async def test_plain_status_maps_by_code_and_keeps_the_message(
        self, failing: tuple[FailingServer, grpc.aio.Channel]
    ) -> None:
        server, channel = failing

        rpc_error = await server.call(
            channel, aborting(grpc.StatusCode.NOT_FOUND, "No such model.")
        )
        rebuilt = from_rpc_error(rpc_error)

        assert type(rebuilt) is errors.NotFound
        assert rebuilt.message == "No such model."

    @pytest.mark.parametrize(
        ("code", "error_class"),
        [
            (grpc.StatusCode.UNAVAILABLE, errors.Unavailable),
            (grpc.StatusCode.DATA_LOSS, errors.Internal),
            (grpc.StatusCode.UNKNOWN, errors.Internal),
        ],
    )
    async def test_transport_wording_is_replaced_by_ours(
        self,
        failing: tuple[FailingServer, grpc.aio.Channel],
        code: grpc.StatusCode,
        error_class: type[DomainError],
    ) -> None:
        server, channel = failing

        rpc_error = await server.call(
            channel, aborting(code, "upstream connect error or disconnect/reset")
        )
        rebuilt = from_rpc_error(rpc_error)

        assert type(rebuilt) is error_class
        assert rebuilt.message == error_class.default_message

    async def test_unknown_reason_falls_back_to_the_status_code(
        self, failing: tuple[FailingServer, grpc.aio.Channel]
    ) -> None:
        server, channel = failing
        info = error_details_pb2.ErrorInfo(reason="made_up_later", domain="omnihub")

        rpc_error = await server.call(
            channel,
            aborting(grpc.StatusCode.PERMISSION_DENIED, "Not for you.", info),
        )
        rebuilt = from_rpc_error(rpc_error)

        assert type(rebuilt) is errors.PermissionDenied
        assert rebuilt.message == "Not for you."

    async def test_unreachable_server_is_unavailable(self) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _fail_method(channel)(b"", timeout=5)

        rebuilt = from_rpc_error(caught.value)

        assert type(rebuilt) is errors.Unavailable
        assert rebuilt.message == errors.Unavailable.default_message
