"""Running catalog replicas for tests, each suite on a database of its own so
that edits made by catalog tests never leak into other tests (or theirs into
ours), and calling them as another OmniHub process or as nobody."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
from omnihub.catalog.v1 import catalog_pb2, catalog_pb2_grpc

from libs.config import Settings
from libs.errors import DomainError
from libs.grpc.status import from_rpc_error
from libs.process import RunningService, migrate_service, start_service
from libs.runtime import Runtime
from services.catalog.main import CatalogProcess
from tests import database
from tests.suite import free_port

DEFAULT_PRICING = catalog_pb2.PricingSettings(
    profit_margin="0",
    profit_margin_image="0",
    profit_margin_video="0",
    profit_margin_chat="0",
    credit_price_micros=1_000_000,
)


@asynccontextmanager
async def catalog_database(
    database_server: str, settings: Settings
) -> AsyncIterator[Settings]:
    """Settings for a catalog on a fresh database and a port of its own."""
    url = await database.create_database(database_server)
    try:
        yield settings.model_copy(
            update={"database_url": url, "catalog_address": f"127.0.0.1:{free_port()}"}
        )
    finally:
        await database.drop_database(database_server, url)


async def start_replica(
    settings: Settings, port: int | None = None
) -> tuple[CatalogProcess, RunningService]:
    """Migrate and seed (both idempotent), then serve one catalog replica."""
    await migrate_service(CatalogProcess(), settings)
    process = CatalogProcess()
    running = await start_service(process, settings, port=port)
    return process, running


class CatalogCaller:
    """A client of one catalog replica: `call` as an OmniHub process (the
    gateway's identity), `call_anonymously` with no identity at all."""

    def __init__(self, settings: Settings, address: str | None = None) -> None:
        self._runtime = Runtime(settings, "tests")
        target = address or settings.catalog_address
        self._channel = grpc.aio.insecure_channel(target)
        self.stub = catalog_pb2_grpc.CatalogServiceStub(self._channel)

    async def call(self, method: str, request: Any) -> Any:
        rpc = getattr(self.stub, method)
        return await rpc(
            request, timeout=10, metadata=self._runtime.upstreams.metadata()
        )

    async def call_anonymously(self, method: str, request: Any) -> Any:
        return await getattr(self.stub, method)(request, timeout=10)

    async def failure(self, method: str, request: Any) -> DomainError:
        """The domain error a call fails with (it must fail)."""
        try:
            await self.call(method, request)
        except grpc.aio.AioRpcError as exc:
            return from_rpc_error(exc)
        raise AssertionError(f"{method} succeeded")

    async def set_pricing(self, **fields: Any) -> None:
        settings = catalog_pb2.PricingSettings()
        settings.CopyFrom(DEFAULT_PRICING)
        for name, value in fields.items():
            setattr(settings, name, value)
        await self.call(
            "UpdatePricingSettings",
            catalog_pb2.UpdatePricingSettingsRequest(settings=settings, actor="tests"),
        )

    async def reset_pricing(self) -> None:
        await self.set_pricing()

    async def edit_model(self, model_id: str, **changes: Any) -> catalog_pb2.Model:
        reply = await self.call(
            "UpdateModel",
            catalog_pb2.UpdateModelRequest(
                id=model_id, changes=catalog_pb2.ModelChanges(**changes), actor="tests"
            ),
        )
        model: catalog_pb2.Model = reply.model
        return model

    async def close(self) -> None:
        await self._channel.close()
        await self._runtime.upstreams.close()
