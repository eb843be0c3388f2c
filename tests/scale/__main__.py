"""`make scale-test`, or

    python -m tests.scale [--users 20] [--duration 60] [--kill-after 20]

Starts, on a fresh database (TEST_DATABASE_URL's server, else an embedded
PostgreSQL), the local fal and OpenRouter, two replicas of every service,
two workers and two gateways; runs `--users` simulated users through both
gateways in turn for `--duration` seconds; SIGKILLs replica 2 of every
service, worker 2 and gateway 2 after `--kill-after` seconds; then checks
what the issue asks and writes bench-results/scale-<time>.md. Exits 1 when
a check fails. Each process's output is in bench-results/logs/scale-<time>/.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import secrets
import signal
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from deploy.local import SERVICES
from libs.db import async_url
from libs.grpc.client import service_descriptor
from tests import database
from tests.bench import processes
from tests.bench.processes import Child, ChildFailed
from tests.bench.report import markdown_table
from tests.database import ROOT
from tests.suite import free_port

# Replica n of every service listens on REPLICA_HOSTS[n - 1], all on one
# port per service: the whole 127.0.0.0/8 is loopback on Linux.
REPLICA_HOSTS = ("127.0.0.1", "127.0.0.2")
KILLED = 2
IMAGE_MODEL = "fal-flux-pro-v1.1"
CHAT_MODEL = "openai/gpt-4o-mini"
PASSWORD = "scale-password-" + uuid.uuid4().hex[:12]
UNLIMITED_RATE = "1000000000/1h"
FAL_USER_ID = "omnihub-local"
FINISHED = ("completed", "failed", "cancelled")
# How long a user waits for their generation, and for sign-up credits.
GENERATION_WAIT_SECONDS = 60.0
CREDITS_WAIT_SECONDS = 15.0
POLL_SECONDS = 0.5
# After the load: how long generations and settlements may take to finish.
GRACE_SECONDS = 60.0
# A killed worker's jobs go back to the queue when their lease runs out.
WORKER_LEASE = "10s"
RETRYABLE = {(503, "unavailable"), (504, "deadline_exceeded")}
HTTP_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Options:
    users: int
    duration: float
    kill_after: float
    results_dir: Path


# --- The suite ----------------------------------------------------------------


@dataclass
class Suite:
    database_url: str
    environment: dict[str, str]
    gateways: list[str]
    # Every process by name: "auth-1", "worker-2", "gateway-1", "fal", ...
    children: dict[str, Child] = field(default_factory=dict)
    # Each replica's Prometheus /metrics URL, by service and replica number.
    metrics: dict[str, dict[int, str]] = field(default_factory=dict)


def _address(port: int) -> str:
    """Both replicas as one gRPC target; clients balance over them."""
    return "ipv4:" + ",".join(f"{host}:{port}" for host in REPLICA_HOSTS)


def _environment(database_url: str, media_dir: Path) -> tuple[dict[str, str], int, int]:
    """The suite's shared settings, and the ports of the local fal and
    OpenRouter (webhook and media URLs name gateway 1, which stays up)."""
    fal_port, openrouter_port = free_port(), free_port()
    fal = f"http://127.0.0.1:{fal_port}"
    gateway = f"http://127.0.0.1:{free_port()}"
    addresses = {f"{name.upper()}_ADDRESS": _address(free_port()) for name in SERVICES}
    environment = processes.child_environment(
        {
            **addresses,
            "ENVIRONMENT": "production",
            "LOG_LEVEL": "WARNING",
            "DATABASE_URL": database_url,
            "JWT_SECRET": secrets.token_urlsafe(48),
            "PORT": gateway.rsplit(":", 1)[1],
            "AUTH_RATE_LIMIT_ACCOUNT": UNLIMITED_RATE,
            "AUTH_RATE_LIMIT_ADDRESS": UNLIMITED_RATE,
            "WORKER_LEASE": WORKER_LEASE,
            "FAL_KEY": secrets.token_urlsafe(24),
            "FAL_QUEUE_URL": fal,
            "FAL_JWKS_URL": f"{fal}/.well-known/jwks.json",
            "FAL_USER_ID": FAL_USER_ID,
            "FAL_WEBHOOK_URL": f"{gateway}/api/webhooks/fal",
            "OPENROUTER_API_KEY": secrets.token_urlsafe(24),
            "OPENROUTER_BASE_URL": f"http://127.0.0.1:{openrouter_port}/api/v1",
            "MEDIA_DIR": str(media_dir),
            "MEDIA_BASE_URL": f"{gateway}/media",
        }
    )
    return environment, fal_port, openrouter_port


async def _start_simulators(
    stack: AsyncExitStack, suite: Suite, fal_port: int, openrouter_port: int, logs: Path
) -> None:
    env = suite.environment
    for name, port, ready in (
        ("fal", fal_port, env["FAL_JWKS_URL"]),
        (
            "openrouter",
            openrouter_port,
            f"http://127.0.0.1:{openrouter_port}/simulator/faults",
        ),
    ):
        child = await processes.start(
            name, [f"deploy.simulators.{name}", "--port", str(port)], env, logs
        )
        stack.push_async_callback(child.stop)
        suite.children[name] = child
        await processes.wait_until(child, processes.http_ok(ready))


async def _migrate(env: dict[str, str], logs: Path) -> None:
    """Each schema once, side by side, before any replica starts."""
    await asyncio.gather(
        *(
            processes.run_to_completion(
                f"{name}-migrate", [f"services.{name}.main", "migrate"], env, logs
            )
            for name in SERVICES
        )
    )


async def _start_replicas(stack: AsyncExitStack, suite: Suite, logs: Path) -> None:
    for name in SERVICES:
        metrics_port = free_port()
        suite.metrics[name] = {}
        for number, host in enumerate(REPLICA_HOSTS, start=1):
            env = {
                **suite.environment,
                "GRPC_LISTEN_HOST": host,
                "METRICS_PORT": str(metrics_port),
            }
            child = await processes.start(
                f"{name}-{number}", [f"services.{name}.main", "serve"], env, logs
            )
            stack.push_async_callback(child.stop)
            suite.children[child.name] = child
            suite.metrics[name][number] = f"http://{host}:{metrics_port}/metrics"
    for name in SERVICES:
        port = int(suite.environment[f"{name.upper()}_ADDRESS"].rsplit(":", 1)[1])
        full_name = service_descriptor(name).full_name
        for number, host in enumerate(REPLICA_HOSTS, start=1):
            await processes.wait_until(
                suite.children[f"{name}-{number}"],
                processes.grpc_serving(f"{host}:{port}", full_name),
            )


async def _start_workers_and_gateways(
    stack: AsyncExitStack, suite: Suite, logs: Path
) -> None:
    for number, host in enumerate(REPLICA_HOSTS, start=1):
        env = {**suite.environment, "GRPC_LISTEN_HOST": host}
        worker = await processes.start(
            f"worker-{number}", ["services.generation.worker"], env, logs
        )
        stack.push_async_callback(worker.stop)
        suite.children[worker.name] = worker
    first = suite.environment["PORT"]
    for number, port in enumerate((first, str(free_port())), start=1):
        env = {**suite.environment, "PORT": port}
        gateway = await processes.start(
            f"gateway-{number}", ["gateway.main"], env, logs
        )
        stack.push_async_callback(gateway.stop)
        suite.children[gateway.name] = gateway
        url = f"http://127.0.0.1:{port}"
        await processes.wait_until(gateway, processes.http_ok(f"{url}/readyz"))
        suite.gateways.append(url)


@asynccontextmanager
async def started_suite(logs: Path) -> AsyncIterator[Suite]:
    """Everything started and ready; stopped (and the database dropped)
    however the run ends."""
    async with AsyncExitStack() as stack:
        server = stack.enter_context(database.server_url())
        database_url = await database.create_database(server)
        stack.push_async_callback(database.drop_database, server, database_url)
        media = Path(stack.enter_context(TemporaryDirectory(prefix="scale-media-")))
        env, fal_port, openrouter_port = _environment(database_url, media)
        suite = Suite(database_url, env, gateways=[])
        await _start_simulators(stack, suite, fal_port, openrouter_port, logs)
        await _migrate(env, logs)
        await _start_replicas(stack, suite, logs)
        await _start_workers_and_gateways(stack, suite, logs)
        yield suite


# --- Requests -----------------------------------------------------------------


@dataclass
class Route:
    """What the requests of one route came to."""

    seconds: list[float] = field(default_factory=list)
    ok: int = 0
    retryable: int = 0
    # Connections to the killed gateway that broke with it.
    lost: int = 0
    other: int = 0

    @property
    def count(self) -> int:
        return self.ok + self.retryable + self.lost + self.other


class Retryable(Exception):
    """The request failed in a way a client may try again; the user starts
    over with a new account."""


class Unexpected(Exception):
    """Neither the answer expected nor a retryable error."""


@dataclass
class Traffic:
    """Every request the simulated users made, by route and by gateway."""

    gateways: list[str]
    routes: dict[str, Route] = field(default_factory=dict)
    by_gateway: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    # Retryable answers by (route, status and code, before or after the kill).
    retryable: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    dead: set[str] = field(default_factory=set)
    killed: bool = False
    _turn: itertools.count[int] = field(default_factory=itertools.count)

    def gateway(self) -> str:
        """The live gateways in turn."""
        live = [url for url in self.gateways if url not in self.dead]
        return live[next(self._turn) % len(live)]

    def route(self, name: str) -> Route:
        return self.routes.setdefault(name, Route())

    def count_retryable(self, route: str, answer: str) -> None:
        when = "after the kill" if self.killed else "before the kill"
        self.retryable[route, answer, when] += 1


def _error_code(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("code", "")) if isinstance(body, dict) else ""


class Client:
    """One simulated user's HTTP client, speaking to the gateways in turn."""

    def __init__(self, http: httpx.AsyncClient, traffic: Traffic) -> None:
        self._http = http
        self._traffic = traffic
        self.headers: dict[str, str] = {}

    async def call(
        self,
        route: str,
        method: str,
        path: str,
        expected: int = 200,
        **kwargs: Any,
    ) -> Any:
        """The JSON body of the expected answer; Retryable or Unexpected
        otherwise, counted under `route` either way."""
        gateway = self._traffic.gateway()
        tally = self._traffic.route(route)
        headers = {**self.headers, **kwargs.pop("headers", {})}
        started = time.perf_counter()
        try:
            response = await self._http.request(
                method, gateway + path, headers=headers, **kwargs
            )
        except httpx.TransportError as error:
            tally.seconds.append(time.perf_counter() - started)
            if gateway in self._traffic.dead:
                tally.lost += 1
                raise Retryable(f"{route}: {gateway} was killed") from error
            tally.other += 1
            self._traffic.failures.append(f"{route} via {gateway}: {error!r}")
            raise Unexpected(route) from error
        tally.seconds.append(time.perf_counter() - started)
        self._traffic.by_gateway[gateway] += 1
        if response.status_code == expected:
            tally.ok += 1
            return response.json()
        code = _error_code(response)
        if (response.status_code, code) in RETRYABLE:
            tally.retryable += 1
            self._traffic.count_retryable(route, f"{response.status_code} {code}")
            raise Retryable(f"{route}: {response.status_code} {code}")
        tally.other += 1
        self._traffic.failures.append(
            f"{route} via {gateway}: {response.status_code} {response.text[:300]}"
        )
        raise Unexpected(route)


@dataclass
class Outcomes:
    """What the simulated users saw beyond single requests."""

    flows: int = 0
    restarted: int = 0
    generations: Counter[str] = field(default_factory=Counter)


async def _wait_for_credits(client: Client) -> None:
    """Sign-up credits arrive through auth's outbox, a moment after sign-up."""
    deadline = time.monotonic() + CREDITS_WAIT_SECONDS
    while time.monotonic() < deadline:
        me = await client.call("GET /api/auth/me", "GET", "/api/auth/me")
        if me.get("credits"):
            return
        await asyncio.sleep(POLL_SECONDS)
    raise Unexpected("no sign-up credits")


async def _generation_status(client: Client, generation_id: str) -> str:
    deadline = time.monotonic() + GENERATION_WAIT_SECONDS
    while time.monotonic() < deadline:
        found = await client.call(
            "GET /api/generations/{id}", "GET", f"/api/generations/{generation_id}"
        )
        if found["status"] in FINISHED:
            return str(found["status"])
        await asyncio.sleep(POLL_SECONDS)
    return "unfinished after a minute"


async def _flow(client: Client, outcomes: Outcomes) -> None:
    """One new user's way through the product."""
    email = f"scale-{uuid.uuid4().hex[:16]}@example.com"
    account = {"email": email, "password": PASSWORD}
    await client.call(
        "POST /api/auth/register",
        "POST",
        "/api/auth/register",
        expected=201,
        json={**account, "name": "Scale"},
    )
    session = await client.call(
        "POST /api/auth/login", "POST", "/api/auth/login", json=account
    )
    client.headers = {"Authorization": f"Bearer {session['accessToken']}"}
    await _wait_for_credits(client)
    await client.call("GET /api/models", "GET", "/api/models")
    body = {"model": IMAGE_MODEL, "type": "image", "prompt": f"scale {uuid.uuid4()}"}
    created = await client.call(
        "POST /api/generate", "POST", "/api/generate", expected=201, json=body
    )
    generation_id = created["generations"][0]["id"]
    outcomes.generations[await _generation_status(client, generation_id)] += 1
    conversation = await client.call(
        "POST /api/chat/conversations",
        "POST",
        "/api/chat/conversations",
        expected=201,
        json={"modelId": CHAT_MODEL, "title": "Scale"},
    )
    await client.call(
        "POST /api/chat/.../messages",
        "POST",
        f"/api/chat/conversations/{conversation['id']}/messages",
        expected=201,
        json={"content": "Say something short."},
        headers={"Accept": "application/json"},
    )
    await client.call("GET /api/generations", "GET", "/api/generations?limit=20")


async def _user(
    http: httpx.AsyncClient, traffic: Traffic, outcomes: Outcomes, until: float
) -> None:
    """Flows one after another until `until`; a retryable error starts a new
    flow, as a client that tries again would."""
    while time.monotonic() < until:
        client = Client(http, traffic)
        try:
            await _flow(client, outcomes)
            outcomes.flows += 1
        except Retryable:
            outcomes.restarted += 1
            await asyncio.sleep(0.2)
        except Unexpected:
            await asyncio.sleep(0.2)


# --- Replicas -----------------------------------------------------------------


async def _rpcs_served(url: str) -> int:
    """Calls to OmniHub's own services (health checks aside) this replica
    has finished, from its Prometheus metrics."""
    async with httpx.AsyncClient(timeout=5.0) as http:
        text = (await http.get(url)).text
    served = 0.0
    for line in text.splitlines():
        if line.startswith("omnihub_grpc_server_handled_total{") and (
            'grpc_service="omnihub.' in line
        ):
            served += float(line.rsplit(" ", 1)[1])
    return int(served)


async def _served_by_replica(suite: Suite) -> dict[str, dict[int, int]]:
    return {
        name: {n: await _rpcs_served(url) for n, url in urls.items()}
        for name, urls in suite.metrics.items()
    }


async def _kill(suite: Suite, traffic: Traffic) -> list[str]:
    """SIGKILL replica KILLED of every service, its worker and its gateway
    (whose users turn to the other gateway from now on)."""
    killed = [f"{name}-{KILLED}" for name in SERVICES]
    killed += [f"worker-{KILLED}", f"gateway-{KILLED}"]
    traffic.dead.add(suite.gateways[KILLED - 1])
    traffic.killed = True
    for name in killed:
        suite.children[name].process.kill()
    for name in killed:
        await suite.children[name].process.wait()
    return killed


# --- Afterwards ---------------------------------------------------------------


UNFINISHED = (
    "SELECT count(*) FROM generation.generations "
    "WHERE status IN ('pending', 'processing') "
    "OR (settlement IS NOT NULL AND settled_at IS NULL)"
)
UNSETTLED = (
    "SELECT count(*) FROM generation.generations "
    "WHERE settlement IS NOT NULL AND settled_at IS NULL"
)
BY_STATUS = "SELECT status, count(*) FROM generation.generations GROUP BY status"
HELD_FOR_FINISHED = (
    "SELECT count(*) FROM billing.holds AS h "
    "JOIN generation.generations AS g ON h.reference = g.id::text "
    "WHERE h.status = 'held' AND g.status IN ('completed', 'failed', 'cancelled')"
)
HELD = "SELECT count(*) FROM billing.holds WHERE status = 'held'"


async def _settled(database_url: str) -> dict[str, int]:
    """Where every generation ended once the grace time allowed, and the
    credits still held: for finished generations, and at all."""
    engine = create_async_engine(async_url(database_url))
    try:
        async with engine.connect() as db:
            deadline = time.monotonic() + GRACE_SECONDS
            while await db.scalar(text(UNFINISHED)) and time.monotonic() < deadline:
                await db.rollback()
                await asyncio.sleep(1.0)
            rows = (await db.execute(text(BY_STATUS))).all()
            counts = {str(status): int(n) for status, n in rows}
            counts["unsettled"] = int(await db.scalar(text(UNSETTLED)) or 0)
            found = await db.scalar(text(HELD_FOR_FINISHED))
            counts["held for finished generations"] = int(found or 0)
            counts["held (all)"] = int(await db.scalar(text(HELD)) or 0)
    finally:
        await engine.dispose()
    return counts


async def _reconcile(suite: Suite, logs: Path) -> tuple[bool, str]:
    try:
        await processes.run_to_completion(
            "reconcile", ["services.billing.main", "reconcile"], suite.environment, logs
        )
    except ChildFailed as failure:
        return False, str(failure)
    return True, "exit 0"


# --- The run ------------------------------------------------------------------


@dataclass
class Result:
    options: Options
    traffic: Traffic
    outcomes: Outcomes
    served: dict[str, dict[int, int]]
    killed: list[str]
    survivors_running: list[str]
    settled: dict[str, int]
    reconciled: tuple[bool, str]
    elapsed: float
    checks: list[tuple[str, bool]] = field(default_factory=list)


async def run(options: Options, logs: Path) -> Result:
    async with started_suite(logs) as suite:
        traffic = Traffic(list(suite.gateways))
        outcomes = Outcomes()
        limits = httpx.Limits(max_connections=options.users * 2)
        async with httpx.AsyncClient(
            timeout=HTTP_TIMEOUT_SECONDS, limits=limits
        ) as http:
            started = time.monotonic()
            until = started + options.duration
            users = asyncio.gather(
                *(_user(http, traffic, outcomes, until) for _ in range(options.users))
            )
            await asyncio.sleep(options.kill_after)
            served = await _served_by_replica(suite)
            killed = await _kill(suite, traffic)
            await users
            elapsed = time.monotonic() - started
        settled = await _settled(suite.database_url)
        reconciled = await _reconcile(suite, logs)
        survivors = [
            name
            for name, child in suite.children.items()
            if name not in killed and child.running
        ]
        result = Result(
            options,
            traffic,
            outcomes,
            served,
            killed,
            survivors,
            settled,
            reconciled,
            elapsed,
        )
        result.checks = _checks(result, suite)
        return result


def _checks(result: Result, suite: Suite) -> list[tuple[str, bool]]:
    traffic = result.traffic
    other = sum(r.other for r in traffic.routes.values())
    unfinished = sum(result.settled.get(s, 0) for s in ("pending", "processing"))
    checks = [
        (f"no request failed other than retryably ({other} did)", other == 0),
        (
            "every route answered ok at least once",
            bool(traffic.routes) and all(r.ok for r in traffic.routes.values()),
        ),
        (
            "both gateways served requests",
            all(traffic.by_gateway[url] > 0 for url in suite.gateways),
        ),
    ]
    for name, served in result.served.items():
        checks.append(
            (
                f"{name}: both replicas served calls before the kill",
                all(count > 0 for count in served.values()),
            )
        )
    checks += [
        (
            "every process not killed is still running",
            len(result.survivors_running) == len(suite.children) - len(result.killed),
        ),
        (f"every generation ended ({unfinished} did not)", unfinished == 0),
        ("every settlement reached billing", result.settled.get("unsettled") == 0),
        (
            "no finished generation still holds credits",
            result.settled.get("held for finished generations") == 0,
        ),
        ("billing reconcile exits 0", result.reconciled[0]),
    ]
    return checks


# --- The report ---------------------------------------------------------------


def _ms(seconds: list[float], fraction: float) -> str:
    if not seconds:
        return "-"
    if len(seconds) == 1:
        return f"{seconds[0] * 1000:.0f}"
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return f"{cuts[round(fraction * 100) - 1] * 1000:.0f}"


def report(result: Result) -> str:
    traffic, options = result.traffic, result.options
    route_rows = [
        [
            name,
            str(r.count),
            str(r.ok),
            str(r.retryable),
            str(r.lost),
            str(r.other),
            _ms(r.seconds, 0.5),
            _ms(r.seconds, 0.99),
        ]
        for name, r in traffic.routes.items()
    ]
    replica_rows = [
        [name, *(str(served[n]) for n in sorted(served))]
        for name, served in result.served.items()
    ]
    settled = ", ".join(f"{k}: {v}" for k, v in result.settled.items())
    retryable_rows = [
        [route, answer, when, str(n)]
        for (route, answer, when), n in sorted(traffic.retryable.items())
    ]
    lines = [
        f"# Scale test, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"- {options.users} users for {options.duration:.0f} s "
        f"({result.elapsed:.1f} s with the last flows), both gateways in turn",
        f"- killed (SIGKILL) after {options.kill_after:.0f} s: "
        + ", ".join(result.killed),
        f"- flows completed: {result.outcomes.flows}, restarted after a "
        f"retryable error: {result.outcomes.restarted}",
        "- generations as users saw them: "
        + ", ".join(
            f"{k}: {v}" for k, v in sorted(result.outcomes.generations.items())
        ),
        f"- generations in the database after the grace time: {settled}",
        "- requests answered by each gateway: "
        + ", ".join(
            f"gateway-{number} ({url}): {traffic.by_gateway[url]}"
            for number, url in enumerate(traffic.gateways, start=1)
        ),
        f"- billing reconcile: {result.reconciled[1]}",
        f"- machine: {os.cpu_count()} CPUs",
        "",
        "Requests by route (retryable: 503 unavailable / 504 deadline_exceeded; "
        "lost: connection to the killed gateway broke; times in ms, all attempts):",
        "",
        markdown_table(
            route_rows,
            ["route", "count", "ok", "retryable", "lost", "other", "p50", "p99"],
        ),
        "",
        "Calls each replica had finished when the kill came (Prometheus "
        "omnihub_grpc_server_handled_total, health checks aside):",
        "",
        markdown_table(replica_rows, ["service", "replica 1", "replica 2"]),
        "",
        "Retryable answers by route, answer and time:",
        "",
        markdown_table(retryable_rows, ["route", "answer", "when", "count"]),
        "",
        "Checks:",
        "",
        *(f"- [{'x' if ok else ' '}] {what}" for what, ok in result.checks),
    ]
    if traffic.failures:
        lines += ["", "Other errors (first 20):", ""]
        lines += [f"- `{f}`" for f in traffic.failures[:20]]
    return "\n".join(lines) + "\n"


# --- Command line -------------------------------------------------------------


def parse_arguments(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m tests.scale",
        description="Two replicas of everything, one of each killed under load "
        "(see tests/scale/__init__.py).",
    )
    parser.add_argument("--users", type=int, default=20, help="(default 20)")
    parser.add_argument(
        "--duration", type=float, default=60.0, help="seconds of load (default 60)"
    )
    parser.add_argument(
        "--kill-after", type=float, default=20.0, help="seconds (default 20)"
    )
    parser.add_argument("--results", type=Path, default=ROOT / "bench-results")
    args = parser.parse_args(argv)
    if args.users < 1 or not 0 < args.kill_after < args.duration:
        parser.error("--users must be positive and --kill-after within --duration")
    return Options(args.users, args.duration, args.kill_after, args.results)


async def _main(options: Options, logs: Path) -> Result:
    # A SIGTERM stops the children and drops the database, as Ctrl-C does.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run(options, logs)


def main(argv: list[str]) -> int:
    options = parse_arguments(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    logs = options.results_dir / "logs" / f"scale-{stamp}"
    try:
        result = asyncio.run(_main(options, logs))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\nInterrupted; every child process was stopped.", file=sys.stderr)
        return 130
    except ChildFailed as failure:
        print(f"\nscale test failed to start: {failure}", file=sys.stderr)
        return 1
    text = report(result)
    print(text)
    options.results_dir.mkdir(parents=True, exist_ok=True)
    written = options.results_dir / f"scale-{stamp}.md"
    written.write_text(text)
    print(f"Written: {os.path.relpath(written)}; logs in {os.path.relpath(logs)}")
    return 0 if all(ok for _, ok in result.checks) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
