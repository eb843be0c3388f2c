"""Stage `load`: realistic users against `make run`, with zero errors.

    python -m tests.verify.load [--short] [--users N] [--seconds S] --out f.json

Starts `python -m deploy.local` on a fresh database (tests/verify/suite.py),
runs the locust scenario of tests/verify/locustfile.py (sign up, browse,
generate and follow, chat streamed, share, publish, like, buy credits) as
its own process, `--users` users (100; 30 with --short) for `--seconds`
(300; 60 with --short), then reads locust's CSV statistics: requests,
failures, p50 and p99 per route, requests per second. The stage is ok when
no request failed and the books are right afterwards
(tests/verify/invariants.py). Sign-ins all come from 127.0.0.1, so the
suite runs with AUTH_RATE_LIMIT_ADDRESS raised out of reach.
Logs: bench-results/logs/verify-load-<time>/.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import re
import shlex
import signal
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from tests.bench.report import markdown_table
from tests.database import ROOT
from tests.verify.invariants import Books, settle_and_check
from tests.verify.suite import local_suite

T = TypeVar("T")

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
LOCUST = Path(sys.executable).with_name("locust")
# Users arrive one a second, as sign-ups trickle in, rather than all at once.
# Each sign-up hashes a password with argon2id; at two a second on two cores
# the sign-up wave alone saturated auth and timed requests out.
SPAWN_RATE = 1
# Beyond its run time, how long locust may take to start and stop.
LOCUST_SLACK_SECONDS = 90.0
# After the load: how long generations may take to end and settle.
SETTLE_SECONDS = 150.0
FAILURE_KIND = re.compile(r"(HTTP \d+|stream error \d+|generation \w+|no sign-up)")


@dataclass(frozen=True)
class Crowd:
    users: int
    seconds: int
    spawn_rate: float = SPAWN_RATE


@dataclass
class RouteFigures:
    kind: str
    name: str
    requests: int
    failures: int
    p50: str
    p99: str
    rps: float

    @property
    def route(self) -> str:
        return f"{self.kind} {self.name}".strip()


@dataclass
class Failure:
    route: str
    error: str
    occurrences: int

    @property
    def kind(self) -> str:
        found = FAILURE_KIND.search(self.error)
        return found.group(1) if found else self.error[:80]


def logs_dir(stage: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return ROOT / "bench-results" / "logs" / f"verify-{stage}-{stamp}"


async def run_locust(host: str, crowd: Crowd, logs: Path) -> Path:
    """locust headless against `host`; the CSV prefix it wrote."""
    prefix = logs / "locust"
    command = [
        str(LOCUST),
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "-u",
        str(crowd.users),
        "-r",
        str(crowd.spawn_rate),
        "-t",
        f"{crowd.seconds}s",
        "--csv",
        str(prefix),
        "--only-summary",
        "--host",
        host,
    ]
    with (logs / "locust.log").open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            *command,
            cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        await asyncio.wait_for(process.wait(), crowd.seconds + LOCUST_SLACK_SECONDS)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
            await process.wait()
    return prefix


def read_stats(prefix: Path) -> tuple[list[RouteFigures], RouteFigures]:
    """Per route, and the total (locust's Aggregated row)."""
    routes = []
    total = None
    with Path(f"{prefix}_stats.csv").open() as file:
        for row in csv.DictReader(file):
            figures = RouteFigures(
                kind=row["Type"],
                name=row["Name"],
                requests=int(row["Request Count"]),
                failures=int(row["Failure Count"]),
                p50=row["50%"],
                p99=row["99%"],
                rps=float(row["Requests/s"]),
            )
            if row["Name"] == "Aggregated":
                total = figures
            else:
                routes.append(figures)
    assert total is not None, f"no Aggregated row in {prefix}_stats.csv"
    return routes, total


def read_failures(prefix: Path) -> list[Failure]:
    with Path(f"{prefix}_failures.csv").open() as file:
        return [
            Failure(
                f"{row['Method']} {row['Name']}", row["Error"], int(row["Occurrences"])
            )
            for row in csv.DictReader(file)
        ]


def routes_table(routes: list[RouteFigures]) -> str:
    rows = [
        [
            f"`{r.route}`",
            str(r.requests),
            str(r.failures),
            r.p50,
            r.p99,
            f"{r.rps:.2f}",
        ]
        for r in routes
    ]
    return markdown_table(
        rows, ["route", "requests", "failures", "p50 ms", "p99 ms", "req/s"]
    )


def failures_table(failures: list[Failure]) -> str:
    rows = [
        [f"`{f.route}`", f"`{f.error[:160]}`", str(f.occurrences)] for f in failures
    ]
    return markdown_table(rows, ["route", "error", "count"])


def books_lines(books: Books) -> list[str]:
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(books.by_status.items()))
    return [
        f"Generations by status after {books.waited_seconds:.0f} s of settling: "
        f"{statuses or 'none'}",
        "",
        *(f"- [{'x' if ok else ' '}] {what}" for what, ok in books.checks()),
    ]


def books_figures(books: Books) -> dict[str, Any]:
    figures: dict[str, Any] = {
        f"generations {k}": v for k, v in books.by_status.items()
    }
    figures.update(books.figures)
    return figures


def write(out: Path, result: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(result["markdown"])
    print(f"\n{result['summary']}")


def parse_arguments(argv: list[str], stage: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m tests.verify.{stage}")
    parser.add_argument("--short", action="store_true", help="the CI budget")
    parser.add_argument("--users", type=int, help="(100; 30 with --short)")
    parser.add_argument("--seconds", type=int, help="of load (300; 60 with --short)")
    parser.add_argument(
        "--spawn-rate", type=float, default=SPAWN_RATE, help="users arriving a second"
    )
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args(argv)


def command_line(argv: list[str], stage: str) -> str:
    return shlex.join(
        [
            "PYTHONPATH=.:protos",
            ".venv/bin/python",
            "-m",
            f"tests.verify.{stage}",
            *argv,
        ]
    )


@dataclass
class Outcome:
    routes: list[RouteFigures]
    total: RouteFigures
    failures: list[Failure]
    books: Books
    elapsed: float
    cpu: dict[str, float]
    load_average: float


async def run(crowd: Crowd, logs: Path) -> Outcome:
    async with local_suite(logs) as suite:
        started = time.monotonic()
        prefix = await run_locust(suite.url, crowd, logs)
        elapsed = time.monotonic() - started
        cpu, load_average = suite.cpu_seconds(), os.getloadavg()[1]
        routes, total = read_stats(prefix)
        failures = read_failures(prefix)
        books = await settle_and_check(suite.database_url, SETTLE_SECONDS)
    return Outcome(routes, total, failures, books, elapsed, cpu, load_average)


def machine_lines(outcome: Outcome) -> list[str]:
    """Where the CPU went: the suite's processes, and the whole machine."""
    used = ", ".join(
        f"{name} {seconds:.0f}"
        for name, seconds in sorted(outcome.cpu.items(), key=lambda kv: -kv[1])
    )
    return [
        f"CPU seconds used by each process of the suite: {used}. Machine: "
        f"{os.cpu_count()} CPUs, load average {outcome.load_average:.1f} over "
        "the last 5 minutes (other work on the machine included).",
        "",
    ]


def report(
    argv: list[str], crowd: Crowd, logs: Path, outcome: Outcome
) -> dict[str, Any]:
    routes, total, failures = outcome.routes, outcome.total, outcome.failures
    books, elapsed = outcome.books, outcome.elapsed
    ok = total.failures == 0 and total.requests > 0 and books.ok
    summary = (
        f"{crowd.users} users for {crowd.seconds} s: {total.requests} requests, "
        f"{total.failures} failures, p50 {total.p50} ms, p99 {total.p99} ms, "
        f"{total.rps:.1f} req/s; books {'right' if books.ok else 'WRONG'}"
    )
    markdown = [
        f"{crowd.users} locust users (tests/verify/locustfile.py, arriving "
        f"{crowd.spawn_rate:g} a second) against `make run` for {crowd.seconds} s "
        f"({elapsed:.0f} s with start and stop). "
        f"Logs: `{logs.relative_to(ROOT)}`.",
        "",
        routes_table([*routes, total]),
        "",
    ]
    if failures:
        markdown += ["Failures:", "", failures_table(failures), ""]
    markdown += machine_lines(outcome) + books_lines(books)
    figures: dict[str, Any] = {
        "users": crowd.users,
        "seconds": crowd.seconds,
        "users arriving a second": crowd.spawn_rate,
        "requests": total.requests,
        "failures": total.failures,
        "p50 ms": total.p50,
        "p99 ms": total.p99,
        "req/s": round(total.rps, 2),
    }
    for r in routes:
        figures[f"{r.route} p50 ms"] = r.p50
        figures[f"{r.route} p99 ms"] = r.p99
    figures.update(books_figures(books))
    figures["load average"] = round(outcome.load_average, 1)
    return {
        "stage": "load",
        "ok": ok,
        "command": command_line(argv, "load"),
        "summary": summary,
        "figures": figures,
        "markdown": "\n".join(markdown),
    }


def main(argv: list[str]) -> int:
    args = parse_arguments(argv, "load")
    crowd = Crowd(
        args.users or (30 if args.short else 100),
        args.seconds or (60 if args.short else 300),
        args.spawn_rate,
    )
    logs = logs_dir("load")
    logs.mkdir(parents=True, exist_ok=True)
    try:
        outcome = asyncio.run(stoppable(run(crowd, logs)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 130
    except Exception as error:  # the suite did not start: say so in the report
        write(args.out, broken("load", argv, logs, error))
        return 1
    result = report(argv, crowd, logs, outcome)
    write(args.out, result)
    return 0 if result["ok"] else 1


async def stoppable(work: Coroutine[Any, Any, T]) -> T:
    """`work`, cancelled by SIGTERM as by Ctrl-C, so every process it
    started is stopped and its database dropped."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await work


def broken(stage: str, argv: list[str], logs: Path, error: Exception) -> dict[str, Any]:
    what = f"{type(error).__name__}: {error}"
    return {
        "stage": stage,
        "ok": False,
        "command": command_line(argv, stage),
        "summary": f"did not run: {what.splitlines()[0][:200]}",
        "figures": {},
        "markdown": f"The stage did not run (logs: `{logs.relative_to(ROOT)}`):\n\n"
        f"```\n{what[-3000:]}\n```",
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
