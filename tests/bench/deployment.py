"""The suite under load: started here as OS processes against a database of
its own, or an already running suite named by URL."""

from __future__ import annotations

import os
import secrets
import warnings
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from libs.grpc.client import service_descriptor
from tests import database
from tests.bench import processes
from tests.bench.cpu import parent_pid
from tests.bench.processes import Child
from tests.fakes.google import FakeGoogle
from tests.suite import SERVICES, free_port

EMBEDDED_DATA_DIR = database.ROOT / ".data" / "bench-postgres"
GOOGLE_CLIENT_ID = "omnihub-bench.apps.googleusercontent.com"
# High enough that no bucket ever fills during a run (a billion sign-ins or
# refreshes an hour): the benchmark measures the work of a request, not the
# limiter refusing it.
UNLIMITED_RATE = "1000000000/1h"
# The services the benchmarked routes call: /api/auth/me asks auth for the
# user, billing for the balance and workspace for the workspaces, the model
# routes ask catalog, and the ledger target calls billing itself. The others
# are not started.
STARTED_SERVICES = ("auth", "billing", "catalog", "workspace")


@dataclass
class Deployment:
    gateway_url: str
    database: str
    database_url: str | None = None
    # Only when this harness started the suite: its processes by name and the
    # stand-in for Google that lets it open sessions without password hashing.
    children: dict[str, Child] = field(default_factory=dict)
    google: FakeGoogle | None = None
    # What the harness needs to call billing as an internal service.
    billing_address: str | None = None
    jwt_secret: str | None = None
    # The environment the suite's processes were started with, for more
    # processes of the same suite (the generation benchmark's workers).
    environment: dict[str, str] = field(default_factory=dict)

    @property
    def managed(self) -> bool:
        return bool(self.children)


@contextmanager
def _database_server() -> Iterator[tuple[str, str]]:
    """(server URL, description): TEST_DATABASE_URL, else an embedded
    PostgreSQL kept apart from the tests' under .data/bench-postgres."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url, "on TEST_DATABASE_URL's server"
        return
    # pgserver's platformdirs warns about XDG_RUNTIME_DIR on headless machines.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
    import pgserver

    EMBEDDED_DATA_DIR.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(EMBEDDED_DATA_DIR, cleanup_mode="stop")
    try:
        yield server.get_uri(), f"on pgserver in {EMBEDDED_DATA_DIR}"
    finally:
        server.cleanup()


@asynccontextmanager
async def _fresh_database() -> AsyncIterator[tuple[str, str]]:
    with _database_server() as (server, description):
        url = await database.create_database(server)
        name = make_url(url).database
        try:
            yield url, f"{name}, {description} (dropped after the run)"
        finally:
            await database.drop_database(server, url)


def _suite_environment(database_url: str, google: FakeGoogle) -> dict[str, str]:
    # Every service address gets a port of its own even though only some
    # run, so that nothing here can reach a suite a developer has running
    # on the default ports.
    addresses = {
        f"{name.upper()}_ADDRESS": f"127.0.0.1:{free_port()}" for name in SERVICES
    }
    return processes.child_environment(
        {
            **addresses,
            "ENVIRONMENT": "production",
            "LOG_LEVEL": "WARNING",
            "DATABASE_URL": database_url,
            "JWT_SECRET": secrets.token_urlsafe(48),
            "GRPC_LISTEN_HOST": "127.0.0.1",
            "PORT": str(free_port()),
            "AUTH_RATE_LIMIT_ACCOUNT": UNLIMITED_RATE,
            "AUTH_RATE_LIMIT_ADDRESS": UNLIMITED_RATE,
            "GOOGLE_CLIENT_ID": google.client_id,
            "GOOGLE_CERTS_URL": google.certs_url,
        }
    )


async def start_suite(
    stack: AsyncExitStack,
    log_dir: Path,
    services: tuple[str, ...] = STARTED_SERVICES,
    environment: Mapping[str, str] | None = None,
) -> Deployment:
    """Start `services`, then the gateway; `stack` stops them and drops the
    database (children first) however the run ends. `environment` is laid
    over the suite's own (provider addresses, a chosen gateway PORT)."""
    database_url, description = await stack.enter_async_context(_fresh_database())
    google = FakeGoogle(client_id=GOOGLE_CLIENT_ID)
    await google.start()
    stack.push_async_callback(google.stop)
    env = {**_suite_environment(database_url, google), **(environment or {})}

    children = {}
    for name in services:
        module = f"services.{name}.main"
        await processes.run_to_completion(
            f"{name}-migrate", [module, "migrate"], env, log_dir
        )
        children[name] = await processes.start(name, [module, "serve"], env, log_dir)
        stack.push_async_callback(children[name].stop)
    for name, child in children.items():
        address = env[f"{name.upper()}_ADDRESS"]
        full_name = service_descriptor(name).full_name
        await processes.wait_until(child, processes.grpc_serving(address, full_name))

    gateway = await processes.start("gateway", ["gateway.main"], env, log_dir)
    stack.push_async_callback(gateway.stop)
    # Not /readyz: that waits for services this harness does not start.
    url = f"http://127.0.0.1:{env['PORT']}"
    await processes.wait_until(gateway, processes.http_ok(f"{url}/healthz"))
    children["gateway"] = gateway
    return Deployment(
        url,
        description,
        database_url,
        children,
        google,
        billing_address=env["BILLING_ADDRESS"],
        jwt_secret=env["JWT_SECRET"],
        environment=env,
    )


@dataclass(frozen=True)
class DatabaseActivity:
    """The PostgreSQL server processes serving the suite's database now, the
    server's main process (when on this machine), and how many connections
    to the database have been counted so far (PostgreSQL 14+). PostgreSQL
    counts a connection when it flushes that session's statistics, at the
    latest when it closes: the connection asking is not counted yet."""

    backend_pids: list[int]
    server_pid: int | None
    connections_opened: int | None


async def database_activity(database_url: str) -> DatabaseActivity:
    dsn = make_url(database_url).set(drivername="postgresql")
    connection = await asyncpg.connect(dsn.render_as_string(hide_password=False))
    try:
        rows = await connection.fetch(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        opened = await _connections_opened(connection)
    finally:
        await connection.close()
    pids = [int(row["pid"]) for row in rows]
    server = next(filter(None, map(parent_pid, pids)), None)
    return DatabaseActivity(pids, server, opened)


async def _connections_opened(connection: asyncpg.Connection) -> int | None:
    try:
        value = await connection.fetchval(
            "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
        )
    except asyncpg.UndefinedColumnError:
        return None
    return None if value is None else int(value)


def existing_suite(url: str) -> Deployment:
    return Deployment(url.rstrip("/"), "the suite's own")
