"""What the gateway's rate limits cost a request.

    PYTHONPATH=.:protos .venv/bin/python -m tests.bench.rate_limits [--requests N]

Starts auth, billing, the catalog, the admin service and one gateway in this
process (as the tests do: real gRPC and HTTP on loopback, a fresh database
on TEST_DATABASE_URL or the embedded server), then measures, one request at
a time:

- CheckRateLimit called straight on the admin service (the shared counter:
  one PostgreSQL statement);
- POST /api/generate through the gateway with an empty body (refused with
  400 after the limiter ran, so nothing else is measured) for a user no
  rule covers, and for one with a rule of their own;
- GET /api/models (a read: never limited) with and without rules in force.

Prints median and 99th percentile latencies in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import grpc
import httpx
from omnihub.admin.v1 import admin_pb2, admin_pb2_grpc

from libs.config import Settings
from libs.grpc.identity import AUTHORIZATION_KEY, INTERNAL_TOKEN_KEY
from libs.logs import configure_logging
from libs.tokens import Audience, InternalTokenSource, TokenSigner
from services.admin.main import AdminProcess
from services.auth.main import AuthProcess
from services.billing.main import BillingProcess
from services.catalog.main import CatalogProcess
from tests import database
from tests.suite import run_gateway, run_service, suite_settings

RULE_POLL_SECONDS = 0.5


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered):6.2f} ms   p99 {p99:6.2f} ms"


async def timed(call: Callable[[], Awaitable[object]], count: int) -> list[float]:
    for _ in range(min(50, count)):
        await call()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def measure(settings: Settings, count: int) -> None:
    signer = TokenSigner(settings.signing_secret())
    service = ((INTERNAL_TOKEN_KEY, InternalTokenSource(signer, "bench", 300).token()),)
    operator = signer.issue(
        Audience.ADMIN, str(uuid.uuid4()), 900, session_id="b", role="superadmin"
    )
    limited_user, free_user = str(uuid.uuid4()), str(uuid.uuid4())

    def bearer(user_id: str) -> dict[str, str]:
        token = signer.issue(Audience.USER, user_id, 900, session_id="b")
        return {"Authorization": f"Bearer {token}"}

    async with grpc.aio.insecure_channel(settings.admin_address) as channel:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        await admin.SetRateLimit(
            admin_pb2.SetRateLimitRequest(
                subject=f"user:{limited_user}", requests=1_000_000, window_seconds=60
            ),
            metadata=(*service, (AUTHORIZATION_KEY, f"Bearer {operator}")),
        )
        check = admin_pb2.CheckRateLimitRequest(subject=f"user:{limited_user}", cost=1)
        direct = await timed(
            lambda: admin.CheckRateLimit(check, metadata=service), count
        )
    await asyncio.sleep(RULE_POLL_SECONDS)

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.port}") as http:
        unruled = await timed(
            lambda: http.post("/api/generate", json={}, headers=bearer(free_user)),
            count,
        )
        ruled = await timed(
            lambda: http.post("/api/generate", json={}, headers=bearer(limited_user)),
            count,
        )
        reads = await timed(lambda: http.get("/api/models"), count)

    print(f"CheckRateLimit (admin, direct)          {percentiles(direct)}")
    print(f"POST /api/generate, no rule applies     {percentiles(unruled)}")
    print(f"POST /api/generate, user rule applies   {percentiles(ruled)}")
    print(f"GET /api/models, rules in force         {percentiles(reads)}")
    extra = statistics.median(ruled) - statistics.median(unruled)
    print(f"=> the limiter adds {extra:.2f} ms (median) to a limited request")


async def main(count: int) -> None:
    with database.server_url() as server:
        url = await database.create_database(server)
        settings = suite_settings(url, log_level="ERROR", admin_poll_interval=0.2)
        configure_logging(settings, "bench")
        running = []
        try:
            running.append(await run_service(AuthProcess(), settings))
            running.append(await run_service(BillingProcess(), settings))
            running.append(await run_service(CatalogProcess(), settings))
            running.append(await run_service(AdminProcess(), settings))
            gateway = await run_gateway(settings)
            try:
                await measure(settings, count)
            finally:
                await gateway.stop()
        finally:
            for service in reversed(running):
                await service.stop(grace=0)
            await database.drop_database(server, url)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="tests.bench.rate_limits")
    parser.add_argument("--requests", type=int, default=2000)
    asyncio.run(main(parser.parse_args().requests))
