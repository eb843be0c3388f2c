"""The gRPC surface under fuzz: every RPC of every OmniHub service, read from
the generated descriptors, and one call to it with raw request bytes.

A service `omnihub.<name>.v1.*` is served by the process `<name>` (the
community service by generation, the admin users and insights services by
admin). Each call's outcome is tallied; when GRPC_FUZZ_TALLY names a file,
the tally is written there for `python -m tests.verify.grpc_fuzz`.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf.descriptor import Descriptor, MethodDescriptor

PROTOS = Path(__file__).resolve().parents[2] / "protos" / "omnihub"
EXCLUDED_SERVICES = ("grpc.health.v1.Health",)
TALLY_ENV = "GRPC_FUZZ_TALLY"

UNARY_TIMEOUT = 15.0
STREAM_TIMEOUT = 1.5
STREAM_MESSAGES = 3
# Codes a correct server never answers with: a bug escaped its error mapping,
# or an RPC of the contract is not served at all.
BROKEN_CODES = (
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNIMPLEMENTED,
)


@dataclass(frozen=True)
class Rpc:
    process: str  # the OmniHub process serving it ("generation")
    service: str  # "omnihub.generation.v1.CommunityService"
    name: str  # "ListPosts"
    input: Descriptor
    output: Descriptor
    server_streaming: bool

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"

    @property
    def id(self) -> str:
        return f"{self.service.rsplit('.', 1)[1]}.{self.name}"


def descriptor_modules() -> list[str]:
    """Every generated message module, e.g. "omnihub.auth.v1.auth_pb2"."""
    return sorted(
        f"omnihub.{path.parent.parent.name}.v1.{path.stem}"
        for path in PROTOS.glob("*/v1/*_pb2.py")
    )


def all_rpcs() -> list[Rpc]:
    rpcs = []
    for module_name in descriptor_modules():
        process = module_name.split(".")[1]
        module = importlib.import_module(module_name)
        for service in module.DESCRIPTOR.services_by_name.values():
            if service.full_name in EXCLUDED_SERVICES:
                continue
            rpcs.extend(_rpc(process, method) for method in service.methods)
    return rpcs


def _rpc(process: str, method: MethodDescriptor) -> Rpc:
    return Rpc(
        process=process,
        service=method.containing_service.full_name,
        name=method.name,
        input=method.input_type,
        output=method.output_type,
        server_streaming=method.server_streaming,
    )


@dataclass(frozen=True)
class Outcome:
    code: grpc.StatusCode
    details: str
    seconds: float
    messages: int = 0
    reply: bytes | None = None  # a unary call's answer, serialized

    @property
    def hung(self) -> bool:
        """The server neither answered nor failed within the call's deadline
        (a live stream's quiet spell is reported as OK by _read_stream)."""
        return self.code is grpc.StatusCode.DEADLINE_EXCEEDED


async def call(
    channel: grpc.aio.Channel,
    rpc: Rpc,
    payload: bytes,
    metadata: tuple[tuple[str, str], ...],
) -> Outcome:
    """Call `rpc` once with `payload` as the serialized request; a stream is
    read for at most STREAM_MESSAGES messages or STREAM_TIMEOUT seconds."""
    started = time.monotonic()
    raw: dict[str, object] = {
        "request_serializer": None,
        "response_deserializer": None,
    }
    try:
        if rpc.server_streaming:
            stream = channel.unary_stream(rpc.path, **raw)(  # type: ignore[arg-type]
                payload, timeout=STREAM_TIMEOUT, metadata=metadata
            )
            return await _read_stream(stream, started)
        reply = await channel.unary_unary(rpc.path, **raw)(  # type: ignore[arg-type]
            payload, timeout=UNARY_TIMEOUT, metadata=metadata
        )
        return Outcome(grpc.StatusCode.OK, "", time.monotonic() - started, 0, reply)
    except grpc.aio.AioRpcError as exc:
        return Outcome(exc.code(), exc.details() or "", time.monotonic() - started)
    finally:
        TALLY.count(rpc)


async def _read_stream(stream: grpc.aio.UnaryStreamCall, started: float) -> Outcome:  # type: ignore[type-arg]
    received = 0
    try:
        async for _message in stream:
            received += 1
            if received >= STREAM_MESSAGES:
                stream.cancel()
                break
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            # A live stream that had nothing (more) to say within our own
            # short deadline: not a hang.
            code = grpc.StatusCode.OK
        return Outcome(code, exc.details() or "", time.monotonic() - started, received)
    return Outcome(grpc.StatusCode.OK, "", time.monotonic() - started, received)


class Tally:
    """Calls made per RPC and status codes seen per service."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.codes: dict[str, Counter[str]] = {}
        self.answered_ok: set[str] = set()
        self.failures: list[dict[str, str]] = []

    def count(self, rpc: Rpc) -> None:
        self.calls[rpc.id] += 1

    def saw(self, rpc: Rpc, outcome: Outcome) -> None:
        self.codes.setdefault(rpc.service, Counter())[outcome.code.name] += 1
        if outcome.code is grpc.StatusCode.OK:
            self.answered_ok.add(rpc.id)

    def failed(self, rpc: Rpc, caller: str, outcome: Outcome, request: str) -> None:
        self.failures.append(
            {
                "rpc": rpc.id,
                "caller": caller,
                "code": outcome.code.name,
                "details": outcome.details[:200],
                "request": request[:300],
            }
        )

    def write(self) -> None:
        path = os.environ.get(TALLY_ENV)
        if not path:
            return
        Path(path).write_text(
            json.dumps(
                {
                    "calls": dict(self.calls),
                    "codes": {k: dict(v) for k, v in self.codes.items()},
                    "failures": self.failures,
                    "answered_ok": sorted(self.answered_ok),
                    "rpcs": [rpc.id for rpc in all_rpcs()],
                },
                indent=1,
            )
        )


TALLY = Tally()
