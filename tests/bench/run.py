"""One benchmark run: bring the suite up (or use one at --url), open the
sessions the load needs, drive each target with wrk, and tear it all down."""

from __future__ import annotations

import asyncio
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

from tests.bench import processes, profile, sessions, wrk
from tests.bench.cpu import CpuMeter
from tests.bench.deployment import (
    DatabaseActivity,
    Deployment,
    database_activity,
    existing_suite,
    start_suite,
)
from tests.bench.report import Result, Summary
from tests.bench.wrk import Load, Report
from tests.database import ROOT
from tests.suite import free_port

TARGETS = ("ceiling", "me", "refresh")
PROFILED = ("gateway", "auth")
# Refresh tokens to open when --sessions is not given: this many times what
# wrk could spend at the expected rate, plus what can be in flight.
POOL_HEADROOM = 1.5
MIN_POOL_SIZE = 200
MAX_POOL_SIZE = 50_000
# The expected refresh rate when /api/auth/me was not measured first.
GUESSED_RATE = 500.0
REFRESH_SCRIPT = wrk.SCRIPTS_DIR / "refresh.lua"
REFRESH_SCRIPT_PREFIX = "refresh-pool"


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

    @property
    def refresh_load(self) -> Load:
        return Load(self.load.threads, self.load.connections, self.refresh_seconds)

    @property
    def warmup_load(self) -> Load:
        return Load(self.load.threads, self.load.connections, self.warmup_seconds)


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

    async def run(self) -> list[Result]:
        deployment = self.deployment = await self._deployment()
        results = []
        if "ceiling" in self.options.targets:
            results.append(await self._ceiling())
        if "me" in self.options.targets or "refresh" in self.options.targets:
            results += await self._suite_targets(deployment)
        return results

    async def _deployment(self) -> Deployment:
        if self.options.url:
            return existing_suite(self.options.url)
        say("Starting PostgreSQL, the auth service and the gateway ...")
        return await start_suite(self.stack, self.log_dir)

    async def _ceiling(self) -> Result:
        result = Result("ceiling", "ceiling: bare Starlette")
        port = free_port()
        env = processes.child_environment({"PORT": str(port)})
        child = await processes.start(
            "ceiling", ["tests.bench.ceiling"], env, self.log_dir
        )
        self.stack.push_async_callback(child.stop)
        url = f"http://127.0.0.1:{port}/api/auth/me"
        await processes.wait_until(child, processes.http_ok(url))
        say(f"Measuring {result.target} ...")
        await self._warm_up(url)
        run = wrk.run(self.wrk, url, self.options.load)
        await self._measure_ceiling(result, run, child.pid)
        await child.stop()
        return result

    async def _suite_targets(self, deployment: Deployment) -> list[Result]:
        results = []
        async with httpx.AsyncClient(
            base_url=deployment.gateway_url, timeout=30.0
        ) as http:
            account = await sessions.register(http)
            if "me" in self.options.targets:
                results.append(await self._me(deployment, account))
            if "refresh" in self.options.targets:
                me = results[0].report if results else None
                results.append(await self._refresh(http, deployment, me))
        return results

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

    async def _me(self, deployment: Deployment, account: sessions.Account) -> Result:
        result = Result("me", "GET /api/auth/me")
        url = f"{deployment.gateway_url}/api/auth/me"
        headers = {"Authorization": f"Bearer {account.access_token}"}
        say(f"Measuring {result.target} ...")
        await self._warm_up(url, headers=headers)
        run = wrk.run(self.wrk, url, self.options.load, headers=headers)
        await self._measure(result, run, deployment)
        return result

    async def _refresh(
        self, http: httpx.AsyncClient, deployment: Deployment, me: Report | None
    ) -> Result:
        """Each request spends a token, so tokens are opened in two lots: for
        the warm-up at /me's rate (a refresh does more work, so should not be
        faster), then for the run at the rate the warm-up reached."""
        result = Result("refresh", "POST /api/auth/refresh")
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
        await self._measure(result, run, deployment, seconds)
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
        meter = CpuMeter({"ceiling": [pid]}, "wrk")
        meter.start()
        result.report = await run
        result.cpu = meter.stop()
        _note_errors(result)

    async def _measure(
        self,
        result: Result,
        run: Awaitable[Report],
        deployment: Deployment,
        seconds: int | None = None,
    ) -> None:
        """Await a suite target's wrk run, noting the CPU split, connections
        opened to PostgreSQL and, with --profile, sampling the processes."""
        pids = {name: [child.pid] for name, child in deployment.children.items()}
        database = deployment.database_url
        before = await database_activity(database) if database else None
        if before is not None:
            pids["postgres"] = before.backend_pids
        profiling = self.py_spy is not None and deployment.managed
        meter = CpuMeter(pids, "wrk + py-spy" if profiling else "wrk")
        meter.start()
        if profiling:
            result.report = await self._profiled(result, run, pids, seconds)
        else:
            result.report = await run
        if before is not None and database is not None:
            after = await database_activity(database)
            late = sorted(set(after.backend_pids) - set(before.backend_pids))
            result.cpu = meter.stop({"postgres": late})
            _note_connections(result, before, after)
        else:
            result.cpu = meter.stop()
        _note_errors(result)

    async def _profiled(
        self,
        result: Result,
        run: Awaitable[Report],
        pids: dict[str, list[int]],
        seconds: int | None,
    ) -> Report:
        assert self.py_spy is not None
        # A second short of the run, so that sampling never outlasts the load.
        seconds = max(1, (seconds or self.options.load.seconds) - 1)
        children = {name: pids[name][0] for name in PROFILED}
        paths = {
            name: self.log_dir / f"profile-{result.key}-{name}.txt" for name in children
        }
        recordings = [
            profile.record(self.py_spy, pid, seconds, paths[name])
            for name, pid in children.items()
        ]
        report, *_ = await asyncio.gather(run, *recordings)
        assert isinstance(report, Report)
        result.profiles = [
            profile.summarise(name, path, seconds) for name, path in paths.items()
        ]
        return report


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


def _note_connections(
    result: Result, before: DatabaseActivity, after: DatabaseActivity
) -> None:
    if before.connections_opened is None or after.connections_opened is None:
        return
    opened = after.connections_opened - before.connections_opened
    if opened > 0:
        result.notes.append(
            f"{opened} new PostgreSQL connections were opened during the run "
            "(the pool closes what it cannot keep and reopens under load)"
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
        "commit": _version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        "suite": options.url or "started by the harness (auth + gateway processes)",
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
    }


async def benchmark(options: Options, stamp: str) -> Summary:
    log_dir = options.results_dir / "logs" / stamp
    async with AsyncExitStack() as stack:
        # Refresh tokens are credentials: kept out of bench-results/ and
        # deleted with the run.
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        bench = Bench(options, stack, log_dir, work_dir)
        results = await bench.run()
        assert bench.deployment is not None
        settings = settings_of(
            options, bench.deployment.database, bench.wrk, bench.sessions_opened
        )
    return Summary(settings, results)
