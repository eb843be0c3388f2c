"""How the ledger's cost grows with its length: a measurement, not a test.

    python -m tests.services.billing.ledger_bench [--rows 1000000]

Runs a real billing service process against a throwaway database
(TEST_DATABASE_URL's server, else the embedded one), gives one account a
ledger of `--rows` entries in a single INSERT ... SELECT generate_series and
another account ten entries, then prints, for each, the latency of 2,000
GetBalance calls and of 500 first-page ListTransactions calls, and the
throughput of hold + capture pairs from 8 concurrent clients (each on its own
account, then all on one shared account). A balance read touches one account
row, so its cost should not depend on the ledger's length.
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
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from omnihub.billing.v1 import billing_pb2
from sqlalchemy import text

from libs.config import Settings
from libs.db import create_engine, session_factory
from services.billing import repository
from services.billing.models import SCHEMA
from tests import database
from tests.services.billing.factories import (
    CREDIT,
    BillingClient,
    new_key,
    user_account,
)
from tests.suite import suite_settings

ROOT = Path(__file__).resolve().parents[3]
BALANCE_READS = 2_000
PAGE_READS = 500
CLIENTS = 8
PAIRS_PER_CLIENT = 250
START_TIMEOUT_SECONDS = 30


def _summary(label: str, seconds: list[float]) -> str:
    millis = sorted(s * 1000 for s in seconds)
    p99 = statistics.quantiles(millis, n=100)[98]
    return (
        f"{label:<50} n={len(millis):>5}  median {statistics.median(millis):6.3f} ms"
        f"  p99 {p99:6.3f} ms"
    )


async def _timed(call: Callable[[], Awaitable[object]], times: int) -> list[float]:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return samples


def _process_environment(settings: Settings) -> dict[str, str]:
    assert settings.database_url is not None
    assert settings.jwt_secret is not None
    return {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'protos'}",
        "DATABASE_URL": settings.database_url,
        "JWT_SECRET": settings.jwt_secret.get_secret_value(),
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


async def long_ledger(settings: Settings, rows: int) -> billing_pb2.AccountRef:
    """An account with `rows` one-micro-credit grants, written in one
    statement, its balance equal to their sum."""
    account = user_account()
    key = f"bench:{uuid.uuid4()}"
    engine = create_engine(settings, SCHEMA)
    try:
        async with session_factory(engine).begin() as db:
            await db.execute(
                text(
                    "INSERT INTO operations (key, kind, fingerprint, result) "
                    "VALUES (:key, 'grant', :fingerprint, '{}')"
                ),
                {"key": key, "fingerprint": hashlib.sha256(key.encode()).digest()},
            )
            account_id = (
                await db.execute(
                    text(
                        "INSERT INTO accounts (id, owner_type, owner_id, balance) "
                        "VALUES (gen_random_uuid(), 'user', :owner, :rows) "
                        "RETURNING id"
                    ),
                    {"owner": account.owner_id, "rows": rows},
                )
            ).scalar_one()
            await db.execute(
                text(
                    "INSERT INTO ledger_entries "
                    "(account_id, kind, amount, balance_after, operation_key, reason) "
                    "SELECT :account_id, 'grant', 1, n, :key, 'bench' "
                    "FROM generate_series(1, :rows) AS n"
                ),
                {"account_id": account_id, "key": key, "rows": rows},
            )
        async with engine.begin() as connection:
            await connection.execute(text("ANALYZE"))
    finally:
        await engine.dispose()
    return account


async def short_ledger(billing: BillingClient) -> billing_pb2.AccountRef:
    account = user_account()
    for _ in range(10):
        await billing.grant(account, CREDIT)
    return account


async def reads(
    billing: BillingClient, label: str, account: billing_pb2.AccountRef
) -> None:
    balance_request = billing_pb2.GetBalanceRequest(account=account)
    page_request = billing_pb2.ListTransactionsRequest(account=account, page_size=20)

    async def balance() -> object:
        return await billing.stub.GetBalance(balance_request, metadata=billing.service)

    async def page() -> object:
        return await billing.stub.ListTransactions(
            page_request, metadata=billing.service
        )

    await _timed(balance, 200)
    print(_summary(f"GetBalance, {label}", await _timed(balance, BALANCE_READS)))
    print(_summary(f"ListTransactions page 1, {label}", await _timed(page, PAGE_READS)))


async def hold_capture_pairs(
    settings: Settings, accounts: list[billing_pb2.AccountRef]
) -> None:
    """Each of CLIENTS clients, on its own channel, runs hold + capture pairs
    on its account (accounts may repeat: then they contend for one row)."""
    clients = [BillingClient(settings) for _ in range(CLIENTS)]
    for client, account in zip(clients, accounts, strict=True):
        await client.grant(account, PAIRS_PER_CLIENT * CREDIT)
    latencies: list[float] = []

    async def run(client: BillingClient, account: billing_pb2.AccountRef) -> None:
        for _ in range(PAIRS_PER_CLIENT):
            started = time.perf_counter()
            hold = await client.hold(account, CREDIT)
            await client.stub.Capture(
                billing_pb2.CaptureRequest(
                    hold_id=hold.hold_id,
                    amount_micros=CREDIT // 2,
                    idempotency_key=new_key("capture"),
                ),
                metadata=client.service,
            )
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(run(c, a) for c, a in zip(clients, accounts, strict=True)))
    elapsed = time.perf_counter() - started
    for client in clients:
        await client.close()
    shared = len({a.owner_id for a in accounts}) == 1
    label = "one shared account" if shared else f"{CLIENTS} accounts"
    print(
        _summary(f"hold+capture pair, {CLIENTS} clients, {label}", latencies)
        + f"  {len(latencies) / elapsed:7.1f} pairs/s"
    )


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


async def bench(rows: int) -> None:
    with database.server_url() as server:
        url = await database.create_database(server)
        try:
            settings = suite_settings(url)
            async with billing_process(settings):
                billing = BillingClient(settings)
                started = time.perf_counter()
                long = await long_ledger(settings, rows)
                elapsed = time.perf_counter() - started
                print(f"wrote {rows:,} ledger rows in {elapsed:.1f} s")
                short = await short_ledger(billing)
                await reads(billing, f"{rows:,} entries", long)
                await reads(billing, "10 entries", short)
                await hold_capture_pairs(
                    settings, [user_account() for _ in range(CLIENTS)]
                )
                await hold_capture_pairs(settings, [user_account()] * CLIENTS)
                await billing.close()
            await reconcile_time(settings)
        finally:
            await database.drop_database(server, url)


def main() -> None:
    parser = argparse.ArgumentParser(prog="tests.services.billing.ledger_bench")
    parser.add_argument("--rows", type=int, default=1_000_000)
    asyncio.run(bench(parser.parse_args().rows))


if __name__ == "__main__":
    main()
