"""Starts real OmniHub processes' servers inside the test event loop: gRPC
services on loopback ports and the gateway under uvicorn on another."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from gateway.app import create_app
from libs.config import Settings
from libs.process import RunningService, ServiceProcess, migrate_service, start_service

SERVICES = ("auth", "catalog", "generation", "chat", "workspace", "billing", "admin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def provider_simulators() -> dict[str, object]:
    """Loopback addresses and keys for the local fal and OpenRouter, and the
    gateway's port (media URLs name it before it starts)."""
    fal = f"http://127.0.0.1:{free_port()}"
    port = free_port()
    return {
        "fal_key": "test-fal-key",
        "fal_queue_url": fal,
        "fal_jwks_url": f"{fal}/.well-known/jwks.json",
        "fal_user_id": "omnihub-local",
        "fal_poll_interval": 0.2,
        "openrouter_api_key": "test-openrouter-key",
        "openrouter_base_url": f"http://127.0.0.1:{free_port()}/api/v1",
        "port": port,
        "media_base_url": f"http://127.0.0.1:{port}/media",
        "fal_webhook_url": f"http://127.0.0.1:{port}/api/webhooks/fal",
        "worker_idle_interval": 0.05,
    }


def suite_settings(database_url: str, **overrides: object) -> Settings:
    addresses = {f"{name}_address": f"127.0.0.1:{free_port()}" for name in SERVICES}
    values: dict[str, object] = {
        "environment": "test",
        "database_url": database_url,
        "jwt_secret": "test-secret-" + "x" * 40,
        "revocation_poll_interval": 0.2,
        "admin_poll_interval": 0.2,
        "auth_rate_limit_account": "1000/60s",
        "auth_rate_limit_address": "10000/60s",
        "grpc_listen_host": "127.0.0.1",
        "log_level": "WARNING",
        # Every service of a test session shares one PostgreSQL server
        # (100 connections by default): small pools, some room to grow.
        "database_pool_size": 2,
        "database_max_overflow": 5,
        **addresses,
        **provider_simulators(),
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


async def run_service(process: ServiceProcess, settings: Settings) -> RunningService:
    await migrate_service(process, settings)
    port = int(settings.address_of(process.name).rsplit(":", 1)[1])
    return await start_service(process, settings, port=port)


@dataclass
class ServedApp:
    """An ASGI app served by uvicorn on a loopback port in this event loop."""

    server: uvicorn.Server
    task: asyncio.Task[None]
    url: str

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=15.0, **kwargs)

    async def stop(self) -> None:
        self.server.should_exit = True
        await self.task


async def serve_asgi(app: Any, port: int | None = None) -> ServedApp:
    port = port or free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    return ServedApp(server, task, f"http://127.0.0.1:{port}")


@dataclass
class Recorder:
    """A loopback TCP port that counts every connection made to it: a
    place no request may reach."""

    port: int = 0
    hits: int = 0


@asynccontextmanager
async def recording_port() -> AsyncIterator[Recorder]:
    found = Recorder()

    async def counted(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        found.hits += 1
        writer.close()

    server = await asyncio.start_server(counted, "127.0.0.1", 0)
    found.port = server.sockets[0].getsockname()[1]
    try:
        yield found
    finally:
        server.close()
        await server.wait_closed()


async def run_gateway(settings: Settings, port: int | None = None) -> ServedApp:
    """The gateway on `port`, by default the settings' own (media URLs name it)."""
    return await serve_asgi(create_app(settings), port or settings.port)
