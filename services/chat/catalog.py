"""Chat models and their prices, from the catalog service.

The catalog owns the one pricing rule (QuoteChat: the model's token prices,
the chat margin and the credit price), so every amount this service holds or
charges is a QuoteChat answer; none is computed here.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc
from google.protobuf.json_format import MessageToDict
from omnihub.catalog.v1 import catalog_pb2, catalog_pb2_grpc

from libs.errors import InvalidArgument, NotFound
from libs.grpc.client import Upstreams
from libs.grpc.status import from_rpc_error

CHAT = "chat"
# What a model without these capabilities in the catalog is taken to allow.
DEFAULT_MAX_CONTEXT = 8192
DEFAULT_MAX_OUTPUT = 4096


@dataclass(frozen=True)
class ChatModel:
    id: str
    name: str
    # The OpenRouter model id.
    endpoint: str
    vision: bool
    web_search: bool
    max_context: int
    max_output: int


def _capability_int(capabilities: dict[str, object], key: str, default: int) -> int:
    value = capabilities.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return int(value)
    return default


def chat_model_of(model: catalog_pb2.Model) -> ChatModel:
    capabilities = MessageToDict(model.capabilities)
    return ChatModel(
        id=model.id,
        name=model.name,
        endpoint=model.endpoint or model.id,
        vision=capabilities.get("vision") is True,
        web_search=capabilities.get("webSearch") is True,
        max_context=_capability_int(capabilities, "maxContext", DEFAULT_MAX_CONTEXT),
        max_output=_capability_int(capabilities, "maxOutput", DEFAULT_MAX_OUTPUT),
    )


class ModelCatalog:
    def __init__(
        self, stub: catalog_pb2_grpc.CatalogServiceAsyncStub, upstreams: Upstreams
    ) -> None:
        self._stub = stub
        self._upstreams = upstreams

    async def chat_model(self, model_id: str, field: str = "model_id") -> ChatModel:
        """An enabled chat model; anything else is the caller's mistake in
        `field` (a disabled model is refused like one that never existed)."""
        refusal = InvalidArgument.for_field(
            field, f'There is no chat model "{model_id[:200]}".'
        )
        if not model_id:
            raise refusal
        try:
            reply = await self._stub.GetModel(
                catalog_pb2.GetModelRequest(id=model_id),
                timeout=self._upstreams.timeout(),
                metadata=self._upstreams.metadata(),
            )
        except grpc.aio.AioRpcError as exc:
            error = from_rpc_error(exc)
            raise refusal if isinstance(error, NotFound) else error from None
        if reply.model.type != CHAT or not reply.model.enabled:
            raise refusal
        return chat_model_of(reply.model)

    async def price(
        self,
        model_id: str,
        input_tokens: int,
        output_tokens: int,
        provider_cost_micros: int = 0,
    ) -> int:
        """Micro-credits for a reply: the provider's reported cost (micro-USD)
        when it gave one, else these tokens at the model's prices."""
        try:
            reply = await self._stub.QuoteChat(
                catalog_pb2.QuoteChatRequest(
                    model_id=model_id,
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                    provider_cost_micros=provider_cost_micros,
                ),
                timeout=self._upstreams.timeout(),
                metadata=self._upstreams.metadata(),
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        return int(reply.price_micros)

    async def prices(
        self, model_id: str, input_tokens: int, output_tokens: list[int]
    ) -> list[int]:
        """The price of the same prompt with each of several reply lengths."""
        return list(
            await asyncio.gather(
                *(self.price(model_id, input_tokens, out) for out in output_tokens)
            )
        )
