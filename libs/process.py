"""Start-up and shutdown shared by every service process.

A service describes itself as a `ServiceProcess` (its name, schema,
migrations and how to build its servicers); `main()` gives it a command line:

    python -m services.auth.main migrate   # bring its schema up to date
    python -m services.auth.main serve     # serve gRPC until SIGTERM

Tests call `start_service()` directly to run the same server on a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from abc import ABC, abstractmethod
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from libs.config import Settings, get_settings
from libs.db import create_engine, migrate
from libs.grpc.server import ServiceDefinition, ServiceServer, run_until_signalled
from libs.logs import configure_logging, get_logger
from libs.revocation import RevocationSource
from libs.runtime import Runtime

log = get_logger(__name__)


class ServiceProcess(ABC):
    name: str
    schema: str | None = None
    migrations_dir: Path | None = None

    def revocation_source(self, engine: AsyncEngine | None) -> RevocationSource | None:
        """Where this process learns of revoked sessions (default: auth's feed)."""
        return None

    @abstractmethod
    async def build(
        self, runtime: Runtime, engine: AsyncEngine | None
    ) -> list[ServiceDefinition]:
        """Create the servicers; called once per process."""

    async def after_migrate(self, engine: AsyncEngine) -> None:
        """Idempotent data set-up once the schema is current (e.g. seeding)."""

    async def run_background(self) -> None:
        """Long-running maintenance work; runs until the process stops."""

    async def close(self) -> None:
        """Release what build() acquired."""


@dataclass
class RunningService:
    process: ServiceProcess
    server: ServiceServer
    runtime: Runtime
    engine: AsyncEngine | None
    background: asyncio.Task[None]

    @property
    def port(self) -> int:
        return self.server.port

    async def stop(self, grace: float = 5.0) -> None:
        self.background.cancel()
        await asyncio.gather(self.background, return_exceptions=True)
        await self.server.stop(grace)
        await self.process.close()
        await self.runtime.stop()
        if self.engine is not None:
            await self.engine.dispose()


def default_port(settings: Settings, name: str) -> int:
    return int(settings.address_of(name).rsplit(":", 1)[1])


async def migrate_service(process: ServiceProcess, settings: Settings) -> None:
    if process.schema is None or process.migrations_dir is None:
        return
    engine = create_engine(settings, process.schema)
    try:
        await migrate(engine, process.migrations_dir, process.schema)
        await process.after_migrate(engine)
    finally:
        await engine.dispose()
    log.info("schema.migrated", schema=process.schema)


async def start_service(
    process: ServiceProcess, settings: Settings, port: int | None = None
) -> RunningService:
    engine = create_engine(settings, process.schema) if process.schema else None
    runtime = Runtime(settings, process.name, process.revocation_source(engine))
    definitions = await process.build(runtime, engine)
    server = ServiceServer(process.name, settings, runtime.verifier, definitions)
    await server.start(default_port(settings, process.name) if port is None else port)
    await runtime.start()
    background = asyncio.create_task(
        process.run_background(), name=f"{process.name}-bg"
    )
    return RunningService(process, server, runtime, engine, background)


async def _serve(process: ServiceProcess, settings: Settings) -> None:
    running = await start_service(process, settings)
    await run_until_signalled(running.server)
    await running.stop(grace=0)


def main(process: ServiceProcess, argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"services.{process.name}.main")
    parser.add_argument(
        "command", choices=["serve", "migrate"], nargs="?", default="serve"
    )
    args = parser.parse_args(argv)
    settings = get_settings()
    configure_logging(settings, process.name)
    try:
        if args.command == "migrate":
            run_event_loop(migrate_service(process, settings))
        else:
            run_event_loop(_serve(process, settings))
    except RuntimeError as exc:
        log.error("process.failed", error=str(exc))
        sys.exit(1)


def run_event_loop(main_coroutine: Coroutine[Any, Any, None]) -> None:
    """Run the process's main coroutine on uvloop when it is installed (it
    roughly halves the cost of each request), else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_coroutine)
        return
    uvloop.run(main_coroutine)
