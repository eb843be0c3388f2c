"""Channels to upstream services: one long-lived channel per upstream.

Every call gets a deadline (the default, capped by what is left of the call
being served) and the metadata that identifies the caller. Methods the protos
mark `idempotency_level = NO_SIDE_EFFECTS` or `IDEMPOTENT` are retried on
UNAVAILABLE by gRPC itself, through the channel's service config; others are
never retried blindly. Targets may be `dns:///host:port`, and calls are
balanced per call (`round_robin`) across every address the name resolves to.
"""

from __future__ import annotations

import importlib
import json
from functools import cache

import grpc
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import ServiceDescriptor

from libs.config import Settings
from libs.grpc.deadline import remaining
from libs.grpc.identity import AUTHORIZATION_KEY, INTERNAL_TOKEN_KEY, REQUEST_ID_KEY
from libs.tokens import InternalTokenSource

RECONNECT_MIN_MS = 200
RECONNECT_MAX_MS = 2_000
_SAFE_LEVELS = {
    descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS,
    descriptor_pb2.MethodOptions.IDEMPOTENT,
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
                options=[
                    (
                        "grpc.service_config",
                        service_config(service_descriptor(service)),
                    ),
                    ("grpc.enable_retries", 1),
                    (
                        "grpc.max_receive_message_length",
                        self._settings.grpc_max_message_bytes,
                    ),
                    (
                        "grpc.max_send_message_length",
                        self._settings.grpc_max_message_bytes,
                    ),
                    ("grpc.keepalive_time_ms", 30_000),
                    ("grpc.keepalive_timeout_ms", 10_000),
                    # gRPC's default reconnect backoff grows to two minutes,
                    # so a service that was down at start-up would stay
                    # "unavailable" long after it came up. Cap it at 2 s.
                    ("grpc.initial_reconnect_backoff_ms", RECONNECT_MIN_MS),
                    ("grpc.min_reconnect_backoff_ms", RECONNECT_MIN_MS),
                    ("grpc.max_reconnect_backoff_ms", RECONNECT_MAX_MS),
                ],
            )
            self._channels[service] = channel
        return channel

    def timeout(self) -> float:
        return remaining(self._settings.rpc_timeout)

    def metadata(
        self, *, authorization: str | None = None, request_id: str | None = None
    ) -> tuple[tuple[str, str], ...]:
        pairs = [(INTERNAL_TOKEN_KEY, self._tokens.token())]
        if authorization:
            pairs.append((AUTHORIZATION_KEY, authorization))
        if request_id:
            pairs.append((REQUEST_ID_KEY, request_id))
        return tuple(pairs)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
