"""Calling services from a request: deadline, identity metadata, and the
translation of a failed call back into the DomainError the service raised."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from omnihub.billing.v1 import billing_pb2_grpc
from omnihub.chat.v1 import chat_pb2_grpc

from gateway.middleware import request_id_var
from libs.grpc.status import from_rpc_error
from libs.runtime import Runtime

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")

SERVICES = ("auth", "catalog", "generation", "chat", "workspace", "billing", "admin")
READINESS_TIMEOUT_SECONDS = 1.0


class Upstream:
    """The gateway's view of the services behind it."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.auth = runtime.auth_stub()
        self.billing = billing_pb2_grpc.BillingServiceStub(
            runtime.upstreams.channel("billing")
        )
        self.chat = chat_pb2_grpc.ChatServiceStub(runtime.upstreams.channel("chat"))

    async def call(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[RequestT, ResponseT],
        message: RequestT,
        authorization: str | None = None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> ResponseT:
        upstreams = self.runtime.upstreams
        identity = upstreams.metadata(
            authorization=authorization, request_id=request_id_var.get()
        )
        try:
            return await method(
                message,
                timeout=upstreams.timeout(),
                metadata=(*identity, *metadata),
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    async def health(self) -> dict[str, bool]:
        """Whether each service answers SERVING to grpc.health.v1."""
        return {service: await self._serving(service) for service in SERVICES}

    async def _serving(self, service: str) -> bool:
        channel = self.runtime.upstreams.channel(service)
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = await stub.Check(
                health_pb2.HealthCheckRequest(), timeout=READINESS_TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)
