"""Ledger totals as Prometheus gauges, read with one aggregate query every
TOTALS_INTERVAL_SECONDS (never per request).

    omnihub_credits_balance_micros    spendable credits in every account
    omnihub_credits_held_micros       credits in open holds
    omnihub_credits_captured_micros   charged by captured holds, ever
    omnihub_credits_granted_micros    brought in by grants and purchases, ever

The last two are sums over the whole history (a sequential read of the
holds and the ledger): cheap at the interval, and exact, which counting as
movements happen would not be across replicas and restarts. Every billing
replica reports the same figures: read them with max(), not sum().
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from prometheus_client import Gauge
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.logs import get_logger
from services.billing.models import Account, Hold, LedgerEntry

log = get_logger(__name__)

TOTALS_INTERVAL_SECONDS = 30.0
GRANTING_KINDS = ("grant", "purchase")

BALANCE = Gauge(
    "omnihub_credits_balance_micros",
    "Spendable micro-credits in all accounts (holds already taken out).",
)
HELD = Gauge(
    "omnihub_credits_held_micros",
    "Micro-credits in open holds, in all accounts.",
)
CAPTURED = Gauge(
    "omnihub_credits_captured_micros",
    "Micro-credits charged by captured holds, since the ledger began.",
)
GRANTED = Gauge(
    "omnihub_credits_granted_micros",
    "Micro-credits brought in by grants and purchases, since the ledger began.",
)


@dataclass(frozen=True)
class LedgerTotals:
    balance: int
    held: int
    captured: int
    granted: int


async def read_totals(db: AsyncSession) -> LedgerTotals:
    """All four totals in one statement (one snapshot, one round trip)."""
    balance = select(func.coalesce(func.sum(Account.balance), 0)).scalar_subquery()
    held = select(func.coalesce(func.sum(Account.held), 0)).scalar_subquery()
    captured = (
        select(func.coalesce(func.sum(Hold.captured), 0))
        .where(Hold.status == "captured")
        .scalar_subquery()
    )
    granted = (
        select(func.coalesce(func.sum(LedgerEntry.amount), 0))
        .where(LedgerEntry.kind.in_(GRANTING_KINDS))
        .scalar_subquery()
    )
    row = (await db.execute(select(balance, held, captured, granted))).one()
    return LedgerTotals(*(int(value) for value in row))


def publish_totals(totals: LedgerTotals) -> None:
    BALANCE.set(totals.balance)
    HELD.set(totals.held)
    CAPTURED.set(totals.captured)
    GRANTED.set(totals.granted)


async def publish_totals_forever(
    sessions: async_sessionmaker[AsyncSession],
    interval: float = TOTALS_INTERVAL_SECONDS,
) -> None:
    while True:
        try:
            async with sessions() as db:
                totals = await read_totals(db)
            publish_totals(totals)
        except Exception as error:  # the database is away: next time
            log.warning("ledger.totals_failed", error=type(error).__name__)
        await asyncio.sleep(interval)
