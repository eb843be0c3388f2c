"""The insights area's own rules, without services behind them: the ranges
an analytics request names, how the owners' buckets become a series with a
point per hour or day, and how the figure cache keeps and shares answers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from omnihub.auth.v1 import auth_pb2
from omnihub.billing.v1 import billing_pb2
from omnihub.generation.v1 import generation_pb2

from libs.errors import InvalidArgument
from services.admin.insights import figures
from services.admin.insights.cache import FigureCache

NOW = datetime(2026, 3, 15, 13, 47, 12, tzinfo=UTC)


def stamp(moment: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(moment)
    return value


class TestWindow:
    def test_a_day_range_ends_with_today_and_has_a_point_per_day(self) -> None:
        span = figures.window("7d", NOW)

        assert (span.start, span.end) == (
            datetime(2026, 3, 9, tzinfo=UTC),
            datetime(2026, 3, 16, tzinfo=UTC),
        )
        assert len(span.points()) == 7
        assert span.points()[-1] == datetime(2026, 3, 15, tzinfo=UTC)

    def test_the_24_hours_end_with_the_current_hour(self) -> None:
        span = figures.window("24h", NOW)

        assert span.bucket == "hour"
        assert span.end == datetime(2026, 3, 15, 14, tzinfo=UTC)
        assert span.points()[0] == datetime(2026, 3, 14, 14, tzinfo=UTC)
        assert len(span.points()) == 24

    def test_no_range_means_thirty_days(self) -> None:
        assert figures.window("", NOW).name == "30d"

    def test_another_range_is_refused(self) -> None:
        with pytest.raises(InvalidArgument) as refused:
            figures.window("1y", NOW)

        assert [v.field for v in refused.value.violations] == ["range"]


class TestAnalytics:
    def test_every_point_is_there_and_the_owners_buckets_land_on_theirs(
        self,
    ) -> None:
        span = figures.window("7d", NOW)
        today = datetime(2026, 3, 15, tzinfo=UTC)
        users = auth_pb2.SummarizeUsersResponse(
            signups=3,
            signup_buckets=[auth_pb2.SignupBucket(start=stamp(today), count=3)],
        )
        generations = generation_pb2.SummarizeGenerationsResponse(
            buckets=[
                generation_pb2.GenerationBucket(
                    start=stamp(today), type="image", status="completed", count=4
                ),
                generation_pb2.GenerationBucket(
                    start=stamp(today), type="video", status="failed", count=1
                ),
            ]
        )
        revenue = billing_pb2.SummarizeRevenueResponse(
            revenue_buckets=[
                billing_pb2.RevenueBucket(
                    start=stamp(today - timedelta(days=2)),
                    currency="INR",
                    amount=10_000,
                    payments=1,
                )
            ],
            spend_buckets=[
                billing_pb2.SpendBucket(
                    start=stamp(today), usage_type="chat", count=2, spent_micros=5
                ),
                billing_pb2.SpendBucket(
                    start=stamp(today), usage_type="image", count=4, spent_micros=9
                ),
            ],
        )

        reply = figures.analytics(span, users, generations, revenue, NOW)

        assert len(reply.series) == 7
        last = reply.series[-1]
        assert (last.signups, last.generations, last.completed_generations) == (
            3,
            5,
            4,
        )
        assert (last.failed_generations, dict(last.generations_by_type)) == (
            1,
            {"image": 4, "video": 1},
        )
        assert [m.amount for m in reply.series[-3].revenue] == [10_000]
        assert all(not point.revenue for point in reply.series[-2:])
        assert [(u.usage_type, u.count) for u in reply.usage_by_type] == [
            ("image", 4),
            ("chat", 2),
        ]
        assert (reply.generations, reply.payments, reply.credits_spent_micros) == (
            5,
            1,
            14,
        )


class TestFigureCache:
    async def test_callers_at_the_same_time_share_one_computation(self) -> None:
        cache: FigureCache[int] = FigureCache(seconds=60)
        calls = 0

        async def compute() -> int:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.05)
            return calls

        answers = await asyncio.gather(*(cache.get("k", compute) for _ in range(5)))

        assert (answers, calls) == ([1] * 5, 1)

    async def test_an_answer_is_asked_for_again_after_the_window(self) -> None:
        cache: FigureCache[int] = FigureCache(seconds=0.05)
        answers = iter(range(10))

        async def compute() -> int:
            return next(answers)

        first = await cache.get("k", compute)
        kept = await cache.get("k", compute)
        await asyncio.sleep(0.06)
        later = await cache.get("k", compute)

        assert (first, kept, later) == (0, 0, 1)

    async def test_a_failure_is_not_kept(self) -> None:
        cache: FigureCache[int] = FigureCache(seconds=60)
        attempts = 0

        async def compute() -> int:
            nonlocal attempts
            attempts += 1
            if attempts == 1:
                raise RuntimeError("owner down")
            return 7

        with pytest.raises(RuntimeError):
            await cache.get("k", compute)

        assert await cache.get("k", compute) == 7
