"""How the ledger's cost grows with its length: a measurement, not a test.

    python -m tests.services.billing.ledger_bench [--rows 1000000] [--seconds 10]

Runs a real billing service process against a throwaway database
(TEST_DATABASE_URL's server, else the embedded one), gives one account a
ledger of `--rows` entries in a single INSERT ... SELECT generate_series and
another account ten entries, then prints, for each, the latency of 2,000
GetBalance calls and of 500 first-page ListTransactions calls, and the
throughput of hold + capture pairs from 8 concurrent clients for `--seconds`
(each on its own account, then all on one shared account). A balance read
touches one account row, so its cost should not depend on the ledger's
length.

`make bench` runs the same measurements (its `ledger` target, see
tests/bench/README.md) against the billing process that harness started;
the functions here take a billing address, the JWT secret the process was
given and its database, so that both can call them.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from omnihub.billing.v1 import billing_pb2, billing_pb2_grpc
from sqlalchemy.engine import make_url

from libs.config import Settings
from libs.db import create_engine, session_factory
from libs.grpc.identity import INTERNAL_TOKEN_KEY
from libs.tokens import InternalTokenSource, TokenSigner
from services.billing import repository
from services.billing.models import SCHEMA
from tests import database
from tests.suite import suite_settings

ROOT = Path(__file__).resolve().parents[3]
CREDIT = 1_000_000
BALANCE_READS = 2_000
PAGE_READS = 500
# Untimed reads of each account first: connections, caches, the planner.
WARMUP_READS = 200
SHORT_LEDGER_ENTRIES = 10
CLIENTS = 8
PAIR_SECONDS = 10.0
# Granted to every account the pairs run on, far more than any run spends
# (a pair costs half a credit), so that no hold is ever refused.
PAIR_FUNDS_MICROS = 1_000_000 * CREDIT
# The caller the billing service sees: an internal service named "bench".
SERVICE_NAME = "bench"
TOKEN_LIFETIME_SECONDS = 300
START_TIMEOUT_SECONDS = 30

Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Timings:
    """One measured series: each call's (or pair's) latency, the time the
    series took (for reads taken in turn with another account's, the time
    spent in its own calls) and the calls that failed (not in the
    latencies)."""

    label: str
    seconds: list[float]
    elapsed: float
    errors: int = 0

    @property
    def count(self) -> int:
        return len(self.seconds)

    @property
    def per_second(self) -> float:
        return self.count / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1000 if self.seconds else 0.0

    @property
    def p99_ms(self) -> float:
        if len(self.seconds) < 2:
            return self.median_ms
        return statistics.quantiles(self.seconds, n=100)[98] * 1000

    def describe(self) -> str:
        return (
            f"{self.label:<50} n={self.count:>5}  median {self.median_ms:7.3f} ms"
            f"  p99 {self.p99_ms:7.3f} ms  {self.per_second:8.1f}/s"
            f"  errors {self.errors}"
        )


class LedgerClient:
    """The billing stub on a channel of its own, calling as the internal
    service "bench" with a token signed by the suite's JWT secret."""

    def __init__(self, address: str, secret: str) -> None:
        self.channel = grpc.aio.insecure_channel(address)
        self.stub = billing_pb2_grpc.BillingServiceStub(self.channel)
        self._token = InternalTokenSource(
            TokenSigner(secret), SERVICE_NAME, TOKEN_LIFETIME_SECONDS
        )

    async def __aenter__(self) -> LedgerClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.channel.close()

    @property
    def metadata(self) -> Metadata:
        return ((INTERNAL_TOKEN_KEY, self._token.token()),)

    async def grant(self, account: billing_pb2.AccountRef, amount: int) -> None:
        await self.stub.Grant(
            billing_pb2.GrantRequest(
                account=account,
                amount_micros=amount,
                idempotency_key=_new_key("grant"),
                reason="bench",
            ),
            metadata=self.metadata,
        )

    async def balance(self, account: billing_pb2.AccountRef) -> None:
        await self.stub.GetBalance(
            billing_pb2.GetBalanceRequest(account=account), metadata=self.metadata
        )

    async def first_page(self, account: billing_pb2.AccountRef) -> None:
        await self.stub.ListTransactions(
            billing_pb2.ListTransactionsRequest(account=account, page_size=20),
            metadata=self.metadata,
        )

    async def hold_and_capture(self, account: billing_pb2.AccountRef) -> None:
        """What a generation does: reserve a credit, then charge half of it."""
        hold = await self.stub.Hold(
            billing_pb2.HoldRequest(
                account=account, amount_micros=CREDIT, idempotency_key=_new_key("hold")
            ),
            metadata=self.metadata,
        )
        await self.stub.Capture(
            billing_pb2.CaptureRequest(
                hold_id=hold.hold_id,
                amount_micros=CREDIT // 2,
                idempotency_key=_new_key("capture"),
            ),
            metadata=self.metadata,
        )


def _new_key(label: str) -> str:
    return f"bench:{label}:{uuid.uuid4()}"


def user_account() -> billing_pb2.AccountRef:
    return billing_pb2.AccountRef(
        owner_type=billing_pb2.OWNER_TYPE_USER, owner_id=str(uuid.uuid4())
    )


def _asyncpg_dsn(database_url: str) -> str:
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


async def write_long_ledger(database_url: str, rows: int) -> billing_pb2.AccountRef:
    """An account with `rows` one-micro-credit grants, written in one
    statement straight into billing's tables (through the service it would
    take hours), its balance equal to their sum, then vacuumed and analysed
    the way autovacuum leaves an old ledger."""
    account = user_account()
    key = f"bench:{uuid.uuid4()}"
    connection = await asyncpg.connect(
        _asyncpg_dsn(database_url), server_settings={"search_path": SCHEMA}
    )
    try:
        async with connection.transaction():
            await connection.execute(
                "INSERT INTO operations (key, kind, fingerprint, result) "
                "VALUES ($1, 'grant', $2, '{}')",
                key,
                hashlib.sha256(key.encode()).digest(),
            )
            account_id = await connection.fetchval(
                "INSERT INTO accounts (id, owner_type, owner_id, balance) "
                "VALUES (gen_random_uuid(), 'user', $1, $2) RETURNING id",
                uuid.UUID(account.owner_id),
                rows,
            )
            await connection.execute(
                "INSERT INTO ledger_entries "
                "(account_id, kind, amount, balance_after, operation_key, reason) "
                "SELECT $1, 'grant', 1, n, $2, 'bench' "
                "FROM generate_series(1, $3::bigint) AS n",
                account_id,
                key,
                rows,
            )
        await connection.execute("VACUUM (ANALYZE) ledger_entries, accounts")
    finally:
        await connection.close()
    return account


async def short_ledger(client: LedgerClient) -> billing_pb2.AccountRef:
    account = user_account()
    for _ in range(SHORT_LEDGER_ENTRIES):
        await client.grant(account, CREDIT)
    return account


async def interleaved_reads(
    read: Callable[[billing_pb2.AccountRef], Awaitable[None]],
    accounts: dict[str, billing_pb2.AccountRef],
    reads: int,
    warmup: int = WARMUP_READS,
) -> list[Timings]:
    """`reads` calls of `read` per account, one at a time, the accounts taken
    in turn (in a changing order), so that whatever else the machine does
    falls on every account alike and their figures compare."""
    labels = list(accounts)
    for _ in range(warmup):
        for label in labels:
            await read(accounts[label])
    samples: dict[str, list[float]] = {label: [] for label in labels}
    for round_number in range(reads):
        shift = round_number % len(labels)
        for label in labels[shift:] + labels[:shift]:
            call_started = time.perf_counter()
            await read(accounts[label])
            samples[label].append(time.perf_counter() - call_started)
    # Each account's own time: its calls per second, one at a time.
    return [Timings(label, samples[label], sum(samples[label])) for label in labels]


async def hold_capture_pairs(
    address: str,
    secret: str,
    accounts: list[billing_pb2.AccountRef],
    seconds: float,
    label: str,
) -> Timings:
    """One client per account entry, each on its own channel, running hold +
    capture pairs back to back for `seconds` (accounts may repeat: those
    clients then contend for one account row). A failed call is counted and
    the client goes on with its next pair."""
    clients = [LedgerClient(address, secret) for _ in accounts]
    try:
        # Funding also opens every channel before the clock starts.
        for client, account in zip(clients, accounts, strict=True):
            await client.grant(account, PAIR_FUNDS_MICROS)
        latencies: list[float] = []
        errors = 0
        started = time.perf_counter()
        deadline = started + seconds

        async def run(client: LedgerClient, account: billing_pb2.AccountRef) -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                pair_started = time.perf_counter()
                try:
                    await client.hold_and_capture(account)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - pair_started)

        await asyncio.gather(
            *(run(c, a) for c, a in zip(clients, accounts, strict=True))
        )
        elapsed = time.perf_counter() - started
    finally:
        for client in clients:
            await client.channel.close()
    return Timings(label, latencies, elapsed, errors)


def pairs_on_own_accounts(clients: int = CLIENTS) -> list[billing_pb2.AccountRef]:
    return [user_account() for _ in range(clients)]


def pairs_on_one_account(clients: int = CLIENTS) -> list[billing_pb2.AccountRef]:
    return [user_account()] * clients


# --- Standalone: a billing process of its own -------------------------------


def _process_environment(settings: Settings) -> dict[str, str]:
    assert settings.database_url is not None
    return {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'protos'}",
        "DATABASE_URL": settings.database_url,
        "JWT_SECRET": settings.signing_secret(),
        "BILLING_ADDRESS": settings.billing_address,
        "AUTH_ADDRESS": settings.auth_address,
        "GRPC_LISTEN_HOST": "127.0.0.1",
        "DATABASE_POOL_SIZE": "10",
        "LOG_LEVEL": "ERROR",
    }


@asynccontextmanager
async def billing_process(settings: Settings) -> AsyncIterator[None]:
    """`services.billing.main migrate`, then `serve` until the block ends."""
    environment = _process_environment(settings)
    command = (sys.executable, "-m", "services.billing.main")
    migrate = await asyncio.create_subprocess_exec(
        *command, "migrate", env=environment, cwd=ROOT
    )
    if await migrate.wait() != 0:
        raise RuntimeError("billing migrate failed")
    server = await asyncio.create_subprocess_exec(
        *command, "serve", env=environment, cwd=ROOT
    )
    try:
        await _wait_until_serving(settings.billing_address)
        yield
    finally:
        server.terminate()
        await server.wait()


async def _wait_until_serving(address: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.1)


async def reconcile_time(settings: Settings) -> None:
    engine = create_engine(settings, SCHEMA)
    try:
        started = time.perf_counter()
        async with session_factory(engine)() as db:
            unbalanced = await repository.unbalanced_accounts(db)
        elapsed = time.perf_counter() - started
    finally:
        await engine.dispose()
    print(f"reconcile (every account): {elapsed:.2f} s, unbalanced={len(unbalanced)}")


async def measure(settings: Settings, rows: int, seconds: float) -> None:
    assert settings.database_url is not None
    address, secret = settings.billing_address, settings.signing_secret()
    async with LedgerClient(address, secret) as client:
        started = time.perf_counter()
        long = await write_long_ledger(settings.database_url, rows)
        print(f"wrote {rows:,} ledger rows in {time.perf_counter() - started:.1f} s")
        short = await short_ledger(client)
        for call, reads, name in (
            (client.balance, BALANCE_READS, "GetBalance"),
            (client.first_page, PAGE_READS, "ListTransactions page 1"),
        ):
            accounts = {f"{name}, {rows:,} entries": long, f"{name}, 10 entries": short}
            for timings in await interleaved_reads(call, accounts, reads):
                print(timings.describe())
    for accounts_of, label in (
        (pairs_on_own_accounts, f"hold+capture, {CLIENTS} clients, own accounts"),
        (pairs_on_one_account, f"hold+capture, {CLIENTS} clients, one account"),
    ):
        timings = await hold_capture_pairs(
            address, secret, accounts_of(), seconds, label
        )
        print(timings.describe())


async def bench(rows: int, seconds: float) -> None:
    with database.server_url() as server:
        url = await database.create_database(server)
        try:
            settings = suite_settings(url)
            async with billing_process(settings):
                await measure(settings, rows, seconds)
            await reconcile_time(settings)
        finally:
            await database.drop_database(server, url)


def main() -> None:
    parser = argparse.ArgumentParser(prog="tests.services.billing.ledger_bench")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=PAIR_SECONDS)
    args = parser.parse_args()
    asyncio.run(bench(args.rows, args.seconds))


if __name__ == "__main__":
    main()
