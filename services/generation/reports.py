"""Figures about generations for operators (SummarizeGenerations): what was
started in a period per hour or day, type and status, who generated, which
models were used most, all-time counts per type and the latest generations.

The period's figures count every generation started in it, deleted ones
included (they were made and charged); the all-time counts are of
generations not deleted, kept per owner in generation_counts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.errors import InvalidArgument
from libs.periods import Period
from services.generation import repository
from services.generation.models import Generation
from services.generation.repository import BucketCount, ModelCount

MAX_TOP_MODELS = 50
# Users in the period, and per bucket.
UserCounts = tuple[int, list[tuple[datetime, int]]]
MAX_RECENT = 50


@dataclass(frozen=True)
class GenerationSummary:
    buckets: list[BucketCount]
    user_buckets: list[tuple[datetime, int]]
    users: int
    top_by_count: list[ModelCount]
    top_by_credits: list[ModelCount]
    totals_by_type: dict[str, int]
    recent: list[Generation]


def _limit(field: str, value: int, maximum: int) -> int:
    if not 0 <= value <= maximum:
        raise InvalidArgument.for_field(field, f"{field} is 0 to {maximum}.")
    return value


async def summarize_generations(
    reads: async_sessionmaker[AsyncSession],
    period: Period,
    top_models: int,
    recent: int,
) -> GenerationSummary:
    """The summary. The period's three queries each read all its rows, so
    they run at once, each on a connection of its own (with the two small
    ones after them)."""
    top = _limit("top_models", top_models, MAX_TOP_MODELS)
    latest = _limit("recent", recent, MAX_RECENT)

    async def counts() -> tuple[list[BucketCount], dict[str, int]]:
        async with reads() as db:
            buckets = await repository.counts_by_bucket(db, period)
            return buckets, await repository.totals_by_type(db)

    async def people() -> tuple[UserCounts, list[Generation]]:
        async with reads() as db:
            users = await repository.generating_users(db, period)
            newest = await repository.latest_generations(db, latest) if latest else []
            return users, newest

    async def models() -> list[ModelCount]:
        if not top:
            return []
        async with reads() as db:
            return await repository.model_counts(db, period)

    (buckets, totals), ((users, user_buckets), newest), ranked = await asyncio.gather(
        counts(), people(), models()
    )
    return GenerationSummary(
        buckets=buckets,
        user_buckets=user_buckets,
        users=users,
        top_by_count=_ranked(ranked, lambda m: m.count)[:top],
        top_by_credits=_ranked(ranked, lambda m: m.credits)[:top],
        totals_by_type=totals,
        recent=newest,
    )


def _ranked(
    models: list[ModelCount], key: Callable[[ModelCount], int]
) -> list[ModelCount]:
    """Biggest first; ties by model id, so the order is the same every time."""
    return sorted(models, key=lambda model: (-key(model), model.model_id))
