"""`make bench` / `python -m tests.bench --help`."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

from libs.config import parse_duration
from tests.bench import report
from tests.bench.processes import ChildFailed
from tests.bench.profile import PySpyMissing
from tests.bench.run import TARGETS, Options, benchmark
from tests.bench.sessions import SessionsRefused
from tests.bench.wrk import Load, WrkFailed, WrkMissing
from tests.database import ROOT


def parse_arguments(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench",
        description="Load the gateway with wrk and compare it with bare "
        "Starlette apps, and time billing's ledger RPCs (see "
        "tests/bench/README.md).",
    )
    parser.add_argument(
        "--url",
        help="benchmark a suite already running at this gateway URL instead of "
        "starting one (it must allow many sign-ins for the refresh target)",
    )
    parser.add_argument("--threads", type=int, default=2, help="wrk -t (default 2)")
    parser.add_argument(
        "--connections", type=int, default=32, help="wrk -c (default 32)"
    )
    parser.add_argument(
        "--duration", default="15s", help="wrk -d per target (default 15s)"
    )
    parser.add_argument(
        "--refresh-duration",
        default="5s",
        help="wrk -d for the refresh target, which spends one pooled token "
        "per request (default 5s)",
    )
    parser.add_argument(
        "--warmup",
        default="2s",
        help="untimed load before each target; 0 to skip (default 2s)",
    )
    parser.add_argument(
        "--sessions",
        type=int,
        help="refresh tokens (one session each) to open for the refresh target, "
        "shared between its warm-up and run (default: sized from the measured "
        "rates so that the run never runs out)",
    )
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=f"comma-separated subset of {','.join(TARGETS)} (default: all)",
    )
    parser.add_argument(
        "--ledger-rows",
        type=int,
        default=1_000_000,
        help="ledger entries of the long account the ledger target reads the "
        "balance of (default 1000000)",
    )
    parser.add_argument(
        "--balance-reads",
        type=int,
        default=2_000,
        help="GetBalance calls per account, one at a time (default 2000)",
    )
    parser.add_argument(
        "--ledger-duration",
        default="10s",
        help="length of each hold + capture run of the ledger target (default 10s)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the suite's processes with py-spy during the suite "
        "targets, and billing during the ledger target (needs py-spy in .venv)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=ROOT / "bench-results",
        help="where to write the Markdown and JSON (default bench-results/)",
    )
    args = parser.parse_args(argv)
    targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    unknown = set(targets) - set(TARGETS)
    if unknown or not targets:
        parser.error(f"--targets: choose from {', '.join(TARGETS)}")
    if args.profile and args.url:
        parser.error("--profile samples processes this harness starts; drop --url")
    if args.sessions is not None and args.sessions < 2:
        parser.error("--sessions must be at least 2")
    if args.ledger_rows < 1 or args.balance_reads < 2:
        parser.error("--ledger-rows must be at least 1, --balance-reads at least 2")
    try:
        seconds = parse_duration(args.duration)
        refresh_seconds = parse_duration(args.refresh_duration)
        warmup_seconds = parse_duration(args.warmup)
        ledger_seconds = parse_duration(args.ledger_duration)
    except ValueError as exc:
        parser.error(str(exc))
    if seconds < 1 or refresh_seconds < 1 or ledger_seconds < 1:
        parser.error("durations must be at least 1s")
    return Options(
        url=args.url,
        load=Load(args.threads, args.connections, seconds),
        refresh_seconds=refresh_seconds,
        warmup_seconds=warmup_seconds,
        sessions=args.sessions,
        targets=tuple(t for t in TARGETS if t in targets),
        profile=args.profile,
        results_dir=args.results,
        ledger_rows=args.ledger_rows,
        ledger_seconds=ledger_seconds,
        balance_reads=args.balance_reads,
    )


async def _main(options: Options, stamp: str) -> report.Summary:
    # asyncio.run turns Ctrl-C into cancellation; do the same for SIGTERM so
    # that a killed run still stops its children and drops its database.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await benchmark(options, stamp)


def main(argv: list[str]) -> int:
    options = parse_arguments(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    try:
        summary = asyncio.run(_main(options, stamp))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\nInterrupted; every child process was stopped.", file=sys.stderr)
        return 130
    except (WrkMissing, WrkFailed, ChildFailed, PySpyMissing, SessionsRefused) as exc:
        print(f"\nbench failed: {exc}", file=sys.stderr)
        return 1
    print()
    print(report.as_text(summary))
    markdown, data = report.write(summary, options.results_dir, f"bench-{stamp}")
    print(f"\nWritten: {os.path.relpath(markdown)}, {data.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
