"""`make run` (python -m deploy.local) as a subprocess for the verify stages.

    async with local_suite(logs, restart_crashed=True) as suite: ...

Each run gets a fresh database on TEST_DATABASE_URL's server (an embedded
PostgreSQL without it), dropped at the end; the runner reaches it through a
`PostgresProxy`, so a stage can make the database refuse connections. Every
port is a free one (gateway, services, simulators), so a developer's own
`make run` is not disturbed. The runner's children are found in /proc by
their command line; the runner stops them all when it is stopped.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy.local import PROGRAMS, SERVICES
from libs.logs import get_logger
from tests import database
from tests.database import ROOT
from tests.suite import free_port
from tests.verify.pg_proxy import PostgresProxy

log = get_logger(__name__)

READY_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 40.0
PROBE_SECONDS = 0.25
# Every user signs in from 127.0.0.1, so the per-address sign-in limit
# (AUTH_RATE_LIMIT_ADDRESS, normally 30 a minute) is raised out of reach.
UNLIMITED_RATE = "1000000000/1h"
# Nine processes share one PostgreSQL whose max_connections other work on
# the machine needs too: small pools (DATABASE_POOL_SIZE, _MAX_OVERFLOW).
POOL_SIZE = "4"
POOL_OVERFLOW = "4"
ADMIN_USERNAME = "verify-operator"
MODULES = {program.name: program.module for program in PROGRAMS} | {
    "fal": "deploy.simulators.fal",
    "openrouter": "deploy.simulators.openrouter",
    "razorpay": "deploy.simulators.razorpay",
}


@dataclass
class LocalSuite:
    """A running `python -m deploy.local` and where its parts listen."""

    runner: asyncio.subprocess.Process
    environment: dict[str, str]
    database_url: str  # the server itself, not through the proxy
    proxy: PostgresProxy
    log_path: Path
    admin_password: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.environment['PORT']}"

    def simulator_url(self, name: str) -> str:
        port = self.environment[f"{name.upper()}_SIMULATOR_PORT"]
        return f"http://127.0.0.1:{port}"

    def children(self) -> dict[str, int]:
        """The runner's children now, by program name."""
        found: dict[str, int] = {}
        by_module = {module: name for name, module in MODULES.items()}
        for pid, command in _children_of(self.runner.pid):
            if len(command) > 2 and command[1] == "-m" and command[2] in by_module:
                found[by_module[command[2]]] = pid
        return found

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user and system) each child has used so far."""
        ticks = os.sysconf("SC_CLK_TCK")
        used = {}
        for name, pid in self.children().items():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            used[name] = (int(fields[11]) + int(fields[12])) / ticks
        return used

    async def kill(self, name: str) -> int:
        """SIGKILL the named child; its pid."""
        pid = self.children()[name]
        os.kill(pid, signal.SIGKILL)
        log.warning("verify.killed", name=name, pid=pid)
        return pid

    async def wait_back(self, name: str, old_pid: int, within: float) -> float:
        """Seconds until a new process of `name` serves again (the runner
        restarts it); raises TimeoutError after `within` seconds."""
        started = time.monotonic()
        async with asyncio.timeout(within):
            while True:
                pid = self.children().get(name, old_pid)
                if pid != old_pid and await self.serves(name):
                    return time.monotonic() - started
                await asyncio.sleep(PROBE_SECONDS)

    async def serves(self, name: str) -> bool:
        if name in SERVICES:
            return await _grpc_serving(self.environment[f"{name.upper()}_ADDRESS"])
        if name == "gateway":
            return await _http_ok(f"{self.url}/readyz")
        return name in self.children()

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def _children_of(parent: int) -> list[tuple[int, list[str]]]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # ended meanwhile
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent:
            found.append((int(entry.name), [part.decode() for part in command]))
    return found


async def _grpc_serving(address: str) -> bool:
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1.0
            )
        except grpc.aio.AioRpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


async def _http_ok(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2.0) as http:
            return (await http.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


def runner_environment(
    database_url: str, media_dir: Path, extra: dict[str, str], restart_crashed: bool
) -> dict[str, str]:
    addresses = {
        f"{name.upper()}_ADDRESS": f"127.0.0.1:{free_port()}" for name in SERVICES
    }
    simulators = {
        f"{name.upper()}_SIMULATOR_PORT": str(free_port())
        for name in ("razorpay", "fal", "openrouter")
    }
    port = str(free_port())
    return {
        **os.environ,
        **addresses,
        **simulators,
        "ENVIRONMENT": "development",
        "DATABASE_URL": database_url,
        "DATABASE_POOL_SIZE": POOL_SIZE,
        "DATABASE_MAX_OVERFLOW": POOL_OVERFLOW,
        "JWT_SECRET": secrets.token_urlsafe(48),
        "PORT": port,
        "GRPC_LISTEN_HOST": "127.0.0.1",
        "MEDIA_DIR": str(media_dir),
        "MEDIA_BASE_URL": f"http://127.0.0.1:{port}/media",
        "ADMIN_USERNAME": ADMIN_USERNAME,
        "ADMIN_PASSWORD": "verify-" + secrets.token_urlsafe(16),
        "AUTH_RATE_LIMIT_ACCOUNT": UNLIMITED_RATE,
        "AUTH_RATE_LIMIT_ADDRESS": UNLIMITED_RATE,
        "RUN_RESTART_CRASHED": "1" if restart_crashed else "0",
        "LOG_LEVEL": "WARNING",
        "RUN_READY_TIMEOUT_SECONDS": str(READY_TIMEOUT_SECONDS),
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "protos")]),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


async def _start_runner(
    env: dict[str, str], log_path: Path
) -> asyncio.subprocess.Process:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as output:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "deploy.local",
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )


async def _stop_runner(runner: asyncio.subprocess.Process) -> None:
    """SIGTERM: the runner stops its children; SIGKILL the whole session
    if it has not within the timeout."""
    if runner.returncode is None:
        runner.terminate()
        try:
            await asyncio.wait_for(runner.wait(), STOP_TIMEOUT_SECONDS)
        except TimeoutError:
            os.killpg(runner.pid, signal.SIGKILL)
            await runner.wait()


async def _wait_ready(suite: LocalSuite) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if suite.runner.returncode is not None:
            raise RuntimeError(f"deploy.local exited:\n{suite.log_tail()}")
        if await _http_ok(f"{suite.url}/readyz") and "worker" in suite.children():
            break
        await asyncio.sleep(0.5)
    else:
        raise RuntimeError(f"deploy.local not ready:\n{suite.log_tail()}")
    await _sign_up_once(suite)


async def _sign_up_once(suite: LocalSuite) -> None:
    """One sign-up before the crowd arrives: it proves the whole path
    (gateway, auth, workspace, billing) works and warms it up."""
    email = f"verify-first-{uuid.uuid4().hex[:12]}@example.com"
    password = "verify-" + secrets.token_urlsafe(12)
    body = {"email": email, "password": password, "name": "Verify First"}
    async with httpx.AsyncClient(base_url=suite.url, timeout=60.0) as http:
        response = await http.post("/api/auth/register", json=body)
    if response.status_code != 201:
        raise RuntimeError(
            f"the first sign-up failed: {response.status_code} {response.text}"
        )


@asynccontextmanager
async def local_suite(
    logs: Path, restart_crashed: bool = False, extra: dict[str, str] | None = None
) -> AsyncIterator[LocalSuite]:
    """`make run` on a fresh database behind a proxy, ready; stopped and
    the database dropped however the block ends."""
    async with AsyncExitStack() as stack:
        server = stack.enter_context(database.server_url())
        database_url = await database.create_database(server)
        stack.push_async_callback(database.drop_database, server, database_url)
        proxy = PostgresProxy.for_url(database_url)
        await proxy.start()
        stack.push_async_callback(proxy.stop)
        media = Path(stack.enter_context(TemporaryDirectory(prefix="verify-media-")))
        env = runner_environment(
            proxy.url_for(database_url), media, extra or {}, restart_crashed
        )
        log_path = logs / f"local-{uuid.uuid4().hex[:8]}.log"
        runner = await _start_runner(env, log_path)
        stack.push_async_callback(_stop_runner, runner)
        suite = LocalSuite(
            runner, env, database_url, proxy, log_path, env["ADMIN_PASSWORD"]
        )
        await _wait_ready(suite)
        yield suite
