"""Channels to upstream services: one long-lived channel per upstream.

Every call gets a deadline (the default or the method's own from
METHOD_TIMEOUTS, capped by what is left of the call being served) and the
metadata that identifies the caller. Methods the protos mark
`idempotency_level = NO_SIDE_EFFECTS` or `IDEMPOTENT` are retried on
UNAVAILABLE by gRPC itself, through the channel's service config; others are
never retried blindly. Targets may be `dns:///host:port`, and calls are
balanced per call (`round_robin`) across every address the name resolves to.
Keepalive pings (GRPC_KEEPALIVE_*) notice a peer that vanished without
closing its connections. While tracing is on, each call has a client span
whose `traceparent` travels in its metadata (libs/grpc/tracing.py).

No hedging: it would suit the NO_SIDE_EFFECTS reads (a second attempt to
another replica when the first is slow), but gRPC's C core, which grpcio
runs on, does not implement it; a `hedgingPolicy` is accepted and ignored
(checked with grpcio 1.85). A retry policy and a hedging policy cannot both
be set on one method anyway, and retries are what a replica that went away
needs: its calls fail at once with UNAVAILABLE and go to another.
"""

from __future__ import annotations

import importlib
import json
from functools import cache
from typing import TypeVar

import grpc
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import ServiceDescriptor

from libs.config import Settings
from libs.grpc.deadline import remaining
from libs.grpc.identity import AUTHORIZATION_KEY, INTERNAL_TOKEN_KEY, REQUEST_ID_KEY
from libs.grpc.status import from_rpc_error
from libs.grpc.tracing import client_interceptors
from libs.tokens import InternalTokenSource

RECONNECT_MIN_MS = 200
RECONNECT_MAX_MS = 2_000
_SAFE_LEVELS = {
    descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS,
    descriptor_pb2.MethodOptions.IDEMPOTENT,
}

# The calls whose deadline is not RPC_TIMEOUT, in one place (seconds). A
# stream's is the longest it may stay open; a background poll's is short,
# so that a slow upstream delays the next poll instead of piling them up.
METHOD_TIMEOUTS: dict[str, float] = {
    "/omnihub.generation.v1.GenerationService/WatchGeneration": 1800.0,
    "/omnihub.auth.v1.AuthService/ListRevokedSessions": 5.0,
    "/omnihub.admin.v1.AdminService/GetFeatureFlags": 1.0,
    "/grpc.health.v1.Health/Check": 1.0,
}


@cache
def service_descriptor(service: str) -> ServiceDescriptor:
    """The proto descriptor of `service` ("auth" -> omnihub.auth.v1.AuthService)."""
    module = importlib.import_module(f"omnihub.{service}.v1.{service}_pb2")
    descriptor: ServiceDescriptor = module.DESCRIPTOR.services_by_name[
        f"{service.capitalize()}Service"
    ]
    return descriptor


def service_config(service: ServiceDescriptor) -> str:
    safe = [
        {"service": service.full_name, "method": method.name}
        for method in service.methods
        if method.GetOptions().idempotency_level in _SAFE_LEVELS
    ]
    method_config: list[dict[str, object]] = []
    if safe:
        method_config.append(
            {
                "name": safe,
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        )
    return json.dumps(
        {"loadBalancingConfig": [{"round_robin": {}}], "methodConfig": method_config}
    )


def channel_options(settings: Settings, service: str) -> list[tuple[str, object]]:
    """Channel arguments for calls to `service` ("auth")."""
    return [
        ("grpc.service_config", service_config(service_descriptor(service))),
        ("grpc.enable_retries", 1),
        ("grpc.max_receive_message_length", settings.grpc_max_message_bytes),
        ("grpc.max_send_message_length", settings.grpc_max_message_bytes),
        ("grpc.keepalive_time_ms", _ms(settings.grpc_keepalive_time)),
        ("grpc.keepalive_timeout_ms", _ms(settings.grpc_keepalive_timeout)),
        (
            "grpc.keepalive_permit_without_calls",
            int(settings.grpc_keepalive_without_calls),
        ),
        # Idle connections send no data frames between pings; without this
        # gRPC stops pinging after two.
        ("grpc.http2.max_pings_without_data", 0),
        # How long any ping may go unanswered (a minute by default). Without
        # it a peer that stopped answering during a call was only noticed
        # at the call's deadline (measured with grpcio 1.85); with it, after
        # GRPC_KEEPALIVE_TIMEOUT.
        ("grpc.http2.ping_timeout_ms", _ms(settings.grpc_keepalive_timeout)),
        # gRPC's default reconnect backoff grows to two minutes, so a
        # service that was down at start-up would stay "unavailable" long
        # after it came up. Cap it at 2 s.
        ("grpc.initial_reconnect_backoff_ms", RECONNECT_MIN_MS),
        ("grpc.min_reconnect_backoff_ms", RECONNECT_MIN_MS),
        ("grpc.max_reconnect_backoff_ms", RECONNECT_MAX_MS),
    ]


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")


class Upstreams:
    def __init__(self, settings: Settings, tokens: InternalTokenSource) -> None:
        self._settings = settings
        self._tokens = tokens
        self._channels: dict[str, grpc.aio.Channel] = {}

    def channel(self, service: str) -> grpc.aio.Channel:
        """The channel to `service` (e.g. "auth"), created on first use."""
        channel = self._channels.get(service)
        if channel is None:
            channel = grpc.aio.insecure_channel(
                self._settings.address_of(service),
                options=channel_options(self._settings, service),
                interceptors=client_interceptors(),
            )
            self._channels[service] = channel
        return channel

    def timeout(self, method: str | None = None) -> float:
        """Seconds the next call may take: `method`'s own deadline (e.g.
        "/omnihub.auth.v1.AuthService/ListRevokedSessions") or RPC_TIMEOUT,
        capped by what is left of the call being served."""
        return remaining(METHOD_TIMEOUTS.get(method or "", self._settings.rpc_timeout))

    def metadata(
        self, *, authorization: str | None = None, request_id: str | None = None
    ) -> tuple[tuple[str, str], ...]:
        pairs = [(INTERNAL_TOKEN_KEY, self._tokens.token())]
        if authorization:
            pairs.append((AUTHORIZATION_KEY, authorization))
        if request_id:
            pairs.append((REQUEST_ID_KEY, request_id))
        return tuple(pairs)

    async def call(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[RequestT, ResponseT],
        message: RequestT,
    ) -> ResponseT:
        """Call another service as this process (its internal token, the
        usual deadline); a failure comes back as the DomainError the other
        service raised."""
        try:
            return await method(
                message, timeout=self.timeout(), metadata=self.metadata()
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
