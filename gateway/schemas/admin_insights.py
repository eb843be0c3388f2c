"""Bodies of the operators' figures, models, community, payments and plans
routes (/api/admin/...), in the camelCase the admin web page reads.

Units: credits are JSON numbers of credits; money is a JSON number of the
currency's main unit (rupees), since the dashboard prints `revenue` with two
decimals; model costs are US dollars, as in the public model list.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, StrictBool, StrictInt, StrictStr

from gateway.schemas.base import RequestBody, ResponseBody
from gateway.schemas.payments import PaymentOut, PlanOut

# The catalog's own limits (services/catalog/service.py), checked here first
# so that an operator's mistake is refused before anything is queued.
MAX_MODEL_NAME = 200
MAX_URL = 2048
MAX_TAGS = 30
MAX_TAG = 40
MAX_WAIT_SECONDS = 24 * 3600
# A model costing more than this a job (or per 1,000 tokens) is a typo.
MAX_COST_USD = 10_000
# Billing's plan limits (services/billing/plans.py).
MAX_PLAN_NAME = 100
MAX_PLAN_PRICE = 10_000_000
MAX_PLAN_CREDITS = 100_000_000
MAX_FEATURES = 20
MAX_FEATURE = 200
MAX_DISPLAY_ORDER = 10_000

Usd = Annotated[float, Field(ge=0, le=MAX_COST_USD, allow_inf_nan=False)]


def _flag(value: object) -> object:
    """true/false, or the 1/0 the admin page sends for them."""
    if isinstance(value, bool):
        return value
    if type(value) is int and value in (0, 1):
        return bool(value)
    raise ValueError("must be true, false, 1 or 0.")


Flag = Annotated[bool, BeforeValidator(_flag)]
Tag = Annotated[StrictStr, Field(min_length=1, max_length=MAX_TAG)]
Feature = Annotated[StrictStr, Field(min_length=1, max_length=MAX_FEATURE)]


# The dashboard and analytics


class ActivityOut(ResponseBody):
    id: str
    type: str = Field(examples=["image", "video", "upscale"])
    model: str = Field(description="The model's name")
    model_id: str
    status: str
    credits: float
    time: datetime = Field(description="When the generation was started")
    user_id: str


class StatsOut(ResponseBody):
    """The dashboard. "Today" and "month" are UTC; money is rupees."""

    total_users: int
    new_users_today: int
    active_users: int = Field(description="Users active in the last 24 hours")
    daily_active_users: int
    weekly_active_users: int
    monthly_active_users: int
    users_by_status: dict[str, int]
    total_generations: int = Field(description="All time, deleted ones left out")
    generations_today: int
    image_generations: int
    video_generations: int
    upscale_generations: int
    chat_generations: int = Field(description="Chat replies charged, all time")
    revenue: float = Field(description="Completed payments, all time, rupees")
    revenue_today: float
    revenue_month: float
    currency: str
    revenue_by_currency: dict[str, float]
    credits_used: float = Field(description="Credits charged for work, all time")
    credits_in_circulation: float
    active_models: int
    total_models: int
    active_subscriptions: int
    monthly_recurring_revenue: float = Field(description="Rupees")
    recent_activity: list[ActivityOut]
    computed_at: datetime = Field(
        description="When the figures were gathered; they are kept briefly"
    )


class ActiveUsersOut(ResponseBody):
    daily: int
    weekly: int
    monthly: int


class UsageOut(ResponseBody):
    type: str = Field(examples=["image", "video", "upscale", "chat", "enhance"])
    count: int
    credits: float


class ModelRankOut(ResponseBody):
    model_id: str
    model_name: str
    type: str
    count: int
    credits: float = Field(description="Credits of its completed generations")


class CreditFlowOut(ResponseBody):
    purchased: float
    granted: float
    refunded: float
    adjusted: float
    spent: float


class PointOut(ResponseBody):
    time: datetime = Field(description="The first moment of the hour or day")
    signups: int
    generations: int
    image: int
    video: int
    upscale: int
    completed: int
    failed: int
    generating_users: int
    revenue: float = Field(description="Rupees")
    credits_purchased: float
    credits_granted: float
    credits_spent: float


class AnalyticsOut(ResponseBody):
    range: str
    bucket: str = Field(examples=["hour", "day"])
    start: datetime
    end: datetime
    total_users: int
    signups: int
    active_users: ActiveUsersOut
    generations: int
    generations_by_type: dict[str, int]
    generations_by_status: dict[str, int]
    generating_users: int
    usage_by_type: list[UsageOut]
    top_models: list[ModelRankOut]
    top_models_by_credits: list[ModelRankOut]
    revenue: float = Field(description="Rupees")
    currency: str
    revenue_by_currency: dict[str, float]
    payments: int
    monthly_recurring_revenue: float
    credits: CreditFlowOut
    series: list[PointOut]
    computed_at: datetime


# Models


class AdminModelOut(ResponseBody):
    id: str
    name: str
    type: str = Field(description='"image", "video" or "chat"')
    category: str
    provider: str
    provider_name: str
    enabled: bool
    credits: float = Field(
        description="Base cost in US dollars per job, as in the public list"
    )
    base_cost: float = Field(description="US dollars per job")
    input_cost: float = Field(description="US dollars per 1,000 input tokens")
    output_cost: float = Field(description="US dollars per 1,000 output tokens")
    price: float = Field(description="Credits for one job with default options")
    display_order: int
    thumbnail: str | None
    max_wait_seconds: int
    tags: list[str]
    endpoint: str
    doc_url: str | None


class UpdateModelBody(RequestBody):
    """The fields an operator may change; any other key is refused."""

    name: StrictStr | None = Field(
        default=None, min_length=1, max_length=MAX_MODEL_NAME
    )
    enabled: Flag | None = Field(
        default=None, description="true/false, or the web client's 1/0"
    )
    base_cost: Usd | None = Field(default=None, description="US dollars per job")
    input_cost: Usd | None = Field(default=None, description="per 1,000 tokens")
    output_cost: Usd | None = Field(default=None, description="per 1,000 tokens")
    display_order: StrictInt | None = Field(default=None, ge=0, le=1_000_000)
    thumbnail: StrictStr | None = Field(
        default=None, max_length=MAX_URL, description='An http(s) URL; "" clears it'
    )
    max_wait_seconds: StrictInt | None = Field(default=None, ge=1, le=MAX_WAIT_SECONDS)
    tags: list[Tag] | None = Field(default=None, max_length=MAX_TAGS)

    def given(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


# Community


class AdminPostOut(ResponseBody):
    id: str
    generation_id: str
    user_id: str
    nickname: str
    title: str
    category: str
    image_url: str
    thumbnail_url: str | None
    prompt: str
    model_name: str
    media_type: str
    like_count: int
    view_count: int
    is_nsfw: bool
    published_at: datetime


class PostDeletedOut(ResponseBody):
    success: bool
    removed: bool = Field(description="False when the post was already gone")
    audit_id: int


# Payments, subscriptions and plans


class AdminPaymentOut(PaymentOut):
    user_id: str


class RevenueStatsOut(ResponseBody):
    currency: str
    total: float = Field(description="Completed payments, all time, rupees")
    last_30_days: float
    last_7_days: float


class PaymentsOut(ResponseBody):
    payments: list[AdminPaymentOut]
    next_cursor: str | None
    revenue_stats: RevenueStatsOut


class SubscriptionOut(ResponseBody):
    user_id: str
    plan_id: str
    plan_name: str
    billing_cycle: str
    status: str
    current_period_start: datetime
    current_period_end: datetime
    created_at: datetime
    updated_at: datetime


class SubscriptionsOut(ResponseBody):
    subscriptions: list[SubscriptionOut]
    next_cursor: str | None
    total: int
    active: int
    cancelled: int


class AdminPlanOut(PlanOut):
    active: bool = Field(description="On sale; an inactive plan is not listed")


class UpdatePlanBody(RequestBody):
    name: StrictStr | None = Field(default=None, min_length=1, max_length=MAX_PLAN_NAME)
    price_monthly: StrictInt | None = Field(default=None, ge=1, le=MAX_PLAN_PRICE)
    price_yearly: StrictInt | None = Field(default=None, ge=1, le=MAX_PLAN_PRICE)
    credits_per_month: StrictInt | None = Field(default=None, ge=1, le=MAX_PLAN_CREDITS)
    features: list[Feature] | None = Field(default=None, max_length=MAX_FEATURES)
    is_popular: Flag | None = None
    display_order: StrictInt | None = Field(default=None, ge=0, le=MAX_DISPLAY_ORDER)
    active: StrictBool | None = None

    def given(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


class PlanUpdatedOut(AdminPlanOut):
    audit_id: int


class ModelUpdatedOut(AdminModelOut):
    audit_id: int
