"""The `ledger` target: billing's own figures, over gRPC from this process.

wrk speaks HTTP, and these are billing RPCs, so the harness drives them
itself with grpc.aio, calling as an internal service named "bench" with a
token signed by the JWT secret it gave the suite. The measurements are
tests/services/billing/ledger_bench.py's; here they run against the billing
process the harness started, with the CPU split (the harness counted as the
load generator) and, with --profile, py-spy on billing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from omnihub.billing.v1 import billing_pb2

from tests.bench.cpu import CpuSplit, Watched
from tests.bench.deployment import Deployment
from tests.bench.measure import SuiteMeter
from tests.bench.profile import Profile, sampled
from tests.services.billing import ledger_bench
from tests.services.billing.ledger_bench import LedgerClient, Timings

CLIENTS = ledger_bench.CLIENTS
SHORT_ENTRIES = ledger_bench.SHORT_LEDGER_ENTRIES
# The process under load here; the others only poll in the background.
PROFILED_PROCESS = "billing"


@dataclass(frozen=True)
class LedgerLoad:
    rows: int
    balance_reads: int
    pair_seconds: int
    warmup_seconds: int


@dataclass
class LedgerRun:
    """One measured stretch (the balance reads of both accounts, taken in
    turn, or one hold + capture run): its series, the CPU split over it and,
    with --profile, where billing spent it."""

    key: str
    timings: list[Timings]
    cpu: CpuSplit | None = None
    profiles: list[Profile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class LedgerResult:
    load: LedgerLoad
    written_seconds: float | None = None
    balance: LedgerRun | None = None
    pairs: list[LedgerRun] = field(default_factory=list)
    # Why the figures need reading with care, or why they are missing.
    notes: list[str] = field(default_factory=list)

    @property
    def runs(self) -> list[LedgerRun]:
        return [*([self.balance] if self.balance else []), *self.pairs]

    def balance_reads(self) -> tuple[Timings, Timings] | None:
        """(the long ledger's reads, the short one's)."""
        if self.balance is None or len(self.balance.timings) != 2:
            return None
        long, short = self.balance.timings
        return long, short


class LedgerBench:
    def __init__(
        self,
        deployment: Deployment,
        load: LedgerLoad,
        py_spy: str | None,
        log_dir: Path,
    ) -> None:
        self.deployment = deployment
        self.load = load
        self.py_spy = py_spy
        self.log_dir = log_dir

    async def run(self) -> LedgerResult:
        result = LedgerResult(self.load)
        deployment = self.deployment
        if (
            deployment.billing_address is None
            or deployment.jwt_secret is None
            or deployment.database_url is None
        ):
            result.notes.append(
                "not run: it needs the suite this harness starts (its billing "
                "process, JWT secret and database); drop --url"
            )
            return result
        try:
            await self._measure(
                result,
                deployment.billing_address,
                deployment.jwt_secret,
                deployment.database_url,
            )
        except grpc.aio.AioRpcError as error:
            result.notes.append(
                f"stopped by a failed call: {error.code().name}: {error.details()}"
            )
        return result

    async def _measure(
        self, result: LedgerResult, address: str, secret: str, database_url: str
    ) -> None:
        rows = self.load.rows
        say(f"  writing {rows:,} ledger rows in one statement ...")
        started = time.monotonic()
        long = await ledger_bench.write_long_ledger(database_url, rows)
        result.written_seconds = time.monotonic() - started
        say(f"  written in {result.written_seconds:.1f}s; reading balances ...")
        async with LedgerClient(address, secret) as client:
            short = await ledger_bench.short_ledger(client)
            accounts = {
                f"GetBalance, {rows:,} entries": long,
                f"GetBalance, {SHORT_ENTRIES} entries": short,
            }
            reads = ledger_bench.interleaved_reads(
                client.balance, accounts, self.load.balance_reads
            )
            result.balance = await self._metered("balance", reads)
        for key, label, accounts_of in (
            (
                "pairs-own",
                f"hold+capture, {CLIENTS} clients, own accounts",
                ledger_bench.pairs_on_own_accounts,
            ),
            (
                "pairs-shared",
                f"hold+capture, {CLIENTS} clients, one account",
                ledger_bench.pairs_on_one_account,
            ),
        ):
            say(f"  {label} ...")
            if self.load.warmup_seconds:
                await self._pairs(label, accounts_of(), self.load.warmup_seconds)
            pairs = self._pairs(label, accounts_of(), self.load.pair_seconds)
            result.pairs.append(await self._metered(key, pairs))

    async def _pairs(
        self, label: str, accounts: list[billing_pb2.AccountRef], seconds: int
    ) -> list[Timings]:
        assert self.deployment.billing_address
        assert self.deployment.jwt_secret
        timings = await ledger_bench.hold_capture_pairs(
            self.deployment.billing_address,
            self.deployment.jwt_secret,
            accounts,
            seconds,
            label,
        )
        return [timings]

    async def _metered(self, key: str, series: Awaitable[list[Timings]]) -> LedgerRun:
        profiling = self.py_spy is not None
        meter = SuiteMeter(
            self.deployment,
            "py-spy" if profiling else None,
            {"harness (client)": [Watched(os.getpid())]},
        )
        await meter.start()
        profiles: list[Profile] = []
        if self.py_spy is not None:
            billing = self.deployment.children[PROFILED_PROCESS]
            path = self.log_dir / f"profile-ledger-{key}-{PROFILED_PROCESS}.txt"
            async with sampled(
                self.py_spy, {PROFILED_PROCESS: billing.pid}, {PROFILED_PROCESS: path}
            ) as profiles:
                timings = await series
        else:
            timings = await series
        cpu, notes = await meter.stop()
        run = LedgerRun(key, timings, cpu, profiles, notes)
        run.notes += [
            f"{t.label}: {t.errors:,} calls failed (not in the latencies)"
            for t in timings
            if t.errors
        ]
        return run


def say(message: str) -> None:
    print(message, flush=True)
