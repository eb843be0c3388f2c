"""The generation benchmark: `make bench-generation`, or

    python -m tests.bench.generation [--generations 300] [--concurrency 16]
        [--list-requests 300] [--rows 1000000] [--profile]

It starts the suite as OS processes (auth, billing, catalog, workspace,
generation, the gateway), two generation workers and the local fal answering
instantly, on a fresh database, and measures:

1. End to end: `--generations` POST /api/generate of one image each (a
   unique prompt each), `--concurrency` at a time, each followed over its
   Server-Sent Events stream (GET /api/generations/{id}/events) until it
   says `completed`: generations per second over the run, the time from
   sending the POST to that event, and the POST's own time.
2. Listing: GET /api/generations?limit=50&workspaceId=<personal> for a user
   with 100 generations and one with `--rows` (written straight into the
   generation tables in one INSERT ... SELECT generate_series, copies of a
   generation the suite really made, then ANALYZE): the first page, a page
   reached by following nextCursor, and, for the long list, a page from a
   cursor in its middle; `--list-requests` sequential requests of each,
   taken in turn, after a warm-up.

Results are printed and written to bench-results/generation-<time>.md and
.json; each process's output is in bench-results/logs/generation-<time>/.
See tests/bench/README.md.
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
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, TypeVar

import asyncpg
import httpx
from omnihub.billing.v1 import billing_pb2
from sqlalchemy.engine import make_url

from libs.config import Settings
from services.generation.models import SCHEMA, Generation, Job
from services.generation.service import encode_cursor
from services.workspace.models import SCHEMA as WORKSPACE_SCHEMA
from tests.bench import processes
from tests.bench.cpu import CpuSplit, Watched
from tests.bench.deployment import STARTED_SERVICES, Deployment, start_suite
from tests.bench.measure import SuiteMeter
from tests.bench.processes import ChildFailed
from tests.bench.profile import Profile, PySpyMissing, find_py_spy, sampled
from tests.bench.report import markdown_table, text_table
from tests.database import ROOT
from tests.services.billing.ledger_bench import LedgerClient, Timings
from tests.suite import free_port

T = TypeVar("T")

MODEL = "fal-flux-pro-v1.1"
WORKERS = 2
FAL_USER_ID = "omnihub-local"
CREDIT = 1_000_000
# Far more than any run spends (an image of this model costs 0.04 credits).
FUNDS_MICROS = 100_000 * CREDIT
FINISHED = ("completed", "failed", "cancelled")
# A generation not finished by then counts as failed.
GENERATION_TIMEOUT_SECONDS = 60.0
PAGE_SIZE = 50
SHORT_LIST_ROWS = 100
# Untimed rounds of every listing series before the measured ones.
LIST_WARMUP_ROUNDS = 20
WORKSPACE_WAIT_SECONDS = 15.0
# How long captures may take to be confirmed after the last completion.
SETTLE_WAIT_SECONDS = 10.0
# The target: the long list within this factor of the short one.
LIST_RATIO_TARGET = 2.0
PASSWORD = "bench-password-" + uuid.uuid4().hex[:12]
# Prompts begin with these, so that the measured generations can be told
# from the warm-up's in the database and at the local fal.
WARMUP_WORDS = "bench warm-up"
MEASURED_WORDS = "bench run"


class BenchFailed(RuntimeError):
    """The suite did something that makes the figures meaningless."""


@dataclass(frozen=True)
class Options:
    generations: int
    concurrency: int
    warmup_generations: int
    list_requests: int
    rows: int
    cursor_pages: int
    profile: bool
    results_dir: Path


# --- The suite ----------------------------------------------------------------


def _provider_environment(media_dir: Path) -> tuple[dict[str, str], int]:
    """The local fal's address and key, and the gateway's port, chosen
    before anything starts (webhook and media URLs name the gateway)."""
    fal_port, gateway_port = free_port(), free_port()
    fal = f"http://127.0.0.1:{fal_port}"
    gateway = f"http://127.0.0.1:{gateway_port}"
    environment = {
        "PORT": str(gateway_port),
        "LOG_LEVEL": "WARNING",
        "FAL_KEY": secrets.token_urlsafe(24),
        "FAL_QUEUE_URL": fal,
        "FAL_JWKS_URL": f"{fal}/.well-known/jwks.json",
        "FAL_USER_ID": FAL_USER_ID,
        "FAL_WEBHOOK_URL": f"{gateway}/api/webhooks/fal",
        "MEDIA_DIR": str(media_dir),
        "MEDIA_BASE_URL": f"{gateway}/media",
    }
    return environment, fal_port


async def start_generation_suite(
    stack: AsyncExitStack, log_dir: Path, media_dir: Path
) -> Deployment:
    """The local fal, the services generating needs, the gateway and the
    workers; `stack` stops them all however the run ends."""
    environment, fal_port = _provider_environment(media_dir)
    fal = await processes.start(
        "fal",
        ["deploy.simulators.fal", "--port", str(fal_port)],
        processes.child_environment(environment),
        log_dir,
    )
    stack.push_async_callback(fal.stop)
    keys = f"{environment['FAL_QUEUE_URL']}/.well-known/jwks.json"
    await processes.wait_until(fal, processes.http_ok(keys))

    services = (*STARTED_SERVICES, "generation")
    deployment = await start_suite(stack, log_dir, services, environment)
    for number in range(1, WORKERS + 1):
        name = f"worker-{number}"
        worker = await processes.start(
            name, ["services.generation.worker"], deployment.environment, log_dir
        )
        stack.push_async_callback(worker.stop)
        deployment.children[name] = worker
    deployment.children["fal"] = fal
    return deployment


def _asyncpg_dsn(database_url: str) -> str:
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


@asynccontextmanager
async def connected(database_url: str, schema: str) -> AsyncIterator[Any]:
    connection = await asyncpg.connect(
        _asyncpg_dsn(database_url), server_settings={"search_path": schema}
    )
    try:
        yield connection
    finally:
        await connection.close()


# --- Users --------------------------------------------------------------------


@dataclass(frozen=True)
class User:
    user_id: str
    workspace_id: str
    headers: dict[str, str]


async def sign_up(http: httpx.AsyncClient, database_url: str) -> User:
    """A user registered through the gateway, with their personal workspace
    (made by the workspace service once sign-up reaches it)."""
    response = await http.post(
        "/api/auth/register",
        json={
            "email": f"bench-gen-{uuid.uuid4().hex[:12]}@example.com",
            "password": PASSWORD,
            "name": "Bench",
        },
    )
    if response.status_code != 201:
        raise BenchFailed(f"register: HTTP {response.status_code}: {response.text}")
    body = response.json()
    user_id = str(body["user"]["id"])
    workspace_id = await personal_workspace(database_url, user_id)
    return User(
        user_id, workspace_id, {"Authorization": f"Bearer {body['accessToken']}"}
    )


async def personal_workspace(database_url: str, user_id: str) -> str:
    deadline = time.monotonic() + WORKSPACE_WAIT_SECONDS
    async with connected(database_url, WORKSPACE_SCHEMA) as db:
        while time.monotonic() < deadline:
            found = await db.fetchval(
                "SELECT id FROM workspaces WHERE owner_id = $1 AND is_personal",
                uuid.UUID(user_id),
            )
            if found is not None:
                return str(found)
            await asyncio.sleep(0.1)
    raise BenchFailed(f"no personal workspace for {user_id} after sign-up")


async def fund(deployment: Deployment, user: User) -> None:
    assert deployment.billing_address is not None
    assert deployment.jwt_secret is not None
    account = billing_pb2.AccountRef(
        owner_type=billing_pb2.OWNER_TYPE_USER, owner_id=user.user_id
    )
    async with LedgerClient(deployment.billing_address, deployment.jwt_secret) as c:
        await c.grant(account, FUNDS_MICROS)


# --- End to end ---------------------------------------------------------------


@dataclass(frozen=True)
class Trip:
    """One generation: the POST's time and, when it completed, the time from
    sending the POST to the `completed` event; otherwise what went wrong."""

    post_seconds: float
    total_seconds: float | None
    outcome: str


@dataclass
class EndToEnd:
    trips: list[Trip]
    elapsed: float
    cpu: CpuSplit | None = None
    profiles: list[Profile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    stages: list[tuple[str, float, float]] = field(default_factory=list)
    webhooks: Counter[str] = field(default_factory=Counter)

    @property
    def completed(self) -> Timings:
        seconds = [t.total_seconds for t in self.trips if t.total_seconds is not None]
        failed = len(self.trips) - len(seconds)
        return Timings("POST /api/generate -> completed", seconds, self.elapsed, failed)

    @property
    def posts(self) -> Timings:
        seconds = [t.post_seconds for t in self.trips]
        return Timings("POST /api/generate (answer)", seconds, self.elapsed)

    def failures(self) -> Counter[str]:
        return Counter(t.outcome for t in self.trips if t.outcome != "completed")


async def final_status(http: httpx.AsyncClient, user: User, generation_id: str) -> str:
    """Follow the generation's event stream until it says it finished."""
    path = f"/api/generations/{generation_id}/events"
    async with http.stream("GET", path, headers=user.headers) as response:
        if response.status_code != 200:
            return f"events answered {response.status_code}"
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            status = json.loads(line[5:]).get("status")
            if status in FINISHED:
                return str(status)
    return "the event stream ended before the generation finished"


async def one_generation(http: httpx.AsyncClient, user: User, words: str) -> Trip:
    prompt = f"{words} {uuid.uuid4().hex}"
    body = {"model": MODEL, "type": "image", "prompt": prompt}
    started = time.perf_counter()
    try:
        response = await http.post("/api/generate", json=body, headers=user.headers)
    except httpx.HTTPError as error:
        return Trip(time.perf_counter() - started, None, type(error).__name__)
    posted = time.perf_counter() - started
    if response.status_code != 201:
        return Trip(posted, None, f"POST answered {response.status_code}")
    generation_id = response.json()["generations"][0]["id"]
    try:
        status = await asyncio.wait_for(
            final_status(http, user, generation_id), GENERATION_TIMEOUT_SECONDS
        )
    except (httpx.HTTPError, TimeoutError) as error:
        return Trip(posted, None, f"events: {type(error).__name__}")
    if status != "completed":
        return Trip(posted, None, status)
    return Trip(posted, time.perf_counter() - started, status)


async def generate(
    http: httpx.AsyncClient, user: User, count: int, concurrency: int, words: str
) -> tuple[list[Trip], float]:
    """`count` generations, `concurrency` in flight, their prompts starting
    with `words`; the time from the first POST to the last one finishing."""
    remaining = iter(range(count))
    trips: list[Trip] = []

    async def client() -> None:
        for _ in remaining:
            trips.append(await one_generation(http, user, words))

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return trips, time.perf_counter() - started


async def job_outcomes(database_url: str, user: User) -> dict[str, int]:
    """Where the user's generations ended up and how many still owe their
    capture or release to billing, once those have had a moment to land."""
    owner = uuid.UUID(user.user_id)
    deadline = time.monotonic() + SETTLE_WAIT_SECONDS
    async with connected(database_url, SCHEMA) as db:
        while True:
            unsettled = await db.fetchval(
                "SELECT count(*) FROM generations WHERE user_id = $1 "
                "AND settlement IS NOT NULL AND settled_at IS NULL",
                owner,
            )
            if unsettled == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        rows = await db.fetch(
            "SELECT status, count(*) AS n FROM generations WHERE user_id = $1 "
            "GROUP BY status",
            owner,
        )
    return {**{r["status"]: int(r["n"]) for r in rows}, "unsettled": int(unsettled)}


# Where a completed generation's time went, from the timestamps the suite
# stored: (label, start column, end column).
STAGES = (
    ("created -> queued (holds placed)", "g.started_at", "g.queued_at"),
    ("queued -> submitted to fal (a worker's claim)", "g.queued_at", "j.submitted_at"),
    (
        "submitted -> completed (webhook or poll, output copied)",
        "j.submitted_at",
        "g.completed_at",
    ),
)


def _stage_query(start: str, end: str) -> str:
    """Percentiles of one stage; the columns come from STAGES, the user and
    the prompt's words are parameters."""
    return (
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY d) AS p50, "  # noqa: S608
        "percentile_cont(0.99) WITHIN GROUP (ORDER BY d) AS p99 FROM ("
        f"SELECT extract(epoch FROM {end} - {start}) * 1000 AS d "
        "FROM generations AS g JOIN jobs AS j ON j.id = g.job_id "
        "WHERE g.user_id = $1 AND g.status = 'completed' "
        "AND g.prompt LIKE $2) AS stages"
    )


async def stage_times(
    database_url: str, user: User, words: str
) -> list[tuple[str, float, float]]:
    """(stage, p50 ms, p99 ms) over the completed generations whose prompts
    start with `words`, by the database's clock."""
    found = []
    async with connected(database_url, SCHEMA) as db:
        for label, start, end in STAGES:
            row = await db.fetchrow(
                _stage_query(start, end),
                uuid.UUID(user.user_id),
                f"{words} %",
            )
            found.append((label, float(row["p50"] or 0), float(row["p99"] or 0)))
    return found


async def webhook_answers(fal_url: str, words: str) -> Counter[str]:
    """How the gateway answered the local fal's webhooks of the generations
    whose prompts start with `words` (it delivers each once)."""
    async with httpx.AsyncClient(base_url=fal_url, timeout=30.0) as fal:
        response = await fal.get(
            "/simulator/requests", params={"prompt_contains": words}
        )
    response.raise_for_status()
    answers: Counter[str] = Counter()
    for item in response.json()["items"]:
        answers.update(item["webhook_deliveries"] or ["none"])
    return answers


# --- Listing ------------------------------------------------------------------

# Generation columns that differ between the copies; the rest are the
# template's. Minutes apart, newest first, all older than the real ones.
_COPY_OVERRIDES = {
    "id": "gen_random_uuid()",
    "job_id": "$1",
    "user_id": "$2",
    "payer_id": "$2",
    "workspace_id": "$3",
    "prompt": "'bench listing ' || n",
    "started_at": "now() - n * interval '1 minute'",
    "queued_at": "now() - n * interval '1 minute'",
    "completed_at": "now() - n * interval '1 minute' + interval '2 seconds'",
    "settled_at": "now() - n * interval '1 minute' + interval '2 seconds'",
}
_JOB_OVERRIDES = {"id": "$1", "user_id": "$2", "request_id": "NULL"}


def _copies_statement(
    table: str, columns: list[str], overrides: dict[str, str], source: str
) -> str:
    """INSERT ... SELECT of copies of the rows `source` names, with the
    `overrides` expressions in place of the source's columns."""
    values = [overrides.get(name, f"t.{name}") for name in columns]
    # Column names come from the models and the rest is fixed text; every
    # value is a bind parameter.
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608
        f"SELECT {', '.join(values)} FROM {source}"
    )


GENERATION_COPIES = _copies_statement(
    "generations",
    [c.name for c in Generation.__table__.columns],
    _COPY_OVERRIDES,
    "generate_series(1, $4::bigint) AS n, "
    "(SELECT * FROM generations WHERE id = $5) AS t",
)
JOB_COPY = _copies_statement(
    "jobs",
    [c.name for c in Job.__table__.columns],
    _JOB_OVERRIDES,
    "jobs AS t WHERE t.id = $3",
)


async def write_generations(
    database_url: str, template: uuid.UUID, user: User, rows: int
) -> None:
    """`rows` completed generations for `user` in their personal workspace,
    all of one job, in one statement, and the count the list reports."""
    async with connected(database_url, SCHEMA) as db, db.transaction():
        source = await db.fetchrow(
            "SELECT job_id, type FROM generations WHERE id = $1", template
        )
        job_id, owner = uuid.uuid4(), uuid.UUID(user.user_id)
        workspace = uuid.UUID(user.workspace_id)
        await db.execute(JOB_COPY, job_id, owner, source["job_id"])
        await db.execute(GENERATION_COPIES, job_id, owner, workspace, rows, template)
        await db.execute(
            "INSERT INTO generation_counts (user_id, workspace_id, type, count) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, workspace_id, type) "
            "DO UPDATE SET count = generation_counts.count + excluded.count",
            owner,
            workspace,
            source["type"],
            rows,
        )


async def completed_generation(database_url: str, user: User) -> uuid.UUID:
    async with connected(database_url, SCHEMA) as db:
        found = await db.fetchval(
            "SELECT id FROM generations WHERE user_id = $1 AND status = 'completed' "
            "ORDER BY started_at LIMIT 1",
            uuid.UUID(user.user_id),
        )
    if found is None:
        raise BenchFailed("no generation completed, so there is nothing to copy")
    return uuid.UUID(str(found))


async def analyze(database_url: str) -> None:
    async with connected(database_url, SCHEMA) as db:
        await db.execute("ANALYZE generations, jobs, generation_counts")


async def middle_cursor(database_url: str, user: User, rows: int) -> str:
    """The cursor a client holds after paging halfway down the list."""
    async with connected(database_url, SCHEMA) as db:
        row = await db.fetchrow(
            "SELECT started_at, id FROM generations "
            "WHERE user_id = $1 AND workspace_id = $2 AND deleted_at IS NULL "
            "ORDER BY started_at DESC, id DESC OFFSET $3 LIMIT 1",
            uuid.UUID(user.user_id),
            uuid.UUID(user.workspace_id),
            rows // 2 - 1,
        )
    return encode_cursor(row["started_at"], row["id"])


@dataclass(frozen=True)
class ListedPage:
    """One series of the listing: a user's page, by cursor or the first."""

    label: str
    user: User
    rows: int
    cursor: str | None = None

    @property
    def params(self) -> dict[str, str]:
        params = {"limit": str(PAGE_SIZE), "workspaceId": self.user.workspace_id}
        return {**params, "cursor": self.cursor} if self.cursor else params


def page_problem(page: ListedPage, response: httpx.Response) -> str | None:
    """What is wrong with an answer, if anything: a full page, the right
    count."""
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    body = response.json()
    if len(body["generations"]) != min(PAGE_SIZE, page.rows):
        return f"{len(body['generations'])} generations on the page"
    if body["counts"].get("image") != page.rows:
        return f"counts {body['counts']}, expected {page.rows} images"
    return None


async def cursor_after(
    http: httpx.AsyncClient, user: User, hops: int
) -> tuple[str, int]:
    """The nextCursor a client holds after `hops` pages (fewer when the list
    runs out first), and how many pages that was."""
    params = {"limit": str(PAGE_SIZE), "workspaceId": user.workspace_id}
    cursor, taken = None, 0
    while taken < hops:
        query = {**params, "cursor": cursor} if cursor else params
        response = await http.get(
            "/api/generations", params=query, headers=user.headers
        )
        response.raise_for_status()
        following = response.json().get("nextCursor")
        if not following:
            break
        cursor, taken = following, taken + 1
    if cursor is None:
        raise BenchFailed("the first page of a full list had no nextCursor")
    return cursor, taken


@dataclass
class Listing:
    pages: list[ListedPage]
    timings: list[Timings]
    written_seconds: float
    cpu: CpuSplit | None = None
    profiles: list[Profile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def of(self, label: str) -> Timings | None:
        return next((t for t in self.timings if t.label == label), None)


async def read_pages(
    http: httpx.AsyncClient, pages: list[ListedPage], requests: int
) -> tuple[list[Timings], list[str]]:
    """`requests` GETs of each page, one at a time, the pages taken in turn
    (in a changing order) so that whatever else the machine does falls on
    all alike; a warm-up first. Answers that are wrong count as errors."""
    samples: dict[str, list[float]] = {page.label: [] for page in pages}
    errors: Counter[str] = Counter()
    problems: list[str] = []
    for round_number in range(LIST_WARMUP_ROUNDS + requests):
        shift = round_number % len(pages)
        for page in pages[shift:] + pages[:shift]:
            started = time.perf_counter()
            response = await http.get(
                "/api/generations", params=page.params, headers=page.user.headers
            )
            took = time.perf_counter() - started
            problem = page_problem(page, response)
            if problem is not None:
                errors[page.label] += 1
                problems.append(f"{page.label}: {problem}")
            if round_number >= LIST_WARMUP_ROUNDS:
                samples[page.label].append(took)
    timings = [
        Timings(label, seconds, sum(seconds), errors[label])
        for label, seconds in samples.items()
    ]
    return timings, problems[:5]


# --- The run ------------------------------------------------------------------


class GenerationBench:
    def __init__(self, options: Options, stack: AsyncExitStack, log_dir: Path) -> None:
        self.options = options
        self.stack = stack
        self.log_dir = log_dir
        self.py_spy = find_py_spy() if options.profile else None
        self.deployment: Deployment | None = None
        self.outcomes: dict[str, int] = {}

    async def run(self, media_dir: Path) -> tuple[EndToEnd, Listing]:
        say("Starting PostgreSQL, the services, the gateway, 2 workers, local fal ...")
        deployment = await start_generation_suite(self.stack, self.log_dir, media_dir)
        self.deployment = deployment
        assert deployment.database_url is not None
        limits = httpx.Limits(max_connections=4 * self.options.concurrency + 8)
        async with httpx.AsyncClient(
            base_url=deployment.gateway_url, timeout=30.0, limits=limits
        ) as http:
            users = [await sign_up(http, deployment.database_url) for _ in range(3)]
            generating, short, long = users
            await fund(deployment, generating)
            end_to_end = await self._end_to_end(http, deployment, generating)
            listing = await self._listing(http, deployment, generating, short, long)
        return end_to_end, listing

    async def _end_to_end(
        self, http: httpx.AsyncClient, deployment: Deployment, user: User
    ) -> EndToEnd:
        options = self.options
        say(f"Warming up: {options.warmup_generations} generations ...")
        warmup, _ = await generate(
            http, user, options.warmup_generations, options.concurrency, WARMUP_WORDS
        )
        if not any(trip.outcome == "completed" for trip in warmup):
            outcomes = Counter(trip.outcome for trip in warmup)
            raise BenchFailed(f"no warm-up generation completed: {dict(outcomes)}")
        say(
            f"Measuring {options.generations} generations, "
            f"{options.concurrency} at a time ..."
        )
        run = generate(
            http, user, options.generations, options.concurrency, MEASURED_WORDS
        )
        (trips, elapsed), cpu, profiles, notes = await self._metered(
            "end-to-end", run, ("gateway", "generation", "worker-1", "worker-2", "fal")
        )
        database_url = deployment.database_url
        assert database_url is not None
        self.outcomes = await job_outcomes(database_url, user)
        result = EndToEnd(trips, elapsed, cpu, profiles, notes)
        result.stages = await stage_times(database_url, user, MEASURED_WORDS)
        fal_url = deployment.environment["FAL_QUEUE_URL"]
        result.webhooks = await webhook_answers(fal_url, MEASURED_WORDS)
        return result

    async def _listing(
        self,
        http: httpx.AsyncClient,
        deployment: Deployment,
        template_user: User,
        short: User,
        long: User,
    ) -> Listing:
        database_url = deployment.database_url
        assert database_url is not None
        rows = self.options.rows
        template = await completed_generation(database_url, template_user)
        say(f"Writing {SHORT_LIST_ROWS} and {rows:,} generations in SQL ...")
        started = time.monotonic()
        await write_generations(database_url, template, short, SHORT_LIST_ROWS)
        await write_generations(database_url, template, long, rows)
        await analyze(database_url)
        written = time.monotonic() - started
        say(f"  written and analysed in {written:.1f}s; listing ...")
        pages = await self._pages(http, database_url, short, long)
        read = read_pages(http, pages, self.options.list_requests)
        (timings, problems), cpu, profiles, notes = await self._metered(
            "listing", read, ("gateway", "generation", "workspace")
        )
        return Listing(pages, timings, written, cpu, profiles, notes + problems)

    async def _pages(
        self, http: httpx.AsyncClient, database_url: str, short: User, long: User
    ) -> list[ListedPage]:
        rows, hops = self.options.rows, self.options.cursor_pages
        short_cursor, short_hops = await cursor_after(http, short, hops)
        long_cursor, long_hops = await cursor_after(http, long, hops)
        middle = await middle_cursor(database_url, long, rows)
        few, many = f"{SHORT_LIST_ROWS:,}", f"{rows:,}"
        return [
            ListedPage(f"{few} generations, first page", short, SHORT_LIST_ROWS),
            ListedPage(f"{many} generations, first page", long, rows),
            ListedPage(
                f"{few} generations, page {short_hops + 1} by cursor",
                short,
                SHORT_LIST_ROWS,
                short_cursor,
            ),
            ListedPage(
                f"{many} generations, page {long_hops + 1} by cursor",
                long,
                rows,
                long_cursor,
            ),
            ListedPage(
                f"{many} generations, cursor at row {rows // 2 + 1:,}",
                long,
                rows,
                middle,
            ),
        ]

    async def _metered(
        self, key: str, series: Awaitable[T], profiled: tuple[str, ...]
    ) -> tuple[T, CpuSplit | None, list[Profile], list[str]]:
        """Await `series` with the CPU split taken (the harness counted as
        the load generator) and, with --profile, `profiled` sampled."""
        deployment = self.deployment
        assert deployment is not None
        harness = {"harness (client)": [Watched(os.getpid())]}
        meter = SuiteMeter(deployment, "py-spy" if self.py_spy else None, harness)
        await meter.start()
        profiles: list[Profile] = []
        if self.py_spy is None:
            result = await series
        else:
            pids = {name: deployment.children[name].pid for name in profiled}
            paths = {name: self.log_dir / f"profile-{key}-{name}.txt" for name in pids}
            async with sampled(self.py_spy, pids, paths) as profiles:
                result = await series
        cpu, notes = await meter.stop()
        return result, cpu, profiles, notes


# --- The report ---------------------------------------------------------------

TRIP_HEADER = ["end to end", "per second", "p50 ms", "p99 ms", "max ms", "n", "failed"]
STAGE_HEADER = ["where the time went (database clock)", "p50 ms", "p99 ms"]
LIST_HEADER = ["GET /api/generations?limit=50", "p50 ms", "p99 ms", "n", "errors"]
# The listing series (in the order ListedPage-s are made) compared for the
# issue's target: (short list's series, long list's series, what).
COMPARED = ((0, 1, "first page"), (2, 3, "page by cursor"), (2, 4, "deep cursor"))


def _timings_row(t: Timings, per_second: bool) -> list[str]:
    return [
        t.label,
        f"{t.per_second:,.1f}" if per_second else "-",
        f"{t.median_ms:.1f}",
        f"{t.p99_ms:.1f}",
        f"{max(t.seconds, default=0) * 1000:.1f}",
        f"{t.count:,}",
        f"{t.errors:,}",
    ]


@dataclass
class Summary:
    command: str
    settings: dict[str, Any]
    end_to_end: EndToEnd
    listing: Listing
    outcomes: dict[str, int]

    def trip_rows(self) -> list[list[str]]:
        return [
            _timings_row(self.end_to_end.completed, per_second=True),
            _timings_row(self.end_to_end.posts, per_second=False),
        ]

    def stage_rows(self) -> list[list[str]]:
        return [
            [label, f"{p50:.1f}", f"{p99:.1f}"]
            for label, p50, p99 in self.end_to_end.stages
        ]

    def list_rows(self) -> list[list[str]]:
        return [
            [
                t.label,
                f"{t.median_ms:.2f}",
                f"{t.p99_ms:.2f}",
                f"{t.count:,}",
                f"{t.errors:,}",
            ]
            for t in self.listing.timings
        ]

    def ratios(self) -> list[tuple[str, float, float]]:
        """(what, p50 ratio, p99 ratio) of the long list over the short."""
        timings = self.listing.timings
        found = []
        for short_index, long_index, what in COMPARED:
            short, long = timings[short_index], timings[long_index]
            found.append(
                (
                    f"{what}: {long.label} / {short.label}",
                    long.median_ms / short.median_ms,
                    long.p99_ms / short.p99_ms,
                )
            )
        return found

    def target_lines(self) -> list[str]:
        rows = self.listing.pages[1].rows
        lines = [f"Issue target, {rows:,} generations within 2x of 100:"]
        for what, p50, p99 in self.ratios():
            met = "met" if max(p50, p99) <= LIST_RATIO_TARGET else "NOT MET"
            lines.append(f"  {what}: p50 {p50:.2f}x, p99 {p99:.2f}x -> {met}")
        return lines

    def note_lines(self) -> list[str]:
        failures = self.end_to_end.failures()
        webhooks = dict(self.end_to_end.webhooks)
        return [
            "the measured user's generations by status (warm-up included), and "
            "those still owing billing a capture or release (after waiting up "
            f"to {SETTLE_WAIT_SECONDS:.0f}s for them): {self.outcomes}",
            *(f"{n} generations failed: {why}" for why, n in failures.items()),
            "the gateway's answers to the local fal's webhooks of the measured "
            f"generations: {webhooks} (fal sends each once here; a 404 is a "
            "webhook that came before the worker had stored the request id, "
            "and that job was finished by the worker's poll instead)",
            *(f"end to end: {note}" for note in self.end_to_end.notes),
            f"listing: {self.listing.written_seconds:.1f}s to write the "
            "generations in SQL and ANALYZE",
            *(f"listing: {note}" for note in self.listing.notes),
        ]

    def cpu_lines(self) -> list[str]:
        return [
            f"  {what}: {cpu.describe()}"
            for what, cpu in (
                ("end to end", self.end_to_end.cpu),
                ("listing", self.listing.cpu),
            )
            if cpu is not None
        ]

    def profile_lines(self) -> list[str]:
        lines = []
        for what, profile in [
            *(("end to end", p) for p in self.end_to_end.profiles),
            *(("listing", p) for p in self.listing.profiles),
        ]:
            lines += [
                f"{profile.process} during {what}: GIL held {profile.gil_busy:.0%} "
                f"({profile.samples} samples; stacks in {profile.raw_path})",
                *(f"    {c.share:6.1%}  {c.frame}" for c in profile.self_costs[:8]),
                "  OmniHub functions (inclusive):",
                *(f"    {c.share:6.1%}  {c.frame}" for c in profile.omnihub_costs[:8]),
            ]
        return lines

    def tables(self, table: Callable[[list[list[str]], list[str]], str]) -> list[str]:
        return [
            table(self.trip_rows(), TRIP_HEADER),
            "",
            table(self.stage_rows(), STAGE_HEADER),
            "",
            table(self.list_rows(), LIST_HEADER),
        ]

    def findings(self) -> list[str]:
        return [
            *self.target_lines(),
            "",
            "CPU during each run (cores kept busy on average):",
            *self.cpu_lines(),
            "",
            "Notes:",
            *(f"  {note}" for note in self.note_lines()),
        ]

    def as_text(self) -> str:
        settings = [f"  {name}: {value}" for name, value in self.settings.items()]
        profiles = self.profile_lines()
        return "\n".join(
            [
                f"Command: {self.command}",
                "Settings:",
                *settings,
                "",
                *self.tables(text_table),
                "",
                *self.findings(),
                *(["", *profiles] if profiles else []),
            ]
        )

    def as_markdown(self) -> str:
        settings = [f"- {name}: {value}" for name, value in self.settings.items()]
        profiles = self.profile_lines()
        return "\n".join(
            [
                "# OmniHub generation benchmark",
                "",
                f"    {self.command}",
                "",
                *settings,
                "",
                *self.tables(markdown_table),
                "",
                *(f"    {line}" for line in self.findings()),
                *(["", "```", *profiles, "```"] if profiles else []),
                "",
            ]
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "settings": self.settings,
            "end_to_end": [
                _timings_json(self.end_to_end.completed),
                _timings_json(self.end_to_end.posts),
            ],
            "stages_ms": [
                {"stage": label, "p50": p50, "p99": p99}
                for label, p50, p99 in self.end_to_end.stages
            ],
            "failures": dict(self.end_to_end.failures()),
            "webhook_answers": dict(self.end_to_end.webhooks),
            "outcomes": self.outcomes,
            "listing": [_timings_json(t) for t in self.listing.timings],
            "ratios": [
                {"what": what, "p50": p50, "p99": p99}
                for what, p50, p99 in self.ratios()
            ],
            "ratio_target": LIST_RATIO_TARGET,
            "cpu_cores": {
                "end_to_end": _cpu_json(self.end_to_end.cpu),
                "listing": _cpu_json(self.listing.cpu),
            },
            "notes": self.note_lines(),
        }


def _timings_json(t: Timings) -> dict[str, Any]:
    return {
        "label": t.label,
        "count": t.count,
        "per_second": t.per_second,
        "p50_ms": t.median_ms,
        "p99_ms": t.p99_ms,
        "max_ms": max(t.seconds, default=0) * 1000,
        "errors": t.errors,
    }


def _cpu_json(cpu: CpuSplit | None) -> dict[str, float] | None:
    if cpu is None:
        return None
    return {**cpu.cores, "other": cpu.other, "machine": cpu.machine}


def _worker_setting(environment: dict[str, str], name: str) -> str:
    """A setting as the workers got it: from the environment, or the
    default."""
    if name.upper() in environment:
        return environment[name.upper()]
    return f"{Settings.model_fields[name].default} (default)"


def settings_of(options: Options, deployment: Deployment) -> dict[str, Any]:
    env = deployment.environment
    worker = ", ".join(
        f"{name.upper()}={_worker_setting(env, name)}"
        for name in (
            "worker_concurrency",
            "worker_idle_interval",
            "fal_poll_interval",
            "database_pool_size",
        )
    )
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "database": deployment.database,
        "machine": f"{os.cpu_count()} cores, {platform.platform()}",
        "python": sys.version.split()[0],
        "suite": "auth, billing, catalog, workspace, generation, gateway, "
        f"{WORKERS} generation workers, local fal (instant, webhooks on)",
        "workers": worker,
        "end to end": f"{options.generations} generations of {MODEL} (1 image, "
        f"unique prompt), {options.concurrency} in flight, after "
        f"{options.warmup_generations} untimed; completion followed by SSE "
        "(GET /api/generations/{id}/events)",
        "listing": f"{options.list_requests} sequential requests per series "
        f"after {LIST_WARMUP_ROUNDS} untimed, series taken in turn; "
        f"workspaceId = the user's personal workspace",
    }


def command_line(argv: list[str]) -> str:
    """How this run was started, the database URL without its password."""
    python = os.path.relpath(sys.executable, ROOT)
    words = [python, "-m", "tests.bench.generation", *argv]
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        shown = make_url(url).render_as_string(hide_password=True)
        words.insert(0, f"TEST_DATABASE_URL={shown}")
    if "PYTHONPATH" in os.environ:
        words.insert(0, f"PYTHONPATH={os.environ['PYTHONPATH']}")
    return shlex.join(words)


def write(summary: Summary, directory: Path, stem: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    markdown, data = directory / f"{stem}.md", directory / f"{stem}.json"
    markdown.write_text(summary.as_markdown())
    data.write_text(json.dumps(summary.to_json(), indent=2) + "\n")
    return markdown, data


# --- Command line -------------------------------------------------------------


def parse_arguments(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.generation",
        description="Generations end to end through two workers and the local "
        "fal, and GET /api/generations on a short and a very long list "
        "(see tests/bench/README.md).",
    )
    parser.add_argument("--generations", type=int, default=300, help="default 300")
    parser.add_argument(
        "--concurrency", type=int, default=16, help="in flight at once (default 16)"
    )
    parser.add_argument(
        "--warmup-generations",
        type=int,
        help="untimed generations first (default: --concurrency)",
    )
    parser.add_argument(
        "--list-requests",
        type=int,
        default=300,
        help="timed GET /api/generations per series (default 300)",
    )
    parser.add_argument(
        "--rows",
        type=int,
        default=1_000_000,
        help="generations of the long list (default 1000000)",
    )
    parser.add_argument(
        "--cursor-pages",
        type=int,
        default=10,
        help="nextCursor hops before the timed cursor page (default 10)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the gateway, generation, the workers and fal with py-spy",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=ROOT / "bench-results",
        help="where to write the Markdown and JSON (default bench-results/)",
    )
    args = parser.parse_args(argv)
    if args.generations < 2 or args.concurrency < 1 or args.list_requests < 2:
        parser.error("--generations and --list-requests at least 2, --concurrency 1")
    if args.rows < 2 * PAGE_SIZE or args.cursor_pages < 1:
        parser.error(f"--rows at least {2 * PAGE_SIZE}, --cursor-pages at least 1")
    warmup = args.warmup_generations
    return Options(
        generations=args.generations,
        concurrency=args.concurrency,
        warmup_generations=args.concurrency if warmup is None else warmup,
        list_requests=args.list_requests,
        rows=args.rows,
        cursor_pages=args.cursor_pages,
        profile=args.profile,
        results_dir=args.results,
    )


async def benchmark(options: Options, stamp: str, command: str) -> Summary:
    log_dir = options.results_dir / "logs" / f"generation-{stamp}"
    async with AsyncExitStack() as stack:
        media_dir = Path(stack.enter_context(TemporaryDirectory()))
        bench = GenerationBench(options, stack, log_dir)
        end_to_end, listing = await bench.run(media_dir)
        assert bench.deployment is not None
        settings = settings_of(options, bench.deployment)
    return Summary(command, settings, end_to_end, listing, bench.outcomes)


async def _main(options: Options, stamp: str, command: str) -> Summary:
    # A SIGTERM stops the children and drops the database, as Ctrl-C does.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await benchmark(options, stamp, command)


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
    except (BenchFailed, ChildFailed, PySpyMissing) as error:
        print(f"\nbench failed: {error}", file=sys.stderr)
        return 1
    print()
    print(summary.as_text())
    markdown, data = write(summary, options.results_dir, f"generation-{stamp}")
    print(f"\nWritten: {os.path.relpath(markdown)}, {data.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
