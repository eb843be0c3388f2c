"""`make verify`: the evidence of issue 9 in one run and one report.

    PYTHONPATH=.:protos .venv/bin/python -m tests.verify [--short] [--stages a,b]

Runs each stage below as its own process (`python -m tests.verify.<stage>
--out <file>.json`), one after another so that they do not share the two
cores, and writes verify-results/verify-<time>.md with every stage's figures
and the command that produced them. Exits 1 when any stage missed its goal.
`--short` is the budget `.ci/run` uses: fewer fuzz cases, a minute of load.

Each stage creates and drops its own database on the server named by
TEST_DATABASE_URL (an embedded PostgreSQL when unset) and stops whatever it
started, so the stages also run alone: see tests/verify/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.database import ROOT

RESULTS_DIR = ROOT / "verify-results"


@dataclass(frozen=True)
class Stage:
    name: str
    title: str
    # Generous: a stage that overruns this is stopped and reported as failed.
    timeout_seconds: float
    short_timeout_seconds: float


STAGES = (
    Stage(
        "security", "Security: BOLA, tokens, limits, injection, SSRF, logs", 900, 600
    ),
    Stage("grpc_fuzz", "Fuzzing every gRPC method (hypothesis)", 2400, 600),
    Stage("rest_fuzz", "Fuzzing the REST API (schemathesis)", 2400, 600),
    Stage("load", "Load: realistic users (locust)", 1200, 600),
    Stage("chaos", "Chaos under load, then the ledger's invariants", 1800, 900),
)


@dataclass(frozen=True)
class Outcome:
    stage: Stage
    ok: bool
    seconds: float
    command: str
    summary: str
    figures: dict[str, Any]
    markdown: str


def main() -> None:
    options = _options()
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    work = RESULTS_DIR / f"verify-{stamp}"
    work.mkdir()
    chosen = [s for s in STAGES if s.name in options.stages]
    outcomes = []
    for stage in chosen:
        outcomes.append(_run(stage, options.short, work))
        _say(outcomes[-1])
    report = RESULTS_DIR / f"verify-{stamp}.md"
    report.write_text(_report(outcomes, options, stamp))
    print(f"\nReport: {report.relative_to(ROOT)}")
    sys.exit(0 if all(o.ok for o in outcomes) else 1)


def _options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.verify")
    parser.add_argument(
        "--short", action="store_true", help="the CI budget (fewer cases, 1 min load)"
    )
    parser.add_argument(
        "--stages",
        default=",".join(s.name for s in STAGES),
        help=f"comma-separated subset of {','.join(s.name for s in STAGES)}",
    )
    options = parser.parse_args()
    options.stages = [name.strip() for name in options.stages.split(",") if name]
    unknown = set(options.stages) - {s.name for s in STAGES}
    if unknown:
        parser.error(f"--stages: unknown {', '.join(sorted(unknown))}")
    return options


def _run(stage: Stage, short: bool, work: Path) -> Outcome:
    out = work / f"{stage.name}.json"
    log = work / f"{stage.name}.log"
    argv = [sys.executable, "-m", f"tests.verify.{stage.name}", "--out", str(out)]
    if short:
        argv.insert(3, "--short")
    shown = "PYTHONPATH=.:protos .venv/bin/python " + shlex.join(argv[1:])
    print(f"== {stage.name}: {shown}", flush=True)
    timeout = stage.short_timeout_seconds if short else stage.timeout_seconds
    started = time.monotonic()
    with log.open("w") as sink:
        try:
            code = subprocess.run(  # noqa: S603 - our own module
                argv,
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": ".:protos"},
                stdout=sink,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            ).returncode
        except subprocess.TimeoutExpired:
            code = None
    seconds = time.monotonic() - started
    return _outcome(stage, code, seconds, shown, out, log, timeout)


def _outcome(
    stage: Stage,
    code: int | None,
    seconds: float,
    shown: str,
    out: Path,
    log: Path,
    timeout: float,
) -> Outcome:
    if code is None:
        return _broken(stage, seconds, shown, log, f"stopped after {timeout:.0f} s")
    try:
        written = json.loads(out.read_text())
    except (OSError, ValueError):
        return _broken(stage, seconds, shown, log, f"exit {code}, no result file")
    return Outcome(
        stage,
        ok=code == 0 and bool(written.get("ok")),
        seconds=seconds,
        command=str(written.get("command") or shown),
        summary=str(written.get("summary", "")),
        figures=dict(written.get("figures") or {}),
        markdown=str(written.get("markdown", "")),
    )


def _broken(stage: Stage, seconds: float, shown: str, log: Path, why: str) -> Outcome:
    tail = log.read_text(errors="replace").splitlines()[-40:] if log.exists() else []
    markdown = f"The stage did not finish: {why}. Last lines of its output:\n\n```\n"
    return Outcome(
        stage,
        ok=False,
        seconds=seconds,
        command=shown,
        summary=why,
        figures={},
        markdown=markdown + "\n".join(tail) + "\n```\n",
    )


def _say(outcome: Outcome) -> None:
    verdict = "ok" if outcome.ok else "FAILED"
    print(f"   {verdict} in {outcome.seconds:.0f} s: {outcome.summary}", flush=True)


def _report(outcomes: list[Outcome], options: argparse.Namespace, stamp: str) -> str:
    lines = [
        f"# OmniHub verification report ({'short' if options.short else 'full'})",
        "",
        f"- started: {stamp}",
        f"- commit: {_commit()}",
        f"- machine: {os.cpu_count()} cores, {platform.platform()}, "
        f"Python {platform.python_version()}",
        f"- database server: {_server()}",
        "- command: `make verify"
        + (" VERIFY_ARGS=--short`" if options.short else "`")
        + " (each stage's own command is given below)",
        f"- verdict: {'PASSED' if all(o.ok for o in outcomes) else 'FAILED'}",
        "",
        "| stage | verdict | time | summary |",
        "| --- | --- | --- | --- |",
    ]
    for o in outcomes:
        verdict = "passed" if o.ok else "**failed**"
        lines.append(
            f"| {o.stage.name} | {verdict} | {o.seconds:.0f} s | {o.summary} |"
        )
    for o in outcomes:
        lines += ["", f"## {o.stage.title}", "", f"Command: `{o.command}`", ""]
        lines += [o.markdown.strip(), ""]
        if o.figures:
            lines += ["<details><summary>All figures</summary>", "", "```json"]
            lines += [json.dumps(o.figures, indent=2, sort_keys=True), "```"]
            lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def _commit() -> str:
    try:
        found = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return "unknown"
    dirty = subprocess.run(
        ["git", "status", "--porcelain"],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return found.stdout.strip() + (" (with uncommitted changes)" if dirty else "")


def _server() -> str:
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        return "embedded PostgreSQL (pgserver)"
    return url.rsplit("@", 1)[-1]


if __name__ == "__main__":
    main()
