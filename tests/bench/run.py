"""One benchmark run: bring the suite up (or use one at --url), open the
sessions the load needs, drive each target with wrk, and tear it all down."""

from __future__ import annotations

import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

from tests.bench import ledger, processes, profile, sessions, wrk
from tests.bench.ceiling import MODELS_BODY_ENV, MODELS_ETAG_ENV
from tests.bench.cpu import CpuMeter, Watched
from tests.bench.deployment import Deployment, existing_suite, start_suite
from tests.bench.ledger import LedgerBench, LedgerLoad, LedgerResult
from tests.bench.measure import SuiteMeter
from tests.bench.report import Result, Summary
from tests.bench.wrk import Load, Report
from tests.database import ROOT
from tests.suite import free_port

TARGETS = (
    "ceiling",
    "me",
    "me-uncached",
    "refresh",
    "models-ceiling",
    "models",
    "models-304",
    "price",
    "ledger",
)
MODELS_TARGETS = ("models-ceiling", "models", "models-304")
# Refresh tokens to open when --sessions is not given: this many times what
# wrk could spend at the expected rate, plus what can be in flight.
POOL_HEADROOM = 1.5
MIN_POOL_SIZE = 200
MAX_POOL_SIZE = 50_000
# The expected refresh rate when /api/auth/me was not measured first.
GUESSED_RATE = 500.0
REFRESH_SCRIPT = wrk.SCRIPTS_DIR / "refresh.lua"
REFRESH_SCRIPT_PREFIX = "refresh-pool"
PRICE_SCRIPT = wrk.SCRIPTS_DIR / "price.lua"
PRICED_MODEL = "fal-flux-pro-v1.1"


@dataclass(frozen=True)
class Options:
    url: str | None
    load: Load
    refresh_seconds: int
    warmup_seconds: int
    sessions: int | None
    targets: tuple[str, ...]
    profile: bool
    results_dir: Path
    ledger_rows: int = 1_000_000
    ledger_seconds: int = 10
    balance_reads: int = 2_000

    @property
    def refresh_load(self) -> Load:
        return Load(self.load.threads, self.load.connections, self.refresh_seconds)

    @property
    def warmup_load(self) -> Load:
        return Load(self.load.threads, self.load.connections, self.warmup_seconds)

    @property
    def ledger_load(self) -> LedgerLoad:
        return LedgerLoad(
            self.ledger_rows,
            self.balance_reads,
            self.ledger_seconds,
            self.warmup_seconds,
        )


@dataclass(frozen=True)
class ModelsListing:
    """GET /api/models as the gateway answered it: the ceiling serves these
    bytes, and the 304 target sends the ETag back."""

    body: bytes
    etag: str


class Bench:
    """The state of one run; every process it starts is registered on
    `stack`, which stops them however the run ends."""

    def __init__(
        self, options: Options, stack: AsyncExitStack, log_dir: Path, work_dir: Path
    ) -> None:
        self.options = options
        self.stack = stack
        self.log_dir = log_dir
        self.work_dir = work_dir
        self.wrk = wrk.ensure_wrk()
        self.py_spy = profile.find_py_spy() if options.profile else None
        self.deployment: Deployment | None = None
        self.sessions_opened: int | None = None

    async def run(self) -> tuple[list[Result], LedgerResult | None]:
        deployment = self.deployment = await self._deployment()
        targets = self.options.targets
        results = []
        if "ceiling" in targets:
            me_ceiling = Result("ceiling", "ceiling: bare Starlette")
            results.append(await self._ceiling(me_ceiling, "/api/auth/me", {}))
        results += await self._suite_targets(deployment)
        if "ledger" not in targets:
            return results, None
        say("Measuring the billing ledger (gRPC) ...")
        profiler = self.py_spy if deployment.managed else None
        ledger_bench = LedgerBench(
            deployment, self.options.ledger_load, profiler, self.log_dir
        )
        return results, await ledger_bench.run()

    async def _deployment(self) -> Deployment:
        if self.options.url:
            return existing_suite(self.options.url)
        say("Starting PostgreSQL, the services and the gateway ...")
        return await start_suite(self.stack, self.log_dir)

    async def _ceiling(self, result: Result, path: str, env: dict[str, str]) -> Result:
        """Serve a ceiling app in a process of its own (the rest of the suite
        idles meanwhile), load `path` on it and stop it."""
        port = free_port()
        env = processes.child_environment({"PORT": str(port), **env})
        child = await processes.start(
            result.key, ["tests.bench.ceiling"], env, self.log_dir
        )
        self.stack.push_async_callback(child.stop)
        url = f"http://127.0.0.1:{port}{path}"
        await processes.wait_until(child, processes.http_ok(url))
        say(f"Measuring {result.target} ...")
        await self._warm_up(url)
        run = wrk.run(self.wrk, url, self.options.load)
        await self._measure_ceiling(result, run, child.pid)
        await child.stop()
        return result

    async def _suite_targets(self, deployment: Deployment) -> list[Result]:
        targets = self.options.targets
        results = []
        async with httpx.AsyncClient(
            base_url=deployment.gateway_url, timeout=30.0
        ) as http:
            me = None
            if "me" in targets:
                account = await sessions.register(http)
                me = await self._me(deployment, account)
                results.append(me)
            if "me-uncached" in targets:
                account = await sessions.register(http)
                results.append(await self._me_uncached(deployment, account))
            if "refresh" in targets:
                me_report = me.report if me else None
                results.append(await self._refresh(http, deployment, me_report))
            if set(MODELS_TARGETS) & set(targets):
                results += await self._models_targets(http, deployment)
            if "price" in targets:
                results.append(await self._price(deployment))
        return results

    async def _models_targets(
        self, http: httpx.AsyncClient, deployment: Deployment
    ) -> list[Result]:
        targets = self.options.targets
        models_ceiling = Result(
            "models-ceiling", "models-ceiling: bare Starlette, same bytes"
        )
        models = Result("models", "GET /api/models", ceiling_key="models-ceiling")
        not_modified = Result(
            "models-304", "GET /api/models, If-None-Match (304)", ceiling_key="ceiling"
        )
        chosen = [r for r in (models_ceiling, models, not_modified) if r.key in targets]
        response = await http.get("/api/models")
        if response.status_code != 200 or "etag" not in response.headers:
            for result in chosen:
                result.notes.append(
                    f"not run: GET /api/models answered {response.status_code} "
                    f"without the ETag the targets need: {response.text[:200]}"
                )
            return chosen
        listing = ModelsListing(response.content, response.headers["etag"])
        models_ceiling.notes.append(
            f"served the gateway's {len(listing.body):,}-byte /api/models body "
            f"(ETag {listing.etag})"
        )
        if models_ceiling in chosen:
            await self._ceiling(models_ceiling, "/api/models", self._handed(listing))
        if models in chosen:
            await self._get(models, deployment, "/api/models", {})
        if not_modified in chosen:
            await self._not_modified(not_modified, http, deployment, listing)
        return chosen

    def _handed(self, listing: ModelsListing) -> dict[str, str]:
        """The environment that hands the gateway's answer to the ceiling."""
        body = self.work_dir / "models-body.json"
        body.write_bytes(listing.body)
        return {MODELS_BODY_ENV: str(body), MODELS_ETAG_ENV: listing.etag}

    async def _not_modified(
        self,
        result: Result,
        http: httpx.AsyncClient,
        deployment: Deployment,
        listing: ModelsListing,
    ) -> None:
        headers = {"If-None-Match": listing.etag}
        # wrk counts a 200 and a 304 alike, so check once that it is a 304.
        status = (await http.get("/api/models", headers=headers)).status_code
        if status != 304:
            result.notes.append(
                f"the gateway answered If-None-Match with {status}, not 304: "
                "these are full answers"
            )
        await self._get(result, deployment, "/api/models", headers)

    async def _me(
        self,
        deployment: Deployment,
        account: sessions.Account,
        result: Result | None = None,
    ) -> Result:
        result = result or Result("me", "GET /api/auth/me", ceiling_key="ceiling")
        headers = {"Authorization": f"Bearer {account.access_token}"}
        return await self._get(result, deployment, "/api/auth/me", headers)

    async def _me_uncached(
        self, deployment: Deployment, account: sessions.Account
    ) -> Result:
        """/me through a second gateway that keeps no answers
        (ME_CACHE_SECONDS=0): what every request costs the three services."""
        result = Result(
            "me-uncached", "GET /api/auth/me, nothing kept", ceiling_key="ceiling"
        )
        if not deployment.environment:
            result.notes.append("not run: needs a suite this harness started")
            return result
        port = free_port()
        env = {**deployment.environment, "PORT": str(port), "ME_CACHE_SECONDS": "0"}
        gateway = await processes.start(
            "gateway-uncached", ["gateway.main"], env, self.log_dir
        )
        url = f"http://127.0.0.1:{port}"
        try:
            await processes.wait_until(gateway, processes.http_ok(f"{url}/healthz"))
            children = {**deployment.children, "gateway": gateway}
            uncached = replace(deployment, gateway_url=url, children=children)
            return await self._me(uncached, account, result)
        finally:
            await gateway.stop()

    async def _get(
        self,
        result: Result,
        deployment: Deployment,
        path: str,
        headers: dict[str, str],
    ) -> Result:
        url = f"{deployment.gateway_url}{path}"
        say(f"Measuring {result.target} ...")
        await self._warm_up(url, headers=headers)
        run = wrk.run(self.wrk, url, self.options.load, headers=headers)
        await self._measure(result, run, deployment)
        return result

    async def _price(self, deployment: Deployment) -> Result:
        path = f"/api/models/{PRICED_MODEL}/price"
        result = Result("price", f"POST {path}", ceiling_key="ceiling")
        url = f"{deployment.gateway_url}{path}"
        say(f"Measuring {result.target} ...")
        if self.options.warmup_seconds:
            await wrk.run(self.wrk, url, self.options.warmup_load, script=PRICE_SCRIPT)
        run = wrk.run(self.wrk, url, self.options.load, script=PRICE_SCRIPT)
        await self._measure(result, run, deployment)
        return result

    def _pool_size(self, seconds: int, rate: float) -> int:
        """--sessions shared out by time, or enough tokens to keep wrk busy
        for `seconds` at `rate` requests/s with room to spare."""
        if self.options.sessions is not None:
            total = self.options.warmup_seconds + self.options.refresh_seconds
            return max(1, self.options.sessions * seconds // total)
        needed = math.ceil(rate * seconds * POOL_HEADROOM)
        in_flight = 4 * self.options.load.connections
        return min(MAX_POOL_SIZE, max(MIN_POOL_SIZE, needed + in_flight))

    async def _open_sessions(
        self, http: httpx.AsyncClient, deployment: Deployment, count: int
    ) -> list[str]:
        started = time.monotonic()
        if deployment.google is not None:
            say(f"  opening {count} sessions (Google sign-in) ...")
            pool = await sessions.google_sessions(http, deployment.google, count)
        else:
            say(f"  opening {count} sessions (password sign-in) ...")
            account = await sessions.register(http)
            pool = await sessions.password_sessions(http, account, count)
        say(f"  {len(pool)} sessions in {time.monotonic() - started:.1f}s")
        self.sessions_opened = (self.sessions_opened or 0) + len(pool)
        return pool

    async def _refresh(
        self, http: httpx.AsyncClient, deployment: Deployment, me: Report | None
    ) -> Result:
        """Each request spends a token, so tokens are opened in two lots: for
        the warm-up at /me's rate (a refresh does more work, so should not be
        faster), then for the run at the rate the warm-up reached."""
        result = Result("refresh", "POST /api/auth/refresh", ceiling_key="ceiling")
        url = f"{deployment.gateway_url}/api/auth/refresh"
        rate = me.requests_per_second if me else GUESSED_RATE
        say(f"Measuring {result.target} ...")
        try:
            if self.options.warmup_seconds:
                seconds = self.options.warmup_seconds
                pool = await self._open_sessions(
                    http, deployment, self._pool_size(seconds, rate)
                )
                warmup = self.options.warmup_load
                rate = (await self._run_refresh(url, warmup, pool)).requests_per_second
            seconds = self.options.refresh_seconds
            pool = await self._open_sessions(
                http, deployment, self._pool_size(seconds, rate)
            )
        except sessions.SessionsRefused as refused:
            say(f"  {refused}")
            result.notes.append(f"not run: {refused}")
            return result
        run = self._run_refresh(url, self.options.refresh_load, pool)
        await self._measure(result, run, deployment)
        _note_refresh_pool(result)
        return result

    def _run_refresh(self, url: str, load: Load, pool: list[str]) -> Awaitable[Report]:
        tokens = self.work_dir / f"refresh-tokens-{len(pool)}-{time.monotonic_ns()}.txt"
        tokens.write_text("\n".join(pool) + "\n")
        return wrk.run(
            self.wrk,
            url,
            load,
            script=REFRESH_SCRIPT,
            script_args=[str(tokens), str(load.threads)],
            script_prefix=REFRESH_SCRIPT_PREFIX,
        )

    async def _warm_up(self, url: str, headers: dict[str, str] | None = None) -> None:
        """Fill connection pools and caches before anything is counted."""
        if self.options.warmup_seconds:
            await wrk.run(self.wrk, url, self.options.warmup_load, headers=headers)

    async def _measure_ceiling(
        self, result: Result, run: Awaitable[Report], pid: int
    ) -> None:
        meter = CpuMeter({"ceiling": [Watched(pid)]}, "wrk")
        meter.start()
        result.report = await run
        result.cpu = meter.stop()
        _note_errors(result)

    async def _measure(
        self, result: Result, run: Awaitable[Report], deployment: Deployment
    ) -> None:
        """Await a suite target's wrk run, noting the CPU split, connections
        opened to PostgreSQL and, with --profile, sampling the processes."""
        profiling = self.py_spy is not None and deployment.managed
        meter = SuiteMeter(deployment, "wrk + py-spy" if profiling else "wrk")
        await meter.start()
        if self.py_spy is not None and profiling:
            pids = {name: child.pid for name, child in deployment.children.items()}
            paths = {
                name: self.log_dir / f"profile-{result.key}-{name}.txt" for name in pids
            }
            async with profile.sampled(self.py_spy, pids, paths) as profiles:
                result.report = await run
            result.profiles = profiles
        else:
            result.report = await run
        result.cpu, notes = await meter.stop()
        result.notes += notes
        _note_errors(result)


def _note_errors(result: Result) -> None:
    report = result.report
    assert report is not None
    if report.non_2xx:
        result.notes.append(
            f"{report.non_2xx:,} of {report.requests:,} responses were not 2xx; "
            "requests/s and latencies include them"
        )
    if report.socket_error_count:
        errors = ", ".join(f"{k} {v}" for k, v in report.socket_errors.items() if v)
        result.notes.append(
            f"socket errors ({errors}); timed-out requests are missing from the "
            "latencies"
        )


def _note_refresh_pool(result: Result) -> None:
    report = result.report
    assert report is not None
    if not report.script_lines:
        result.notes.append("the refresh script printed no pool summary")
        return
    fields = dict(part.split("=", 1) for part in report.script_lines[-1].split())
    result.notes.append(
        f"{fields['succeeded']} refreshes succeeded, {fields['failed']} did not "
        f"(by status: {fields['statuses'] or 'none'}); "
        f"{fields['sent']} requests sent from a pool of {fields['pool']} tokens"
    )
    if int(fields["exhausted"]):
        result.notes.append(
            f"the token pool ran out: {fields['exhausted']} requests went without "
            "a fresh token (those answered count as non-2xx); raise --sessions "
            "or lower --refresh-duration"
        )


def say(message: str) -> None:
    print(message, flush=True)


def _version(command: list[str]) -> str:
    completed = subprocess.run(  # noqa: S603 - fixed arguments
        command, capture_output=True, text=True, check=False
    )
    output = (completed.stdout or completed.stderr).strip()
    return output.splitlines()[0] if output else "unknown"


def _commit() -> str:
    git = ["git", "-C", str(ROOT)]
    commit = _version([*git, "rev-parse", "--short", "HEAD"])
    changed = subprocess.run(  # noqa: S603 - fixed arguments
        [*git, "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return f"{commit} with uncommitted changes" if changed else commit


def _package(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def settings_of(
    options: Options, deployment_database: str, wrk_path: str, pool_size: int | None
) -> dict[str, Any]:
    load = options.load
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
        "suite": options.url
        or "started by the harness (auth, billing, catalog, gateway)",
        "database": deployment_database,
        "machine": f"{os.cpu_count()} cores, {platform.platform()}",
        "python": sys.version.split()[0],
        "uvicorn": f"{_package('uvicorn')} (uvloop {_package('uvloop')}, "
        f"httptools {_package('httptools')})",
        "wrk": _version([wrk_path, "-v"]),
        "load": f"-t{load.threads} -c{load.connections} -d{load.seconds}s "
        f"(refresh -d{options.refresh_seconds}s), "
        f"warm-up {options.warmup_seconds}s per target",
        "refresh token pool": (
            f"{pool_size} sessions" if pool_size is not None else "not used"
        ),
        "ledger": _ledger_setting(options),
    }


def _ledger_setting(options: Options) -> str:
    if "ledger" not in options.targets:
        return "not run"
    return (
        f"{options.ledger_rows:,} entries vs {ledger.SHORT_ENTRIES}, "
        f"{options.balance_reads:,} GetBalance reads of each, one at a time; "
        f"hold+capture {ledger.CLIENTS} clients x {options.ledger_seconds}s "
        f"(after {options.warmup_seconds}s warm-up)"
    )


async def benchmark(options: Options, stamp: str) -> Summary:
    log_dir = options.results_dir / "logs" / stamp
    async with AsyncExitStack() as stack:
        # Refresh tokens are credentials: kept out of bench-results/ and
        # deleted with the run.
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        bench = Bench(options, stack, log_dir, work_dir)
        results, ledger_result = await bench.run()
        assert bench.deployment is not None
        settings = settings_of(
            options, bench.deployment.database, bench.wrk, bench.sessions_opened
        )
    return Summary(settings, results, ledger_result)
