"""Figures about accounts for operators (SummarizeUsers): how many there
are, how many signed up per hour or day, and how many were active lately.

Activity is what auth already records: a session's `last_used_at` is set
when it is opened and each time it is refreshed, which a signed-in client
does at least once per access-token lifetime (15 minutes by default). Only
the latest use of each session is kept, so activity is counted for windows
that end now (the last 24 hours, 7 and 30 days), not for days in the past.
Ended sessions are kept for 30 days, long enough for the widest window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from libs.periods import Period
from services.auth import repository

ACTIVE_WINDOWS = (timedelta(days=1), timedelta(days=7), timedelta(days=30))
# Accounts an operator deleted are kept anonymised, but are no users.
GONE = "deleted"


@dataclass(frozen=True)
class UserSummary:
    total: int
    by_status: dict[str, int]
    signups: int
    signup_buckets: list[tuple[datetime, int]]
    daily_active: int
    weekly_active: int
    monthly_active: int


async def summarize_users(
    db: AsyncSession, period: Period, now: datetime
) -> UserSummary:
    by_status = await repository.users_by_status(db)
    buckets = await repository.signups_by_bucket(db, period)
    daily, weekly, monthly = await repository.active_users_since(
        db, [now - window for window in ACTIVE_WINDOWS]
    )
    return UserSummary(
        total=sum(count for status, count in by_status.items() if status != GONE),
        by_status=by_status,
        signups=sum(count for _, count in buckets),
        signup_buckets=buckets,
        daily_active=daily,
        weekly_active=weekly,
        monthly_active=monthly,
    )
