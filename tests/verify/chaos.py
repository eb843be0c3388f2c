"""Stage `chaos`: the load of tests/verify/load.py while parts of the
platform die, the database refuses connections and the providers misbehave.

    python -m tests.verify.chaos [--short] [--users N] [--seconds S] --out f.json

Starts `make run` with RUN_RESTART_CRASHED=1 (deploy/local.py restarts a
child that dies) and WORKER_LEASE=10s (a killed worker's jobs are taken up
again sooner), its database behind a proxy (tests/verify/pg_proxy.py). As an
operator would, it shortens the image model's timeout (PUT
/api/admin/models/{id} maxWaitSeconds) so that a job fal never finishes
ends within the run. Then, while the locust users of tests/verify/locustfile.py
run, two schedules side by side:

- kills: SIGKILL each service, the worker and the gateway in turn, each time
  waiting until the runner has restarted it and it serves again;
- faults: PostgreSQL refusing connections for 10 s, then fal's submit_500,
  never_finishes and malformed, then OpenRouter's error_500, stall and
  garbage, each for some seconds (POST /simulator/faults).

Afterwards it waits until every generation has ended (or passed its
timeout) and checks the books (tests/verify/invariants.py). Failures the
chaos explains are reported per route and allowed: no answer, 502, 503 or
504 while a part was down ("refused while down"), and generations that
failed with a provider error or timed out ("provider fault"). Any other
failure (a 500, a 4xx, a generation never finished), a part that did not
come back, or a broken invariant fails the stage.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from deploy.local import SERVICES
from tests.bench.report import markdown_table
from tests.database import ROOT
from tests.verify.invariants import Books, settle_and_check
from tests.verify.load import (
    SETTLE_SECONDS,
    Crowd,
    Failure,
    RouteFigures,
    books_figures,
    books_lines,
    broken,
    command_line,
    logs_dir,
    parse_arguments,
    read_failures,
    read_stats,
    routes_table,
    run_locust,
    stoppable,
    write,
)
from tests.verify.suite import ADMIN_USERNAME, LocalSuite, local_suite

IMAGE_MODEL = "fal-sdxl-lightning"
KILLED = (*SERVICES, "worker", "gateway")
PG_REFUSAL_SECONDS = 10.0
BACK_WITHIN_SECONDS = 120.0
FAL_FAULTS = ("submit_500", "never_finishes", "malformed")
OPENROUTER_FAULTS = ("error_500", "stall", "garbage")
REFUSED = ("HTTP 0", "HTTP 502", "HTTP 503", "HTTP 504")
REFUSED_IN_STREAM = ("stream error 502", "stream error 503", "stream error 504")
PROVIDER_ERRORS = ("api_error", "timeout", "rate_limit", "unknown")


@dataclass(frozen=True)
class Plan:
    """The schedule's pace: seconds of load before the first event, between
    events, and each provider fault's length; the model's timeout."""

    warmup: float
    gap: float
    fault_seconds: float
    model_timeout: int

    @classmethod
    def for_run(cls, short: bool) -> Plan:
        if short:
            return cls(warmup=10, gap=2, fault_seconds=6, model_timeout=30)
        return cls(warmup=30, gap=10, fault_seconds=15, model_timeout=60)


@dataclass
class Chaos:
    """What the schedules did, and when (seconds since the load started)."""

    suite: LocalSuite
    plan: Plan
    started: float = field(default_factory=time.monotonic)
    events: list[tuple[float, str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def note(self, what: str, outcome: str) -> None:
        self.events.append((time.monotonic() - self.started, what, outcome))

    async def kill_each(self) -> None:
        await asyncio.sleep(self.plan.warmup)
        for name in KILLED:
            pid = await self.suite.kill(name)
            try:
                back = await self.suite.wait_back(name, pid, BACK_WITHIN_SECONDS)
            except TimeoutError:
                self.note(f"SIGKILL {name}", "NOT BACK")
                self.problems.append(f"{name} did not serve again after SIGKILL")
                continue
            self.note(
                f"SIGKILL {name} (pid {pid})", f"restarted, serving in {back:.1f} s"
            )
            await asyncio.sleep(self.plan.gap)

    async def misbehave(self) -> None:
        await asyncio.sleep(self.plan.warmup)
        cut = await self.suite.proxy.refuse(PG_REFUSAL_SECONDS)
        self.note(
            f"PostgreSQL refuses connections for {PG_REFUSAL_SECONDS:.0f} s",
            f"{cut} open connections cut",
        )
        await asyncio.sleep(self.plan.gap)
        async with httpx.AsyncClient(timeout=10.0) as http:
            for simulator, modes in (
                ("fal", FAL_FAULTS),
                ("openrouter", OPENROUTER_FAULTS),
            ):
                for mode in modes:
                    await self._fault(http, simulator, mode)
                    await asyncio.sleep(self.plan.gap)

    async def _fault(self, http: httpx.AsyncClient, simulator: str, mode: str) -> None:
        url = f"{self.suite.simulator_url(simulator)}/simulator/faults"
        (await http.post(url, json={"mode": mode})).raise_for_status()
        await asyncio.sleep(self.plan.fault_seconds)
        (await http.post(url, json={"mode": "ok"})).raise_for_status()
        self.note(
            f"{simulator} fault {mode} for {self.plan.fault_seconds:.0f} s", "cleared"
        )


async def shorten_model_timeout(suite: LocalSuite, seconds: int) -> None:
    """What an operator does in the admin panel."""
    async with httpx.AsyncClient(base_url=suite.url, timeout=30.0) as http:
        login = await http.post(
            "/api/admin/login",
            json={"username": ADMIN_USERNAME, "password": suite.admin_password},
        )
        login.raise_for_status()
        changed = await http.put(
            f"/api/admin/models/{IMAGE_MODEL}",
            json={"maxWaitSeconds": seconds},
            headers={"Authorization": f"Bearer {login.json()['token']}"},
        )
        changed.raise_for_status()


def classify(failure: Failure) -> str:
    kind = failure.kind
    if kind.startswith(REFUSED) or kind.startswith(REFUSED_IN_STREAM):
        return "refused while down"
    if kind == "generation failed" and any(e in failure.error for e in PROVIDER_ERRORS):
        return "provider fault"
    return "unexpected"


@dataclass
class Outcome:
    routes: list[RouteFigures]
    total: RouteFigures
    failures: list[Failure]
    chaos: Chaos
    books: Books
    missing: list[str]
    elapsed: float


async def run(crowd: Crowd, plan: Plan, logs: Path) -> Outcome:
    extra = {"WORKER_LEASE": "10s"}
    async with local_suite(logs, restart_crashed=True, extra=extra) as suite:
        await shorten_model_timeout(suite, plan.model_timeout)
        chaos = Chaos(suite, plan)
        locust = asyncio.create_task(run_locust(suite.url, crowd, logs))
        await asyncio.gather(chaos.kill_each(), chaos.misbehave())
        prefix = await locust
        elapsed = time.monotonic() - chaos.started
        books = await settle_and_check(suite.database_url, SETTLE_SECONDS)
        missing = [
            name
            for name in (*KILLED, "fal", "openrouter", "razorpay")
            if name not in suite.children()
        ]
        routes, total = read_stats(prefix)
        failures = read_failures(prefix)
    return Outcome(routes, total, failures, chaos, books, missing, elapsed)


@dataclass
class Judged:
    """The failures by class, overall and per route, and the table rows."""

    by_class: Counter[str] = field(default_factory=Counter)
    by_route: Counter[tuple[str, str]] = field(default_factory=Counter)
    rows: list[list[str]] = field(default_factory=list)


def judge(failures: list[Failure]) -> Judged:
    judged = Judged()
    for failure in failures:
        label = classify(failure)
        judged.by_class[label] += failure.occurrences
        judged.by_route[failure.route, label] += failure.occurrences
        error = f"`{failure.error[:140]}`"
        judged.rows.append(
            [f"`{failure.route}`", label, error, str(failure.occurrences)]
        )
    return judged


def report(
    argv: list[str], crowd: Crowd, logs: Path, outcome: Outcome
) -> dict[str, Any]:
    judged = judge(outcome.failures)
    problems = outcome.chaos.problems + [
        f"{name} not running at the end" for name in outcome.missing
    ]
    unexpected = judged.by_class["unexpected"]
    ok = (
        unexpected == 0
        and not problems
        and outcome.books.ok
        and outcome.total.requests > 0
    )
    summary = (
        f"{crowd.users} users, {len(outcome.chaos.events)} chaos events: "
        f"{outcome.total.requests} requests, "
        f"{judged.by_class['refused while down']} refused while down, "
        f"{judged.by_class['provider fault']} provider faults, "
        f"{unexpected} unexpected; "
        f"books {'right' if outcome.books.ok else 'WRONG'}"
    )
    return {
        "stage": "chaos",
        "ok": ok,
        "command": command_line(argv, "chaos"),
        "summary": summary,
        "figures": _figures(crowd, outcome, judged, problems),
        "markdown": _markdown(crowd, logs, outcome, judged, problems),
    }


def _markdown(
    crowd: Crowd, logs: Path, outcome: Outcome, judged: Judged, problems: list[str]
) -> str:
    events = [[f"{at:.0f}", what, result] for at, what, result in outcome.chaos.events]
    lines = [
        f"{crowd.users} locust users against `make run` (RUN_RESTART_CRASHED=1) "
        f"for {crowd.seconds} s while (logs: `{logs.relative_to(ROOT)}`):",
        "",
        markdown_table(events, ["at s", "event", "outcome"]),
        "",
        routes_table([*outcome.routes, outcome.total]),
        "",
    ]
    if judged.rows:
        lines += [
            "Failures by route (refused while down: no answer, 502, 503 or 504; "
            "provider fault: a generation failed with the provider's error or "
            "timed out; anything else is unexpected):",
            "",
            markdown_table(judged.rows, ["route", "class", "error", "count"]),
            "",
        ]
    lines += [f"- {problem}" for problem in problems]
    return "\n".join(lines + books_lines(outcome.books))


def _figures(
    crowd: Crowd, outcome: Outcome, judged: Judged, problems: list[str]
) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "users": crowd.users,
        "seconds": crowd.seconds,
        "chaos events": len(outcome.chaos.events),
        "requests": outcome.total.requests,
        "failures": outcome.total.failures,
        "refused while down": judged.by_class["refused while down"],
        "provider faults": judged.by_class["provider fault"],
        "unexpected failures": judged.by_class["unexpected"],
        "parts not back": len(problems),
        "p50 ms": outcome.total.p50,
        "p99 ms": outcome.total.p99,
    }
    for (route, label), count in sorted(judged.by_route.items()):
        figures[f"{route} {label}"] = count
    figures.update(books_figures(outcome.books))
    return figures


def main(argv: list[str]) -> int:
    args = parse_arguments(argv, "chaos")
    crowd = Crowd(
        args.users or (30 if args.short else 100),
        args.seconds or (80 if args.short else 300),
        args.spawn_rate,
    )
    plan = Plan.for_run(args.short)
    logs = logs_dir("chaos")
    logs.mkdir(parents=True, exist_ok=True)
    try:
        outcome = asyncio.run(stoppable(run(crowd, plan, logs)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 130
    except Exception as error:  # the suite did not start: say so in the report
        write(args.out, broken("chaos", argv, logs, error))
        return 1
    result = report(argv, crowd, logs, outcome)
    write(args.out, result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
