"""The admin figures benchmark:

    python -m tests.bench.admin [--users 100000] [--generations 1000000]
        [--requests 100] [--cached-requests 500]

It starts auth, billing, catalog, generation and the admin service as OS
processes on a fresh database, and a gateway in front of the admin service
twice over: once as deployed (the admin keeps figures for
ADMIN_INSIGHTS_CACHE_SECONDS, 30 s) and once with a second admin process
that keeps none, so that every answer there is computed. It loads
`--users` accounts (sign-ups spread over a year, each with a session last
used some time in the last 40 days) and `--generations` generations (spread
over 90 days and over the users, three types, three statuses, thirty
models) straight into the auth and generation schemas with INSERT ...
SELECT generate_series, fills generation_counts from them, and ANALYZEs.

Then, one request at a time after an untimed warm-up:

1. GET /api/admin/stats and GET /api/admin/analytics?range=30d through the
   gateway whose admin keeps nothing: the cold cost, each answer asked of
   auth, generation, billing (and the catalog) afresh.
2. The same through the gateway whose admin keeps the figures: the cached
   cost (the notes say if the window ran out during the series).
3. Each owner's aggregate RPC alone, over gRPC as the admin service calls
   it (auth SummarizeUsers, generation SummarizeGenerations, billing
   SummarizeRevenue), with the ranges the two routes ask for: where the
   cold time goes.

Results are printed and written to bench-results/admin-<time>.md and .json;
each process's output is in bench-results/logs/admin-<time>/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shlex
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import httpx
from google.protobuf.message import Message
from omnihub.auth.v1 import auth_pb2, auth_pb2_grpc
from omnihub.billing.v1 import billing_pb2, billing_pb2_grpc
from omnihub.generation.v1 import generation_pb2, generation_pb2_grpc
from sqlalchemy.engine import make_url

from libs.grpc.identity import INTERNAL_TOKEN_KEY
from libs.grpc.messages import timestamp
from libs.tokens import InternalTokenSource, TokenSigner
from services.admin.insights import figures
from tests.bench import processes
from tests.bench.deployment import Deployment, start_suite
from tests.bench.processes import ChildFailed
from tests.bench.report import markdown_table, text_table
from tests.database import ROOT
from tests.services.billing.ledger_bench import Timings
from tests.suite import free_port

SERVICES = ("auth", "billing", "catalog", "generation", "admin")
CACHE_SECONDS = 30
WARMUP_REQUESTS = 5
OPERATOR = "bench-operator"
OPERATOR_PASSWORD = "bench-" + secrets.token_urlsafe(12)
MODELS = 30
ROUTES = {
    "stats": "/api/admin/stats",
    "analytics 30d": "/api/admin/analytics?range=30d",
}
HEADER = ["series", "requests", "p50 ms", "p99 ms", "mean ms", "max ms", "errors"]


class BenchFailed(RuntimeError):
    """The suite did something that makes the figures meaningless."""


@dataclass(frozen=True)
class Options:
    users: int
    generations: int
    requests: int
    cached_requests: int
    results_dir: Path


@dataclass
class Figures:
    load_seconds: dict[str, float] = field(default_factory=dict)
    series: list[Timings] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)
    # The machine's 1-minute load average as measuring began and ended: the
    # suite, the database and this harness share its cores with whatever
    # else runs there.
    load_average: dict[str, float] = field(default_factory=dict)


# --- The suite ----------------------------------------------------------------


@dataclass
class Suite:
    deployment: Deployment
    # The gateway in front of the admin process that keeps no figures.
    cold_url: str


async def start(stack: AsyncExitStack, log_dir: Path) -> Suite:
    """The suite as deployed, plus a second admin process keeping nothing
    and a gateway of its own in front of it."""
    deployment = await start_suite(
        stack,
        log_dir,
        services=SERVICES,
        environment={"ADMIN_INSIGHTS_CACHE_SECONDS": str(CACHE_SECONDS)},
    )
    cold_env = {
        **deployment.environment,
        "ADMIN_ADDRESS": f"127.0.0.1:{free_port()}",
        "ADMIN_INSIGHTS_CACHE_SECONDS": "0",
        "PORT": str(free_port()),
    }
    admin = await processes.start(
        "admin-uncached", ["services.admin.main", "serve"], cold_env, log_dir
    )
    stack.push_async_callback(admin.stop)
    await processes.wait_until(
        admin,
        processes.grpc_serving(
            cold_env["ADMIN_ADDRESS"], "omnihub.admin.v1.AdminInsightsService"
        ),
    )
    gateway = await processes.start(
        "gateway-uncached", ["gateway.main"], cold_env, log_dir
    )
    stack.push_async_callback(gateway.stop)
    cold_url = f"http://127.0.0.1:{cold_env['PORT']}"
    await processes.wait_until(gateway, processes.http_ok(f"{cold_url}/healthz"))
    deployment.children["admin-uncached"] = admin
    deployment.children["gateway-uncached"] = gateway
    await processes.run_to_completion(
        "auth-ensure-admin",
        ["services.auth.main", "ensure-admin"],
        {
            **deployment.environment,
            "ADMIN_USERNAME": OPERATOR,
            "ADMIN_PASSWORD": OPERATOR_PASSWORD,
        },
        log_dir,
    )
    return Suite(deployment, cold_url)


# --- Data ---------------------------------------------------------------------


def _dsn(database_url: str) -> str:
    return (
        make_url(database_url)
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )


# random() is drawn in the select list, once per row (a subquery that does
# not refer to the row would be computed once for all of them).
USERS = """
INSERT INTO auth.users (id, email, name, nickname, created_at)
SELECT gen_random_uuid(), 'bench-' || n || '@example.com', 'Bench ' || n,
       'bench' || n, now() - random() * interval '365 days'
FROM generate_series(1, $1::int) AS n
"""
SESSIONS = """
INSERT INTO auth.sessions (id, user_id, expires_at, last_used_at)
SELECT gen_random_uuid(), id, now() + interval '7 days',
       now() - random() * interval '40 days'
FROM auth.users
WHERE email LIKE 'bench-%'
"""
JOB = """
INSERT INTO generation.jobs (id, user_id, kind, model_id, endpoint, payload,
                             state, deadline_at, finished_at)
VALUES ($1, $1, 'generate', 'bench', 'fal-ai/bench', '{}'::jsonb, 'finished',
        now(), now())
"""
# Each row's user is drawn from the loaded ones; type, status and model are
# drawn with fixed odds (70 % images, 20 % videos, 10 % upscales; 85 %
# completed, 10 % failed, 5 % cancelled).
GENERATIONS = """
WITH owners AS (
    SELECT array_agg(id) AS ids FROM auth.users WHERE email LIKE 'bench-%'
)
INSERT INTO generation.generations (
    id, job_id, user_id, workspace_id, type, model_id, model_name, prompt,
    options, credits_micros, payer_type, payer_id, credit_source,
    max_wait_seconds, status, started_at, completed_at)
SELECT gen_random_uuid(), $2, owner, owner, kind,
       'bench-model-' || model, 'Bench model ' || model, 'bench',
       '{}'::jsonb, (10000 + random() * 990000)::bigint, 1, owner, 'personal',
       300, status, started, started + interval '5 seconds'
FROM generate_series(1, $1::int) AS n,
     owners,
     LATERAL (
        SELECT owners.ids[1 + floor(random() * cardinality(owners.ids))::int]
                   AS owner,
               CASE WHEN r < 0.7 THEN 'image' WHEN r < 0.9 THEN 'video'
                    ELSE 'upscale' END AS kind,
               CASE WHEN s < 0.85 THEN 'completed' WHEN s < 0.95 THEN 'failed'
                    ELSE 'cancelled' END AS status,
               floor(random() * $3::int)::int AS model,
               now() - random() * interval '90 days' AS started
        FROM (SELECT random() AS r, random() AS s, n) AS draw
     ) AS chosen
"""
COUNTS = """
INSERT INTO generation.generation_counts (user_id, workspace_id, type, count)
SELECT user_id, workspace_id, type, count(*)
FROM generation.generations WHERE job_id = $1
GROUP BY user_id, workspace_id, type
ON CONFLICT (user_id, workspace_id, type)
DO UPDATE SET count = generation_counts.count + excluded.count
"""


async def load(database_url: str, options: Options, result: Figures) -> None:
    """The accounts, their sessions and the generations, then ANALYZE."""
    connection = await asyncpg.connect(_dsn(database_url))
    try:
        await _timed(result, "users", connection.execute(USERS, options.users))
        await _timed(result, "sessions", connection.execute(SESSIONS))
        job = await connection.fetchval("SELECT gen_random_uuid()")
        await connection.execute(JOB, job)
        await _timed(
            result,
            "generations",
            connection.execute(GENERATIONS, options.generations, job, MODELS),
        )
        await _timed(result, "generation_counts", connection.execute(COUNTS, job))
        await _timed(
            result,
            "analyze",
            connection.execute(
                "ANALYZE auth.users, auth.sessions, generation.generations, "
                "generation.generation_counts"
            ),
        )
    finally:
        await connection.close()


async def _timed(result: Figures, name: str, step: Awaitable[object]) -> None:
    started = time.perf_counter()
    await step
    result.load_seconds[name] = round(time.perf_counter() - started, 2)
    say(f"  loaded {name} in {result.load_seconds[name]:.1f}s")


# --- Measuring ----------------------------------------------------------------


async def operator_token(http: httpx.AsyncClient) -> dict[str, str]:
    response = await http.post(
        "/api/admin/login", json={"username": OPERATOR, "password": OPERATOR_PASSWORD}
    )
    if response.status_code not in (200, 201):
        raise BenchFailed(f"admin login: HTTP {response.status_code}")
    return {"Authorization": f"Bearer {response.json()['token']}"}


async def series(
    label: str,
    count: int,
    call: Callable[[], Awaitable[object]],
    warmup: int = WARMUP_REQUESTS,
) -> Timings:
    """`count` calls one after another, after `warmup` untimed ones."""
    for _ in range(warmup):
        await call()
    seconds: list[float] = []
    errors = 0
    started = time.perf_counter()
    for _ in range(count):
        before = time.perf_counter()
        try:
            await call()
        except (httpx.HTTPError, grpc.aio.AioRpcError, BenchFailed):
            errors += 1
            continue
        seconds.append(time.perf_counter() - before)
    return Timings(label, seconds, time.perf_counter() - started, errors)


def getter(
    http: httpx.AsyncClient, path: str, headers: dict[str, str], seen: list[str]
) -> Callable[[], Awaitable[object]]:
    """A GET that must answer 200; it notes each answer's computedAt."""

    async def get() -> object:
        response = await http.get(path, headers=headers)
        if response.status_code != 200:
            raise BenchFailed(f"{path}: HTTP {response.status_code}: {response.text}")
        seen.append(response.json()["computedAt"])
        return None

    return get


class Owners:
    """The owners' aggregate RPCs, called as the internal service "bench"."""

    def __init__(self, environment: dict[str, str]) -> None:
        self._channels = [
            grpc.aio.insecure_channel(environment[f"{name.upper()}_ADDRESS"])
            for name in ("auth", "generation", "billing")
        ]
        self.auth = auth_pb2_grpc.AuthServiceStub(self._channels[0])
        self.generation = generation_pb2_grpc.GenerationServiceStub(self._channels[1])
        self.billing = billing_pb2_grpc.BillingServiceStub(self._channels[2])
        self._token = InternalTokenSource(
            TokenSigner(environment["JWT_SECRET"]), "bench", 300
        )

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    def calls(self) -> dict[str, Callable[[], Awaitable[object]]]:
        """Each RPC with the range the routes ask it for."""
        now = datetime.now(UTC)
        today = figures.start_of_day(now)
        span = figures.window("30d", now)
        day = (today, today + timedelta(days=1), "day")
        month = (figures.start_of_month(now), today + timedelta(days=1), "day")
        thirty = (span.start, span.end, "day")
        return {
            "auth SummarizeUsers (30 d)": self._users(*thirty),
            "generation SummarizeGenerations (today, 10 recent)": self._generations(
                *day, top_models=0, recent=figures.RECENT_ACTIVITY
            ),
            "generation SummarizeGenerations (30 d, top 10)": self._generations(
                *thirty, top_models=figures.TOP_MODELS, recent=0
            ),
            "billing SummarizeRevenue (this month)": self._revenue(*month),
            "billing SummarizeRevenue (30 d)": self._revenue(*thirty),
        }

    def _call(self, method: Any, message: Message) -> Callable[[], Awaitable[object]]:
        async def call() -> object:
            metadata = ((INTERNAL_TOKEN_KEY, self._token.token()),)
            return await method(message, metadata=metadata, timeout=60)

        return call

    def _users(
        self, start: datetime, end: datetime, bucket: str
    ) -> Callable[[], Awaitable[object]]:
        return self._call(
            self.auth.SummarizeUsers,
            auth_pb2.SummarizeUsersRequest(
                start=timestamp(start), end=timestamp(end), bucket=bucket
            ),
        )

    def _generations(
        self, start: datetime, end: datetime, bucket: str, **limits: int
    ) -> Callable[[], Awaitable[object]]:
        return self._call(
            self.generation.SummarizeGenerations,
            generation_pb2.SummarizeGenerationsRequest(
                start=timestamp(start), end=timestamp(end), bucket=bucket, **limits
            ),
        )

    def _revenue(
        self, start: datetime, end: datetime, bucket: str
    ) -> Callable[[], Awaitable[object]]:
        return self._call(
            self.billing.SummarizeRevenue,
            billing_pb2.SummarizeRevenueRequest(
                start=timestamp(start), end=timestamp(end), bucket=bucket
            ),
        )


async def measure(suite: Suite, options: Options, result: Figures) -> None:
    deployment = suite.deployment
    async with (
        httpx.AsyncClient(base_url=deployment.gateway_url, timeout=60) as cached,
        httpx.AsyncClient(base_url=suite.cold_url, timeout=60) as cold,
    ):
        headers = await operator_token(cached)
        await check_answers(cold, headers, options, result)
        for name, path in ROUTES.items():
            seen: list[str] = []
            say(f"  {name}: computed every time ...")
            result.series.append(
                await series(
                    f"{name}, computed (cold)",
                    options.requests,
                    getter(cold, path, headers, seen),
                )
            )
        for name, path in ROUTES.items():
            seen = []
            say(f"  {name}: kept by the admin process ...")
            timed = await series(
                f"{name}, kept (cached)",
                options.cached_requests,
                getter(cached, path, headers, seen),
                warmup=1,
            )
            result.series.append(timed)
            recomputed = len(set(seen)) - 1
            if recomputed:
                result.notes.append(
                    f"{name}, kept: the {CACHE_SECONDS} s window ran out "
                    f"{recomputed} time(s) during the series, so as many answers "
                    "were computed afresh"
                )
    owners = Owners(deployment.environment)
    try:
        for label, call in owners.calls().items():
            say(f"  {label} ...")
            result.series.append(await series(label, options.requests, call))
    finally:
        await owners.close()


async def check_answers(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    options: Options,
    result: Figures,
) -> None:
    """The figures must describe the loaded data, or the timings mean
    nothing."""
    stats = (await http.get("/api/admin/stats", headers=headers)).json()
    month = (await http.get("/api/admin/analytics?range=30d", headers=headers)).json()
    result.checks = {
        "totalUsers": stats["totalUsers"],
        "totalGenerations": stats["totalGenerations"],
        "monthlyActiveUsers": stats["monthlyActiveUsers"],
        "analytics30d.generations": month["generations"],
        "analytics30d.signups": month["signups"],
        "analytics30d.points": len(month["series"]),
        "analytics30d.topModels": len(month["topModels"]),
    }
    if stats["totalUsers"] < options.users:
        raise BenchFailed(f"stats count {stats['totalUsers']} users")
    if stats["totalGenerations"] < options.generations:
        raise BenchFailed(f"stats count {stats['totalGenerations']} generations")
    # A third of the generations were started in the last 30 of 90 days.
    share = month["generations"] / options.generations
    if not 0.25 < share < 0.42:
        raise BenchFailed(f"30 days hold {share:.0%} of the generations")


# --- Reporting ----------------------------------------------------------------


def _row(t: Timings) -> list[str]:
    mean = sum(t.seconds) / len(t.seconds) * 1000 if t.seconds else 0.0
    longest = max(t.seconds) * 1000 if t.seconds else 0.0
    return [
        t.label,
        str(t.count),
        f"{t.median_ms:.1f}",
        f"{t.p99_ms:.1f}",
        f"{mean:.1f}",
        f"{longest:.1f}",
        str(t.errors),
    ]


@dataclass
class Summary:
    command: str
    settings: dict[str, Any]
    result: Figures

    def ratios(self) -> list[str]:
        by_label = {t.label: t for t in self.result.series}
        lines = []
        for name in ROUTES:
            cold = by_label.get(f"{name}, computed (cold)")
            kept = by_label.get(f"{name}, kept (cached)")
            if cold and kept and kept.median_ms:
                lines.append(
                    f"{name}: a computed answer costs {cold.median_ms:.1f} ms at the "
                    f"median, a kept one {kept.median_ms:.1f} ms "
                    f"({cold.median_ms / kept.median_ms:.0f}x)"
                )
        return lines

    def _lines(self, table: str) -> list[str]:
        loads = ", ".join(f"{k} {v:.1f}s" for k, v in self.result.load_seconds.items())
        checks = ", ".join(f"{k} {v}" for k, v in self.result.checks.items())
        return [
            table,
            "",
            *self.ratios(),
            "",
            f"Loaded: {loads}",
            f"Answers checked: {checks}",
            f"Load average (1 min) before and after measuring: "
            f"{self.result.load_average.get('before')} and "
            f"{self.result.load_average.get('after')} on {os.cpu_count()} CPUs",
            *(f"Note: {note}" for note in self.result.notes),
        ]

    def as_text(self) -> str:
        rows = [_row(t) for t in self.result.series]
        return "\n".join(self._lines(text_table(rows, HEADER)))

    def as_markdown(self) -> str:
        rows = [_row(t) for t in self.result.series]
        settings = "\n".join(f"- {k}: {v}" for k, v in self.settings.items())
        return "\n".join(
            [
                "# Admin figures benchmark",
                "",
                f"`{self.command}`",
                "",
                settings,
                "",
                *self._lines(markdown_table(rows, HEADER)),
                "",
            ]
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "settings": self.settings,
            "load_seconds": self.result.load_seconds,
            "checks": self.result.checks,
            "load_average": self.result.load_average,
            "notes": self.result.notes,
            "series": [
                {
                    "label": t.label,
                    "count": t.count,
                    "p50_ms": round(t.median_ms, 3),
                    "p99_ms": round(t.p99_ms, 3),
                    "errors": t.errors,
                }
                for t in self.result.series
            ],
        }


def settings_of(options: Options, deployment: Deployment) -> dict[str, Any]:
    return {
        "users": options.users,
        "generations": options.generations,
        "requests per computed series": options.requests,
        "requests per kept series": options.cached_requests,
        "admin cache window": f"{CACHE_SECONDS} s (the other admin: 0)",
        "database": deployment.database,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "loop": "one request at a time from this process, over loopback",
    }


# --- Command line -------------------------------------------------------------


def command_line(argv: list[str]) -> str:
    python = os.path.relpath(sys.executable, ROOT)
    words = [python, "-m", "tests.bench.admin", *argv]
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        shown = make_url(url).render_as_string(hide_password=True)
        words.insert(0, f"TEST_DATABASE_URL={shown}")
    if "PYTHONPATH" in os.environ:
        words.insert(0, f"PYTHONPATH={os.environ['PYTHONPATH']}")
    return shlex.join(words)


def parse_arguments(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.admin",
        description="GET /api/admin/stats and /api/admin/analytics?range=30d on "
        "a database of many users and generations, computed and kept "
        "(see tests/bench/admin.py).",
    )
    parser.add_argument("--users", type=int, default=100_000, help="default 100000")
    parser.add_argument(
        "--generations", type=int, default=1_000_000, help="default 1000000"
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=100,
        help="timed requests per computed series and per RPC (default 100)",
    )
    parser.add_argument(
        "--cached-requests",
        type=int,
        default=500,
        help="timed requests per kept series (default 500)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=ROOT / "bench-results",
        help="where to write the Markdown and JSON (default bench-results/)",
    )
    args = parser.parse_args(argv)
    if args.users < 1 or args.generations < 1000 or args.requests < 2:
        parser.error("--users at least 1, --generations 1000, --requests 2")
    return Options(
        users=args.users,
        generations=args.generations,
        requests=args.requests,
        cached_requests=max(2, args.cached_requests),
        results_dir=args.results,
    )


async def benchmark(options: Options, stamp: str, command: str) -> Summary:
    log_dir = options.results_dir / "logs" / f"admin-{stamp}"
    result = Figures()
    async with AsyncExitStack() as stack:
        say("Starting the suite ...")
        suite = await start(stack, log_dir)
        database_url = suite.deployment.database_url
        assert database_url is not None
        say("Loading ...")
        await load(database_url, options, result)
        say("Measuring ...")
        result.load_average["before"] = _load_average()
        await measure(suite, options, result)
        result.load_average["after"] = _load_average()
        settings = settings_of(options, suite.deployment)
    return Summary(command, settings, result)


async def _main(options: Options, stamp: str, command: str) -> Summary:
    # A SIGTERM stops the children and drops the database, as Ctrl-C does.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await benchmark(options, stamp, command)


def _load_average() -> float:
    return round(os.getloadavg()[0], 2)


def say(message: str) -> None:
    print(message, flush=True)


def main(argv: list[str]) -> int:
    options = parse_arguments(argv)
    command = command_line(argv)
    say(command)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    try:
        summary = asyncio.run(_main(options, stamp, command))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\nInterrupted; every child process was stopped.", file=sys.stderr)
        return 130
    except (BenchFailed, ChildFailed) as error:
        print(f"\nbench failed: {error}", file=sys.stderr)
        return 1
    print()
    print(summary.as_text())
    directory = options.results_dir
    directory.mkdir(parents=True, exist_ok=True)
    markdown, data = directory / f"admin-{stamp}.md", directory / f"admin-{stamp}.json"
    markdown.write_text(summary.as_markdown())
    data.write_text(json.dumps(summary.to_json(), indent=2) + "\n")
    print(f"\nWritten: {os.path.relpath(markdown)}, {data.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
