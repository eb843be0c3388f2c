"""The dashboard's and the analytics page's figures, made from what the
owning services summarised: auth's users, generation's generations,
billing's money and credits, the catalog's models.

Times are UTC. "Today" is the UTC day so far; an analytics range ends with
the current hour (24h) or day (7d, 30d, 90d) and has one point per hour or
day, the current one included, zeros where nothing happened.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp
from omnihub.admin.v1 import insights_pb2
from omnihub.auth.v1 import auth_pb2
from omnihub.billing.v1 import billing_pb2
from omnihub.catalog.v1 import catalog_pb2
from omnihub.generation.v1 import generation_pb2

from libs.errors import InvalidArgument
from libs.grpc.messages import timestamp

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
RANGES = {
    "24h": (24 * HOUR, "hour"),
    "7d": (7 * DAY, "day"),
    "30d": (30 * DAY, "day"),
    "90d": (90 * DAY, "day"),
}
DEFAULT_RANGE = "30d"
RECENT_ACTIVITY = 10
TOP_MODELS = 10
CHAT = "chat"


@dataclass(frozen=True)
class Window:
    """An analytics range: from `start` to `end` in steps of `bucket`."""

    name: str
    start: datetime
    end: datetime
    bucket: str

    @property
    def step(self) -> timedelta:
        return HOUR if self.bucket == "hour" else DAY

    def points(self) -> list[datetime]:
        count = (self.end - self.start) // self.step
        return [self.start + n * self.step for n in range(count)]


def start_of_day(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def start_of_month(moment: datetime) -> datetime:
    return start_of_day(moment).replace(day=1)


def window(name: str, now: datetime) -> Window:
    """The range an analytics request names, ending with the current hour or
    day."""
    name = name or DEFAULT_RANGE
    if name not in RANGES:
        raise InvalidArgument.for_field("range", "range is one of 24h, 7d, 30d or 90d.")
    span, bucket = RANGES[name]
    if bucket == "hour":
        end = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) + HOUR
    else:
        end = start_of_day(now) + DAY
    return Window(name, end - span, end, bucket)


def _moment(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def _money(amounts: dict[str, int]) -> list[insights_pb2.MoneyAmount]:
    return [
        insights_pb2.MoneyAmount(currency=currency, amount=amount)
        for currency, amount in sorted(amounts.items())
    ]


def _revenue_of(
    buckets: Iterable[billing_pb2.RevenueBucket],
) -> dict[str, int]:
    total: Counter[str] = Counter()
    for bucket in buckets:
        total[bucket.currency] += bucket.amount
    return dict(total)


# The dashboard


def stats(
    users: auth_pb2.SummarizeUsersResponse,
    generations: generation_pb2.SummarizeGenerationsResponse,
    revenue: billing_pb2.SummarizeRevenueResponse,
    models: list[catalog_pb2.Model],
    now: datetime,
) -> insights_pb2.GetStatsResponse:
    """The dashboard, from summaries of today (users, generations) and of
    this month (revenue), plus their all-time totals."""
    today = start_of_day(now)
    spend = {row.usage_type: row for row in revenue.lifetime_spend}
    return insights_pb2.GetStatsResponse(
        total_users=users.total_users,
        new_users_today=users.signups,
        daily_active_users=users.daily_active_users,
        weekly_active_users=users.weekly_active_users,
        monthly_active_users=users.monthly_active_users,
        users_by_status=dict(users.users_by_status),
        total_generations=sum(generations.totals_by_type.values()),
        generations_by_type=dict(generations.totals_by_type),
        generations_today=sum(bucket.count for bucket in generations.buckets),
        chat_replies=spend[CHAT].count if CHAT in spend else 0,
        revenue_total=[
            insights_pb2.MoneyAmount(currency=row.currency, amount=row.amount)
            for row in revenue.lifetime_revenue
        ],
        revenue_today=_money(
            _revenue_of(b for b in revenue.revenue_buckets if _moment(b.start) == today)
        ),
        revenue_month=_money(_revenue_of(revenue.revenue_buckets)),
        credits_used_micros=sum(row.spent_micros for row in revenue.lifetime_spend),
        credits_in_circulation_micros=revenue.credits_in_circulation_micros,
        active_models=sum(1 for model in models if model.enabled),
        total_models=len(models),
        active_subscriptions=revenue.active_subscriptions,
        monthly_recurring_paise=revenue.monthly_recurring_paise,
        recent_activity=[
            insights_pb2.RecentActivity(
                generation_id=g.id,
                user_id=g.user_id,
                type=g.type,
                model_id=g.model_id,
                model_name=g.model_name,
                status=g.status,
                credits_micros=g.credits_micros,
                started_at=g.started_at,
            )
            for g in generations.recent
        ],
        computed_at=timestamp(now),
    )


def recent_revenue(
    revenue: billing_pb2.SummarizeRevenueResponse, today: datetime
) -> dict[str, list[insights_pb2.MoneyAmount]]:
    """All-time revenue and that of the last 30 and 7 days, from a summary
    of the 30 days ending today."""
    week_start = today - 6 * DAY
    return {
        "revenue_total": [
            insights_pb2.MoneyAmount(currency=row.currency, amount=row.amount)
            for row in revenue.lifetime_revenue
        ],
        "revenue_last_30_days": _money(_revenue_of(revenue.revenue_buckets)),
        "revenue_last_7_days": _money(
            _revenue_of(
                b for b in revenue.revenue_buckets if _moment(b.start) >= week_start
            )
        ),
    }


# The analytics page


def analytics(
    span: Window,
    users: auth_pb2.SummarizeUsersResponse,
    generations: generation_pb2.SummarizeGenerationsResponse,
    revenue: billing_pb2.SummarizeRevenueResponse,
    now: datetime,
) -> insights_pb2.GetAnalyticsResponse:
    by_type: Counter[str] = Counter()
    by_status: Counter[str] = Counter()
    for bucket in generations.buckets:
        by_type[bucket.type] += bucket.count
        by_status[bucket.status] += bucket.count
    flows = list(revenue.credit_flow_buckets)
    return insights_pb2.GetAnalyticsResponse(
        range=span.name,
        bucket=span.bucket,
        start=timestamp(span.start),
        end=timestamp(span.end),
        series=_series(span, users, generations, revenue),
        total_users=users.total_users,
        signups=users.signups,
        daily_active_users=users.daily_active_users,
        weekly_active_users=users.weekly_active_users,
        monthly_active_users=users.monthly_active_users,
        generations=sum(by_type.values()),
        generations_by_type=dict(by_type),
        generations_by_status=dict(by_status),
        generating_users=generations.generating_users,
        usage_by_type=_usage_by_type(revenue.spend_buckets),
        top_models_by_count=generations.top_models_by_count,
        top_models_by_credits=generations.top_models_by_credits,
        revenue=_money(_revenue_of(revenue.revenue_buckets)),
        payments=sum(bucket.payments for bucket in revenue.revenue_buckets),
        credits_purchased_micros=sum(f.purchased_micros for f in flows),
        credits_granted_micros=sum(f.granted_micros for f in flows),
        credits_refunded_micros=sum(f.refunded_micros for f in flows),
        credits_adjusted_micros=sum(f.adjusted_micros for f in flows),
        credits_spent_micros=sum(s.spent_micros for s in revenue.spend_buckets),
        monthly_recurring_paise=revenue.monthly_recurring_paise,
        computed_at=timestamp(now),
    )


def _usage_by_type(
    spend: Iterable[billing_pb2.SpendBucket],
) -> list[insights_pb2.UsageByType]:
    counts: Counter[str] = Counter()
    credits: Counter[str] = Counter()
    for bucket in spend:
        counts[bucket.usage_type] += bucket.count
        credits[bucket.usage_type] += bucket.spent_micros
    return [
        insights_pb2.UsageByType(
            usage_type=kind, count=counts[kind], credits_micros=credits[kind]
        )
        for kind in sorted(counts, key=lambda kind: (-credits[kind], kind))
    ]


def _series(
    span: Window,
    users: auth_pb2.SummarizeUsersResponse,
    generations: generation_pb2.SummarizeGenerationsResponse,
    revenue: billing_pb2.SummarizeRevenueResponse,
) -> list[insights_pb2.AnalyticsPoint]:
    """One point per hour or day of the range, each service's buckets
    added to the point they start."""
    points = {
        moment: insights_pb2.AnalyticsPoint(start=timestamp(moment))
        for moment in span.points()
    }

    def at(stamp: Timestamp) -> insights_pb2.AnalyticsPoint:
        return points.get(_moment(stamp)) or insights_pb2.AnalyticsPoint()

    for signup in users.signup_buckets:
        at(signup.start).signups += signup.count
    for bucket in generations.buckets:
        point = at(bucket.start)
        point.generations += bucket.count
        point.generations_by_type[bucket.type] += bucket.count
        point.completed_generations += bucket.count * (bucket.status == "completed")
        point.failed_generations += bucket.count * (bucket.status == "failed")
    for active in generations.generating_users_buckets:
        at(active.start).generating_users = active.users
    for flow in revenue.credit_flow_buckets:
        at(flow.start).credits_purchased_micros += flow.purchased_micros
        at(flow.start).credits_granted_micros += flow.granted_micros
    for spent in revenue.spend_buckets:
        at(spent.start).credits_spent_micros += spent.spent_micros
    paid: defaultdict[datetime, Counter[str]] = defaultdict(Counter)
    for payment in revenue.revenue_buckets:
        paid[_moment(payment.start)][payment.currency] += payment.amount
    for moment, amounts in paid.items():
        at(timestamp(moment)).revenue.extend(_money(dict(amounts)))
    return list(points.values())
