"""`make run`: the whole suite on one machine, for development.

    PYTHONPATH=.:protos .venv/bin/python -m deploy.local

In order: PostgreSQL (DATABASE_URL, or an embedded server kept under
.data/postgres), the JWT secret (JWT_SECRET, or a development secret kept in
.data/jwt_secret), Razorpay (RAZORPAY_KEY_ID, or the local simulator with
keys kept in .data/razorpay_simulator.json), every schema migrated, the
operator account seeded, then every process in `PROGRAMS` (and the Razorpay
simulator) started as a child that gets this environment whole. Once each
one answers its readiness probe, the runner prints where the API docs are.
Ctrl-C or SIGTERM stops the children (SIGTERM, then SIGKILL after a grace
period) and the embedded PostgreSQL; a child that dies on its own stops the
rest, and the runner exits with status 1.

Operator options, all from the environment:
    RUN_RESTART_CRASHED=1   a long-running child that dies on its own is
        started again instead (after RESTART_BACKOFF_SECONDS, doubled while
        it keeps dying within RESTART_QUICK_EXIT_SECONDS of its start, up to
        RESTART_BACKOFF_MAX_SECONDS), each restart logged as process.restarting
    RAZORPAY_SIMULATOR_PORT, FAL_SIMULATOR_PORT, OPENROUTER_SIMULATOR_PORT
        where the simulators listen (default 3101, 3102, 3103 when free,
        else any free port); PORT and the *_ADDRESS settings place the
        gateway and the services, so two runs can share a machine
    RUN_READY_TIMEOUT_SECONDS   how long every process may take to answer
        its readiness probe (default 60) before the runner gives up
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import os
import secrets
import signal
import socket
import string
import sys
import warnings
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from libs.config import Settings
from libs.db import async_url
from libs.logs import configure_logging, get_logger

log = get_logger(__name__)

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / ".data"
POSTGRES_DIR = DATA_DIR / "postgres"
JWT_SECRET_FILE = DATA_DIR / "jwt_secret"
RAZORPAY_SIMULATOR_FILE = DATA_DIR / "razorpay_simulator.json"
RAZORPAY_SIMULATOR_PORT = 3101
FAL_SIMULATOR_PORT = 3102
OPENROUTER_SIMULATOR_PORT = 3103
SIMULATOR_KEY_NAMES = {"key_id", "key_secret", "webhook_secret"}
DATABASE_NAME = "omnihub"

READY_TIMEOUT_SECONDS = 60.0
PROBE_INTERVAL_SECONDS = 0.2
PROBE_TIMEOUT_SECONDS = 2.0
GATEWAY_READY_TIMEOUT_SECONDS = 10.0
STOP_GRACE_SECONDS = 15.0
RESTART_BACKOFF_SECONDS = 1.0
RESTART_BACKOFF_MAX_SECONDS = 30.0
RESTART_QUICK_EXIT_SECONDS = 10.0
OUTPUT_LINE_LIMIT = 1024 * 1024

# A service that is not listening yet refuses the probe's connection; without
# these, gRPC would back off for seconds before trying again.
PROBE_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


class Probe(enum.Enum):
    """How the runner tells that a process is ready; kinds are checked in
    this order, so the gateway is asked only once every service serves."""

    GRPC_HEALTH = "grpc.health.v1 answers SERVING at the service's *_ADDRESS"
    GATEWAY_READY = "GET /readyz on PORT answers 200"


@dataclass(frozen=True)
class Program:
    """A command of the suite: `python -m <module> <args>`."""

    name: str
    module: str
    args: tuple[str, ...] = ()
    probe: Probe | None = None


SERVICES = ("auth", "catalog", "generation", "chat", "workspace", "billing", "admin")

# Every long-running process of the suite, started in this order. The worker
# and the provider simulators join as more rows (probe=None: not waited for).
PROGRAMS: tuple[Program, ...] = (
    Program("auth", "services.auth.main", ("serve",), Probe.GRPC_HEALTH),
    Program("catalog", "services.catalog.main", ("serve",), Probe.GRPC_HEALTH),
    Program("generation", "services.generation.main", ("serve",), Probe.GRPC_HEALTH),
    Program("chat", "services.chat.main", ("serve",), Probe.GRPC_HEALTH),
    Program("workspace", "services.workspace.main", ("serve",), Probe.GRPC_HEALTH),
    Program("billing", "services.billing.main", ("serve",), Probe.GRPC_HEALTH),
    Program("admin", "services.admin.main", ("serve",), Probe.GRPC_HEALTH),
    Program("worker", "services.generation.worker"),
    Program("gateway", "gateway.main", (), Probe.GATEWAY_READY),
)

# One-off commands run before the suite starts. The commands of a stage run
# side by side (each migration locks only its own schema); the stages run in
# order, and a command that fails stops the runner.
SETUP_STAGES: tuple[tuple[Program, ...], ...] = (
    tuple(
        Program(f"{name} migrate", f"services.{name}.main", ("migrate",))
        for name in SERVICES
    ),
    (Program("auth ensure-admin", "services.auth.main", ("ensure-admin",)),),
)

PREFIX_WIDTH = max(len(program.name) for program in PROGRAMS)


@dataclass(frozen=True)
class SimulatedRazorpay:
    """The local Razorpay simulator this run starts, and its keys."""

    port: int
    key_id: str
    key_secret: str
    webhook_secret: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def program(self) -> Program:
        return Program(
            "razorpay", "deploy.simulators.razorpay", ("--port", str(self.port))
        )

    def environment(self, gateway_port: int) -> dict[str, str]:
        """Billing's Razorpay settings, and the simulator's own: it sends its
        webhooks to the gateway, which hands them to billing."""
        return {
            "RAZORPAY_BASE_URL": self.url,
            "RAZORPAY_KEY_ID": self.key_id,
            "RAZORPAY_KEY_SECRET": self.key_secret,
            "RAZORPAY_WEBHOOK_SECRET": self.webhook_secret,
            "RAZORPAY_WEBHOOK_URL": (
                f"http://127.0.0.1:{gateway_port}/api/payments/webhook"
            ),
        }


@dataclass(frozen=True)
class SimulatedProvider:
    """A local fal or OpenRouter this run starts instead of the real one,
    and the settings that point OmniHub at it."""

    name: str
    module: str
    port: int
    key: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def program(self) -> Program:
        return Program(self.name, self.module, ("--port", str(self.port)))

    def environment(self, gateway_port: int) -> dict[str, str]:
        if self.name == "fal":
            return {
                "FAL_KEY": self.key,
                "FAL_QUEUE_URL": self.url,
                "FAL_JWKS_URL": f"{self.url}/.well-known/jwks.json",
                "FAL_USER_ID": "omnihub-local",
                "FAL_WEBHOOK_URL": f"http://127.0.0.1:{gateway_port}/api/webhooks/fal",
            }
        return {
            "OPENROUTER_API_KEY": self.key,
            "OPENROUTER_BASE_URL": f"{self.url}/api/v1",
        }


def simulated_providers(settings: Settings) -> list[SimulatedProvider]:
    """The fal and OpenRouter simulators for a run without FAL_KEY or
    OPENROUTER_API_KEY (never in production). Each gets a fresh key."""
    if settings.is_production:
        return []
    found = []
    if settings.fal_key is None:
        found.append(
            SimulatedProvider(
                "fal",
                "deploy.simulators.fal",
                _simulator_port("FAL_SIMULATOR_PORT", FAL_SIMULATOR_PORT),
                secrets.token_urlsafe(24),
            )
        )
    if settings.openrouter_api_key is None:
        found.append(
            SimulatedProvider(
                "openrouter",
                "deploy.simulators.openrouter",
                _simulator_port("OPENROUTER_SIMULATOR_PORT", OPENROUTER_SIMULATOR_PORT),
                secrets.token_urlsafe(24),
            )
        )
    for provider in found:
        log.warning(
            f"{provider.name}.simulated",
            port=provider.port,
            hint=f"No {provider.name} key is set, so its calls go to the local "
            "simulator, whose results are marked simulated.",
        )
    return found


class Stopped(Exception):
    """The suite has to stop; the subclass says whether that is a failure."""


class Interrupted(Stopped):
    """SIGINT or SIGTERM: the operator asked the suite to stop."""


class SuiteFailed(Stopped):
    """Something went wrong; the message names the part that did."""


async def _relay(stream: asyncio.StreamReader, name: str) -> None:
    """Copy a child's output to ours, each line prefixed with its name."""
    prefix = f"{name:<{PREFIX_WIDTH}} | "
    while True:
        try:
            line = await stream.readline()
        except ValueError:  # a line longer than OUTPUT_LINE_LIMIT is dropped
            continue
        if not line:
            return
        print(prefix + line.decode(errors="replace").rstrip("\r\n"), flush=True)


@dataclass
class Child:
    program: Program
    process: asyncio.subprocess.Process
    output: asyncio.Task[None]

    @classmethod
    async def spawn(cls, program: Program, env: dict[str, str]) -> Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            program.module,
            *program.args,
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            limit=OUTPUT_LINE_LIMIT,
            # A process group of its own: Ctrl-C in the terminal reaches only
            # the runner, which then stops the children itself.
            process_group=0,
        )
        assert process.stdout is not None
        output = asyncio.create_task(_relay(process.stdout, program.name))
        log.info("process.started", name=program.name, pid=process.pid)
        return cls(program, process, output)

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def send(self, signum: signal.Signals) -> None:
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)

    async def wait(self) -> int:
        code = await self.process.wait()
        await self.output
        return code


def exit_status(code: int) -> str:
    """`exit code 1`, or `signal SIGTERM` for a process a signal ended (as
    uvicorn ends itself after a graceful stop)."""
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"exit code {code}"


async def _reap(child: Child) -> None:
    code = await child.wait()
    log.info("process.exited", name=child.program.name, status=exit_status(code))


async def terminate(children: list[Child], hurry: asyncio.Event) -> None:
    """SIGTERM every running child; SIGKILL those still running after the
    grace period, or at once when `hurry` is set (a second Ctrl-C)."""
    running = [child for child in children if child.running]
    for child in running:
        child.send(signal.SIGTERM)
    exits: asyncio.Future[Any] = asyncio.gather(*(_reap(c) for c in running))
    hurried: asyncio.Future[Any] = asyncio.ensure_future(hurry.wait())
    await asyncio.wait(
        {exits, hurried},
        timeout=STOP_GRACE_SECONDS,
        return_when=asyncio.FIRST_COMPLETED,
    )
    hurried.cancel()
    for child in running:
        if child.running:
            log.warning(
                "process.killed", name=child.program.name, pid=child.process.pid
            )
            child.send(signal.SIGKILL)
    await exits
    for child in children:
        await child.wait()  # drains what the ones that ended earlier printed


class Suite:
    """The children of the runner and the one reason it stops."""

    def __init__(self, env: dict[str, str], restart_crashed: bool = False) -> None:
        self._env = env
        self._restart_crashed = restart_crashed
        self._children: list[Child] = []
        self._watchers: list[asyncio.Task[None]] = []
        self._stop: asyncio.Future[Stopped] = asyncio.get_running_loop().create_future()
        self._hurry = asyncio.Event()

    def interrupt(self, signum: signal.Signals) -> None:
        if self._stop.done():
            self._hurry.set()
            return
        log.info("suite.interrupted", signal=signum.name)
        self._stop.set_result(Interrupted(signum.name))

    def _fail(self, reason: str) -> None:
        if not self._stop.done():
            self._stop.set_result(SuiteFailed(reason))

    async def guard(self, work: Awaitable[T]) -> T:
        """Await `work`, unless the suite has to stop first: then cancel it
        and raise the reason."""
        task = asyncio.ensure_future(work)
        stop: asyncio.Future[Any] = self._stop
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise self._stop.result()
        return task.result()

    async def until_stopped(self) -> None:
        raise await self._stop

    @property
    def pids(self) -> dict[str, int]:
        """The process id of each long-running child now, by name."""
        return {c.program.name: c.process.pid for c in self._children}

    async def run_stage(self, stage: tuple[Program, ...]) -> None:
        children = [await Child.spawn(program, self._env) for program in stage]
        try:
            for child in children:
                code = await child.wait()
                if code != 0:
                    raise SuiteFailed(
                        f"{child.program.name} failed ({exit_status(code)})"
                    )
        finally:
            await terminate(children, self._hurry)

    async def start(self, programs: tuple[Program, ...]) -> None:
        for program in programs:
            if self._stop.done():  # told to stop while starting the others
                raise self._stop.result()
            child = await Child.spawn(program, self._env)
            self._children.append(child)
            self._watchers.append(asyncio.create_task(self._watch(child)))

    async def _watch(self, child: Child) -> None:
        backoff = RESTART_BACKOFF_SECONDS
        while True:
            started = asyncio.get_running_loop().time()
            code = await child.process.wait()
            status = exit_status(code)
            if not self._restart_crashed or self._stop.done():
                self._fail(f"{child.program.name} stopped unexpectedly ({status})")
                return
            lived = asyncio.get_running_loop().time() - started
            if lived >= RESTART_QUICK_EXIT_SECONDS:
                backoff = RESTART_BACKOFF_SECONDS
            log.warning(
                "process.restarting",
                name=child.program.name,
                status=status,
                after_seconds=backoff,
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RESTART_BACKOFF_MAX_SECONDS)
            await child.wait()  # drains its last output
            child = await self._respawn(child)

    async def _respawn(self, child: Child) -> Child:
        fresh = await Child.spawn(child.program, self._env)
        self._children[self._children.index(child)] = fresh
        return fresh

    async def stop(self) -> None:
        # Watchers first, so none restarts a child the stop just ended.
        for watcher in self._watchers:
            watcher.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        await terminate(self._children, self._hurry)


async def _grpc_serving(name: str, address: str, waiting: dict[str, str]) -> None:
    async with grpc.aio.insecure_channel(
        address, options=PROBE_CHANNEL_OPTIONS
    ) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = await health.Check(
                    health_pb2.HealthCheckRequest(), timeout=PROBE_TIMEOUT_SECONDS
                )
            except grpc.aio.AioRpcError as exc:
                waiting[name] = f"{address} answered {exc.code().name}"
            else:
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                waiting[name] = f"{address} is {status}"
            await asyncio.sleep(PROBE_INTERVAL_SECONDS)


async def _gateway_ready(name: str, port: int, waiting: dict[str, str]) -> None:
    url = f"http://127.0.0.1:{port}/readyz"
    async with httpx.AsyncClient(timeout=GATEWAY_READY_TIMEOUT_SECONDS) as http:
        while True:
            try:
                response = await http.get(url)
            except httpx.HTTPError as exc:
                waiting[name] = f"{url}: {type(exc).__name__}"
            else:
                if response.status_code == 200:
                    return
                waiting[name] = f"{url} answered {response.status_code}"
            await asyncio.sleep(PROBE_INTERVAL_SECONDS)


async def _until_ready(
    program: Program, settings: Settings, waiting: dict[str, str]
) -> None:
    if program.probe is Probe.GRPC_HEALTH:
        address = settings.address_of(program.name)
        await _grpc_serving(program.name, address, waiting)
    else:
        await _gateway_ready(program.name, settings.port, waiting)
    del waiting[program.name]
    log.info("process.ready", name=program.name)


async def wait_until_ready(settings: Settings) -> None:
    waiting = {p.name: "not checked yet" for p in PROGRAMS if p.probe is not None}
    timeout = ready_timeout()
    try:
        async with asyncio.timeout(timeout):
            for probe in Probe:
                await asyncio.gather(
                    *(
                        _until_ready(program, settings, waiting)
                        for program in PROGRAMS
                        if program.probe is probe
                    )
                )
    except TimeoutError:
        parts = "; ".join(f"{name} ({seen})" for name, seen in waiting.items())
        raise SuiteFailed(f"not ready after {timeout:.0f} s: {parts}") from None


def ready_timeout() -> float:
    configured = os.environ.get("RUN_READY_TIMEOUT_SECONDS")
    if not configured:
        return READY_TIMEOUT_SECONDS
    try:
        return float(configured)
    except ValueError:
        raise SuiteFailed("RUN_READY_TIMEOUT_SECONDS must be a number") from None


def print_welcome(settings: Settings, razorpay: SimulatedRazorpay | None) -> None:
    base = f"http://localhost:{settings.port}"
    docs = f"{base}/docs" if settings.show_docs else "off (DOCS_ENABLED=false)"
    if settings.admin_username and settings.admin_password:
        admin, password = settings.admin_username.strip().lower(), "ADMIN_PASSWORD"
    else:
        admin, password = "admin", "the password printed when it was created"
    print(
        f"\nOmniHub is ready. API docs: {docs}\n"
        f"  Sign up:   POST {base}/api/auth/register "
        '{"email": ..., "password": ..., "name": ...}, '
        f"then POST {base}/api/auth/login\n"
        f"  Operator:  POST {base}/api/admin/login "
        f'{{"username": "{admin}", "password": <{password}>}}\n'
        f"{_payments_line(settings, razorpay, base)}"
        "  Stop:      Ctrl-C\n",
        flush=True,
    )


def _payments_line(
    settings: Settings, razorpay: SimulatedRazorpay | None, base: str
) -> str:
    if razorpay is not None:
        return (
            f"  Payments:  SIMULATED (Razorpay simulator at {razorpay.url}; set "
            "RAZORPAY_KEY_ID for real ones). Buy credits: POST "
            f"{base}/api/payments/create-order, then "
            f"{base}/api/payments/simulated-checkout and /api/payments/verify\n"
        )
    if settings.razorpay_key_id:
        return f"  Payments:  Razorpay at {settings.razorpay_base_url}\n"
    return "  Payments:  off (no RAZORPAY_KEY_ID)\n"


async def supervise(
    settings: Settings,
    env: dict[str, str],
    razorpay: SimulatedRazorpay | None,
    providers: list[SimulatedProvider] | None = None,
) -> None:
    """Run the suite until a signal (returns) or a failure (raises)."""
    suite = Suite(env, restart_crashed=restarts_crashed())
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, suite.interrupt, signum)
    try:
        for stage in SETUP_STAGES:
            await suite.guard(suite.run_stage(stage))
        # Simulators start first: services call them from their first request.
        if razorpay is not None:
            await suite.start((razorpay.program(),))
        await suite.start(tuple(p.program() for p in providers or ()))
        await suite.start(PROGRAMS)
        await suite.guard(wait_until_ready(settings))
        print_welcome(settings, razorpay)
        for provider in providers or ():
            print(f"  {provider.name}: SIMULATED at {provider.url}", flush=True)
        await suite.until_stopped()
    except Interrupted:
        log.info("suite.stopping")
    finally:
        await suite.stop()


def restarts_crashed() -> bool:
    """RUN_RESTART_CRASHED=1 (or true, yes): restart a child that dies."""
    wanted = os.environ.get("RUN_RESTART_CRASHED", "").strip().lower()
    return wanted in {"1", "true", "yes"}


def development_secret() -> str:
    """This checkout's JWT secret: made on first use, then read back, so
    tokens stay valid across restarts."""
    if JWT_SECRET_FILE.exists():
        kept = JWT_SECRET_FILE.read_text().strip()
        if kept:
            log.info("jwt_secret.development_reused", path=str(JWT_SECRET_FILE))
            return kept
    secret = secrets.token_urlsafe(48)
    DATA_DIR.mkdir(exist_ok=True)
    descriptor = os.open(JWT_SECRET_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(secret + "\n")
    JWT_SECRET_FILE.chmod(0o600)  # an existing empty file kept its old mode
    log.warning(
        "jwt_secret.development_generated",
        path=str(JWT_SECRET_FILE),
        hint="JWT_SECRET is unset, so a random development secret was made and "
        "kept in this file. Set JWT_SECRET for anything but local development.",
    )
    return secret


def signing_secret(settings: Settings) -> str:
    configured = settings.jwt_secret.get_secret_value() if settings.jwt_secret else ""
    if configured:
        return configured
    if settings.is_production:
        raise SuiteFailed("JWT_SECRET is required when ENVIRONMENT=production")
    return development_secret()


def simulated_razorpay(settings: Settings) -> SimulatedRazorpay | None:
    """The Razorpay simulator for a run without RAZORPAY_KEY_ID (never in
    production, where payments then stay off): its keys are made on first
    use and kept in .data, so orders survive a restart, and it listens on
    RAZORPAY_SIMULATOR_PORT, or 3101 if free, or any free port."""
    if settings.razorpay_key_id or settings.is_production:
        return None
    keys = _simulator_keys()
    port = _simulator_port("RAZORPAY_SIMULATOR_PORT", RAZORPAY_SIMULATOR_PORT)
    log.warning(
        "razorpay.simulated",
        port=port,
        hint="RAZORPAY_KEY_ID is unset, so payments go to the local Razorpay "
        "simulator. Set RAZORPAY_KEY_ID and RAZORPAY_KEY_SECRET for real ones.",
    )
    return SimulatedRazorpay(port, **keys)


def _simulator_keys() -> dict[str, str]:
    if RAZORPAY_SIMULATOR_FILE.exists():
        with contextlib.suppress(ValueError):
            kept = json.loads(RAZORPAY_SIMULATOR_FILE.read_text())
            if isinstance(kept, dict) and kept.keys() == SIMULATOR_KEY_NAMES:
                return {name: str(kept[name]) for name in SIMULATOR_KEY_NAMES}
    alphabet = string.ascii_letters + string.digits
    keys = {
        "key_id": "rzp_test_" + "".join(secrets.choice(alphabet) for _ in range(14)),
        "key_secret": secrets.token_urlsafe(24),
        "webhook_secret": secrets.token_urlsafe(24),
    }
    _write_private(RAZORPAY_SIMULATOR_FILE, json.dumps(keys) + "\n")
    log.info("razorpay.simulator_keys_generated", path=str(RAZORPAY_SIMULATOR_FILE))
    return keys


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner may read."""
    DATA_DIR.mkdir(exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    path.chmod(0o600)  # an existing file kept its old mode


def _simulator_port(variable: str, preferred: int) -> int:
    """The port `variable` names, else `preferred` if free, else any."""
    configured = os.environ.get(variable)
    if not configured:
        return _free_port(preferred)
    try:
        return int(configured)
    except ValueError:
        raise SuiteFailed(f"{variable} must be a port number") from None


def _free_port(preferred: int) -> int:
    """`preferred` if nothing listens there, else one the system picks."""
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            chosen: int = sock.getsockname()[1]
            return chosen
    raise SuiteFailed(f"no free port (wanted {preferred})")


async def create_database(server_url: str, name: str) -> None:
    # CREATE DATABASE cannot run inside a transaction.
    engine = create_async_engine(async_url(server_url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            exists = await connection.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"),
                {"name": name},
            )
            if not exists:
                await connection.execute(text(f'CREATE DATABASE "{name}"'))
                log.info("database.created", name=name)
    finally:
        await engine.dispose()


@contextmanager
def embedded_postgres() -> Iterator[str]:
    """PostgreSQL under .data/postgres: its data outlives the run, the server
    stops when the runner does."""
    with warnings.catch_warnings():
        # platformdirs warns on import where XDG_RUNTIME_DIR is unset (as in
        # containers); pgserver then keeps its lock file under /tmp, which is
        # fine for a development server.
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import get_server

    DATA_DIR.mkdir(exist_ok=True)
    log.info("postgres.starting", data_dir=str(POSTGRES_DIR))
    server = get_server(POSTGRES_DIR, cleanup_mode="stop")
    try:
        asyncio.run(create_database(server.get_uri(), DATABASE_NAME))
        yield server.get_uri(DATABASE_NAME)
    finally:
        server.cleanup()
        log.info("postgres.closed")


@contextmanager
def database(settings: Settings) -> Iterator[str]:
    if settings.database_url:
        log.info("database.configured")  # the URL may hold a password
        yield settings.database_url
        return
    with embedded_postgres() as url:
        yield url


def child_environment(
    database_url: str,
    jwt_secret: str,
    razorpay: dict[str, str] | None = None,
    providers: dict[str, str] | None = None,
) -> dict[str, str]:
    """The runner's environment, which every child gets whole, plus what the
    runner chose."""
    search_path = [str(ROOT), str(ROOT / "protos")]
    if os.environ.get("PYTHONPATH"):
        search_path.append(os.environ["PYTHONPATH"])
    return {
        **os.environ,
        **(razorpay or {}),
        **(providers or {}),
        "DATABASE_URL": database_url,
        "JWT_SECRET": jwt_secret,
        "PYTHONPATH": os.pathsep.join(search_path),
        # Lines reach the terminal when written, not when a buffer fills.
        "PYTHONUNBUFFERED": "1",
    }


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        print(f"The environment is not valid:\n{exc}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    settings = load_settings()
    configure_logging(settings, "local")
    try:
        secret = signing_secret(settings)
        razorpay = simulated_razorpay(settings)
        providers = simulated_providers(settings)
        provider_env: dict[str, str] = {}
        for provider in providers:
            provider_env |= provider.environment(settings.port)
        if "MEDIA_BASE_URL" not in os.environ:
            provider_env["MEDIA_BASE_URL"] = f"http://localhost:{settings.port}/media"
        with database(settings) as database_url:
            env = child_environment(
                database_url,
                secret,
                razorpay.environment(settings.port) if razorpay else None,
                provider_env,
            )
            asyncio.run(supervise(settings, env, razorpay, providers))
    except SuiteFailed as failure:
        log.error("suite.failed", reason=str(failure))
        sys.exit(1)
    except KeyboardInterrupt:  # Ctrl-C before the children were started
        sys.exit(130)
    log.info("suite.stopped")


if __name__ == "__main__":
    main()
