"""What must hold of generations and the books once the load is over,
as SQL over the generation and billing schemas (one database here).

- no generation still pending or processing past its own timeout
  (`max_wait_seconds` from its start, plus the worker's sweep);
- no hold left open (credits still set aside) once the load is over;
- every account's balance equal to the sum of its ledger, its `held` to
  the sum of its open holds (billing's `reconcile`, here as SQL);
- every completed generation captured exactly once (its hold captured for
  its price, one capture entry, no release), every failed or cancelled one
  released exactly once (one release entry, no capture);
- no hold settled twice.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from libs.db import async_url

POLL_SECONDS = 2.0
# How long past its own timeout a generation may stay unfinished: the
# worker's sweep runs every few seconds, and a killed worker's lease must
# run out first (WORKER_LEASE, 30 s by default).
SWEEP_GRACE_SECONDS = 60

UNFINISHED = """
SELECT count(*) FROM generation.generations
WHERE status IN ('pending', 'processing')
   OR (settlement IS NOT NULL AND settled_at IS NULL)
"""
BY_STATUS = "SELECT status, count(*) FROM generation.generations GROUP BY status"
STUCK = """
SELECT count(*) FROM generation.generations
WHERE status IN ('pending', 'processing')
  AND started_at + make_interval(secs => max_wait_seconds + :grace) < now()
"""
UNSETTLED = """
SELECT count(*) FROM generation.generations
WHERE settlement IS NOT NULL AND settled_at IS NULL
"""
OPEN_HOLDS = "SELECT count(*) FROM billing.holds WHERE status = 'held'"
OPEN_GENERATION_HOLDS = """
SELECT count(*) FROM billing.holds
WHERE status = 'held' AND reason = 'generation'
"""
UNBALANCED = """
SELECT count(*) FROM billing.accounts AS a
LEFT JOIN (
    SELECT account_id, sum(amount) AS total
    FROM billing.ledger_entries GROUP BY account_id
) AS l ON l.account_id = a.id
LEFT JOIN (
    SELECT account_id, sum(amount) AS total
    FROM billing.holds WHERE status = 'held' GROUP BY account_id
) AS h ON h.account_id = a.id
WHERE a.balance <> coalesce(l.total, 0) OR a.held <> coalesce(h.total, 0)
"""
SETTLEMENTS = """
WITH settles AS (
    SELECT hold_id,
           count(*) FILTER (WHERE kind = 'capture') AS captures,
           count(*) FILTER (WHERE kind = 'release') AS releases
    FROM billing.ledger_entries
    WHERE kind IN ('capture', 'release')
    GROUP BY hold_id
)
SELECT
    count(*) FILTER (
        WHERE g.status = 'completed' AND (
            (g.hold_id IS NULL AND g.credits_micros > 0)
            OR (g.hold_id IS NOT NULL AND (
                coalesce(s.captures, 0) <> 1 OR coalesce(s.releases, 0) <> 0
                OR h.status IS DISTINCT FROM 'captured'
                OR h.captured IS DISTINCT FROM g.credits_micros
            ))
        )
    ) AS completed_not_charged_once,
    count(*) FILTER (
        WHERE g.status IN ('failed', 'cancelled') AND g.hold_id IS NOT NULL AND (
            coalesce(s.releases, 0) <> 1 OR coalesce(s.captures, 0) <> 0
            OR h.status IS DISTINCT FROM 'released'
        )
    ) AS failed_not_released_once,
    count(*) FILTER (
        WHERE g.status IN ('failed', 'cancelled') AND g.hold_id IS NULL
    ) AS failed_before_any_hold
FROM generation.generations AS g
LEFT JOIN billing.holds AS h ON h.id::text = g.hold_id
LEFT JOIN settles AS s ON s.hold_id = h.id
"""
SETTLED_TWICE = """
SELECT count(*) FROM (
    SELECT hold_id FROM billing.ledger_entries
    WHERE kind IN ('capture', 'release')
    GROUP BY hold_id HAVING count(*) > 1
) AS twice
"""
# A hold placed for a generation that never learnt of it (its create
# request stopped half-way) must have been released, not kept or charged.
ORPHAN_HOLDS = """
SELECT count(*) FROM billing.holds AS h
WHERE h.reason = 'generation' AND h.status <> 'released' AND NOT EXISTS (
    SELECT 1 FROM generation.generations AS g WHERE g.hold_id = h.id::text
)
"""


@dataclass
class Books:
    """The figures the checks read."""

    by_status: dict[str, int] = field(default_factory=dict)
    figures: dict[str, int] = field(default_factory=dict)
    waited_seconds: float = 0.0

    def checks(self) -> list[tuple[str, bool]]:
        f = self.figures
        return [
            (
                f"no generation unfinished past its timeout ({f['stuck']})",
                f["stuck"] == 0,
            ),
            (
                f"every settlement reached billing ({f['unsettled']} not)",
                not f["unsettled"],
            ),
            (f"no hold left open ({f['open holds']})", f["open holds"] == 0),
            (
                f"every balance equals its ledger ({f['unbalanced accounts']} not)",
                f["unbalanced accounts"] == 0,
            ),
            (
                "every completed generation charged once "
                f"({f['completed not charged once']} not)",
                f["completed not charged once"] == 0,
            ),
            (
                "every failed generation released once "
                f"({f['failed not released once']} not)",
                f["failed not released once"] == 0,
            ),
            (
                f"no hold settled twice ({f['holds settled twice']})",
                not f["holds settled twice"],
            ),
            (
                f"no hold without its generation ({f['orphan holds']})",
                f["orphan holds"] == 0,
            ),
        ]

    @property
    def ok(self) -> bool:
        return all(ok for _, ok in self.checks())


async def settle_and_check(database_url: str, wait_seconds: float) -> Books:
    """Wait up to `wait_seconds` for every generation to end and settle,
    then read the books."""
    engine = create_async_engine(async_url(database_url), pool_size=1)
    books = Books()
    started = time.monotonic()
    try:
        async with engine.connect() as db:
            deadline = started + wait_seconds
            while await db.scalar(text(UNFINISHED)) and time.monotonic() < deadline:
                await db.rollback()
                await asyncio.sleep(POLL_SECONDS)
            await db.rollback()
            books.waited_seconds = time.monotonic() - started
            await _read(db, books)
    finally:
        await engine.dispose()
    return books


async def _read(db: AsyncConnection, books: Books) -> None:
    rows = (await db.execute(text(BY_STATUS))).all()
    books.by_status = {str(status): int(n) for status, n in rows}
    single = {
        "unfinished": UNFINISHED,
        "unsettled": UNSETTLED,
        "open holds": OPEN_HOLDS,
        "open generation holds": OPEN_GENERATION_HOLDS,
        "unbalanced accounts": UNBALANCED,
        "holds settled twice": SETTLED_TWICE,
        "orphan holds": ORPHAN_HOLDS,
    }
    for name, query in single.items():
        books.figures[name] = int(await db.scalar(text(query)) or 0)
    stuck = await db.scalar(text(STUCK), {"grace": SWEEP_GRACE_SECONDS})
    books.figures["stuck"] = int(stuck or 0)
    settled = (await db.execute(text(SETTLEMENTS))).one()
    books.figures["completed not charged once"] = int(settled[0])
    books.figures["failed not released once"] = int(settled[1])
    books.figures["failed before any hold"] = int(settled[2])
