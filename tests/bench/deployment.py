"""The suite under load: started here as OS processes against a database of
its own, or an already running suite named by URL."""

from __future__ import annotations

import os
import secrets
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from tests import database
from tests.bench import processes
from tests.bench.processes import Child
from tests.fakes.google import FakeGoogle
from tests.suite import SERVICES, free_port

EMBEDDED_DATA_DIR = database.ROOT / ".data" / "bench-postgres"
GOOGLE_CLIENT_ID = "omnihub-bench.apps.googleusercontent.com"
# High enough that no bucket ever fills during a run: the benchmark measures
# the work of a request, not the limiter refusing it. The long period matters
# as much as the count: the limiter allows a burst of one period, and a short
# one refuses requests that waited in a queue longer than that.
UNLIMITED_RATE = "1000000000/1h"
# Stands in for gateway.main until that builds its app inside uvicorn's loop
# (see the module's docstring).
GATEWAY_MODULE = "tests.bench.served_gateway"


@dataclass
class Deployment:
    gateway_url: str
    database: str
    database_url: str | None = None
    # Only when this harness started the suite: its processes by name and the
    # stand-in for Google that lets it open sessions without password hashing.
    children: dict[str, Child] = field(default_factory=dict)
    google: FakeGoogle | None = None

    @property
    def managed(self) -> bool:
        return bool(self.children)


@contextmanager
def _database_server() -> Iterator[tuple[str, str]]:
    """(server URL, description): TEST_DATABASE_URL, else an embedded
    PostgreSQL kept apart from the tests' under .data/bench-postgres."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url, "a fresh database on TEST_DATABASE_URL's server"
        return
    import pgserver

    # pgserver's platformdirs warns about XDG_RUNTIME_DIR on headless machines.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
    EMBEDDED_DATA_DIR.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(EMBEDDED_DATA_DIR, cleanup_mode="stop")
    try:
        yield server.get_uri(), f"a fresh database on pgserver in {EMBEDDED_DATA_DIR}"
    finally:
        server.cleanup()


@asynccontextmanager
async def _fresh_database() -> AsyncIterator[tuple[str, str]]:
    with _database_server() as (server, description):
        url = await database.create_database(server)
        try:
            yield url, description
        finally:
            await database.drop_database(server, url)


def _suite_environment(database_url: str, google: FakeGoogle) -> dict[str, str]:
    # Every service address gets a port of its own even though only auth
    # runs, so that nothing here can reach a suite a developer has running
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


async def start_suite(stack: AsyncExitStack, log_dir: Path) -> Deployment:
    """Start auth and the gateway; `stack` stops them and drops the database
    (children first) however the run ends."""
    database_url, description = await stack.enter_async_context(_fresh_database())
    google = FakeGoogle(client_id=GOOGLE_CLIENT_ID)
    await google.start()
    stack.push_async_callback(google.stop)
    env = _suite_environment(database_url, google)

    await processes.run_to_completion(
        "auth-migrate", ["services.auth.main", "migrate"], env, log_dir
    )
    auth = await processes.start("auth", ["services.auth.main", "serve"], env, log_dir)
    stack.push_async_callback(auth.stop)
    await processes.wait_until(
        auth,
        processes.grpc_serving(env["AUTH_ADDRESS"], processes.AUTH_SERVICE_NAME),
    )

    gateway = await processes.start("gateway", [GATEWAY_MODULE], env, log_dir)
    stack.push_async_callback(gateway.stop)
    # /readyz would wait for services this harness does not start.
    url = f"http://127.0.0.1:{env['PORT']}"
    await processes.wait_until(gateway, processes.http_ok(f"{url}/healthz"))
    return Deployment(
        url,
        description,
        database_url,
        {"auth": auth, "gateway": gateway},
        google,
    )


@dataclass(frozen=True)
class DatabaseActivity:
    """The PostgreSQL server processes serving the suite's database now, and
    how many connections to it have ever been opened (PostgreSQL 14+)."""

    backend_pids: list[int]
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
    # Less this connection, which is counted too.
    return DatabaseActivity(
        [int(row["pid"]) for row in rows], None if opened is None else opened - 1
    )


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
