"""/api/admin stats and analytics, models, community moderation, payments,
subscriptions and plans (operators only), served by the admin service's
AdminInsightsService.

Every call carries the operator's token, client address and the request id
(AdminDep's metadata), which the admin service writes into the audit trail
with each change; role checks (viewers read only, support moderates,
superadmins edit models and plans) are the service's. When a service the
figures come from is down the answer is a 503 naming it in `service`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

import grpc
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from google.protobuf.timestamp_pb2 import Timestamp
from omnihub.admin.v1 import insights_pb2, insights_pb2_grpc
from omnihub.billing.v1 import billing_pb2
from omnihub.catalog.v1 import catalog_pb2
from omnihub.generation.v1 import community_pb2, generation_pb2

from gateway.deps import AdminDep, Principal
from gateway.schemas.admin_insights import (
    ActiveUsersOut,
    ActivityOut,
    AdminModelOut,
    AdminPaymentOut,
    AdminPlanOut,
    AdminPostOut,
    AnalyticsOut,
    CreditFlowOut,
    ModelRankOut,
    ModelUpdatedOut,
    PaymentsOut,
    PlanUpdatedOut,
    PointOut,
    PostDeletedOut,
    RevenueStatsOut,
    StatsOut,
    SubscriptionOut,
    SubscriptionsOut,
    UpdateModelBody,
    UpdatePlanBody,
    UsageOut,
)
from gateway.schemas.billing import credits
from gateway.upstream import Upstream
from libs.errors import FieldViolation, InvalidArgument

router = APIRouter(prefix="/api/admin", tags=["admin"])

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")

NEXT_CURSOR_HEADER = "X-Next-Cursor"
# Payments are taken in rupees (billing's CreateOrder); the dashboard shows
# one revenue figure, in this currency. Others, if any, are listed apart.
PLATFORM_CURRENCY = "INR"
MINOR_UNITS = 100
MICROS_PER_USD = 1_000_000
Cursor = Annotated[str | None, Query(alias="cursor", max_length=200)]
UserFilter = Annotated[str | None, Query(alias="userId", max_length=64)]
# The services name fields as their messages do; the REST bodies do not.
_MODEL_FIELDS = {
    "name": "name",
    "enabled": "enabled",
    "base_cost_micros": "baseCost",
    "input_cost_micros_per_1k": "inputCost",
    "output_cost_micros_per_1k": "outputCost",
    "display_order": "displayOrder",
    "thumbnail": "thumbnail",
    "max_wait_seconds": "maxWaitSeconds",
    "tags": "tags",
}
_PLAN_FIELDS = {
    "price_monthly": "priceMonthly",
    "price_yearly": "priceYearly",
    "credits_per_month": "creditsPerMonth",
    "is_popular": "isPopular",
    "display_order": "displayOrder",
}
_LIST_FIELDS = {"page_size": "limit", "page_token": "cursor", "user_id": "userId"}


class InsightsClient:
    """The AdminInsightsService stub, made once per gateway."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.stub = insights_pb2_grpc.AdminInsightsServiceStub(
            upstream.runtime.upstreams.channel("admin")
        )

    async def call(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[RequestT, ResponseT],
        message: RequestT,
        caller: Principal,
        fields: Mapping[str, str] = _LIST_FIELDS,
    ) -> ResponseT:
        """The call as the operator, with field violations named as in REST."""
        try:
            return await self.upstream.call(
                method, message, caller.authorization, caller.metadata
            )
        except InvalidArgument as error:
            violations = tuple(
                FieldViolation(_rest_field(v.field, fields), v.message)
                for v in error.violations
            )
            raise InvalidArgument(error.message, violations=violations) from None


def _rest_field(field: str, fields: Mapping[str, str]) -> str:
    name = field.removeprefix("changes.")
    return fields.get(name, name)


async def get_insights(request: Request) -> InsightsClient:
    state = request.app.state
    client: InsightsClient | None = getattr(state, "insights", None)
    if client is None:
        client = state.insights = InsightsClient(state.upstream)
    return client


InsightsDep = Annotated[InsightsClient, Depends(get_insights)]


def _no_store(response: Response) -> None:
    response.headers["Cache-Control"] = "no-store"


def _moment(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def _main_units(amount: int) -> float:
    """Paise as rupees."""
    return amount / MINOR_UNITS


def _by_currency(amounts: Any) -> dict[str, float]:
    return {money.currency: _main_units(money.amount) for money in amounts}


def _in_platform_currency(amounts: Any) -> float:
    return _by_currency(amounts).get(PLATFORM_CURRENCY, 0.0)


def _usd(micros: int) -> float:
    return micros / MICROS_PER_USD


def _micros(usd: float) -> int:
    return round(usd * MICROS_PER_USD)


# Figures


@router.get("/stats")
async def stats(
    caller: AdminDep, insights: InsightsDep, response: Response
) -> StatsOut:
    """The dashboard's figures. Gathered from auth, generation, billing and
    the catalog, and kept for a few seconds (see `computedAt`)."""
    reply = await insights.call(
        insights.stub.GetStats, insights_pb2.GetStatsRequest(), caller
    )
    _no_store(response)
    by_type = reply.generations_by_type
    return StatsOut(
        total_users=reply.total_users,
        new_users_today=reply.new_users_today,
        active_users=reply.daily_active_users,
        daily_active_users=reply.daily_active_users,
        weekly_active_users=reply.weekly_active_users,
        monthly_active_users=reply.monthly_active_users,
        users_by_status=dict(reply.users_by_status),
        total_generations=reply.total_generations,
        generations_today=reply.generations_today,
        image_generations=by_type.get("image", 0),
        video_generations=by_type.get("video", 0),
        upscale_generations=by_type.get("upscale", 0),
        chat_generations=reply.chat_replies,
        revenue=_in_platform_currency(reply.revenue_total),
        revenue_today=_in_platform_currency(reply.revenue_today),
        revenue_month=_in_platform_currency(reply.revenue_month),
        currency=PLATFORM_CURRENCY,
        revenue_by_currency=_by_currency(reply.revenue_total),
        credits_used=credits(reply.credits_used_micros),
        credits_in_circulation=credits(reply.credits_in_circulation_micros),
        active_models=reply.active_models,
        total_models=reply.total_models,
        active_subscriptions=reply.active_subscriptions,
        monthly_recurring_revenue=_main_units(reply.monthly_recurring_paise),
        recent_activity=[
            ActivityOut(
                id=item.generation_id,
                type=item.type,
                model=item.model_name,
                model_id=item.model_id,
                status=item.status,
                credits=credits(item.credits_micros),
                time=_moment(item.started_at),
                user_id=item.user_id,
            )
            for item in reply.recent_activity
        ],
        computed_at=_moment(reply.computed_at),
    )


@router.get("/analytics")
async def analytics(
    caller: AdminDep,
    insights: InsightsDep,
    response: Response,
    span: Annotated[Literal["24h", "7d", "30d", "90d"], Query(alias="range")] = "30d",
) -> AnalyticsOut:
    """Series per hour (24h) or day (7d, 30d, 90d), the current one included,
    and the range's totals. Kept for a few seconds per range."""
    reply = await insights.call(
        insights.stub.GetAnalytics, insights_pb2.GetAnalyticsRequest(range=span), caller
    )
    _no_store(response)
    return AnalyticsOut(
        range=reply.range,
        bucket=reply.bucket,
        start=_moment(reply.start),
        end=_moment(reply.end),
        total_users=reply.total_users,
        signups=reply.signups,
        active_users=ActiveUsersOut(
            daily=reply.daily_active_users,
            weekly=reply.weekly_active_users,
            monthly=reply.monthly_active_users,
        ),
        generations=reply.generations,
        generations_by_type=dict(reply.generations_by_type),
        generations_by_status=dict(reply.generations_by_status),
        generating_users=reply.generating_users,
        usage_by_type=[
            UsageOut(
                type=usage.usage_type or "other",
                count=usage.count,
                credits=credits(usage.credits_micros),
            )
            for usage in reply.usage_by_type
        ],
        top_models=[_ranked(model) for model in reply.top_models_by_count],
        top_models_by_credits=[_ranked(model) for model in reply.top_models_by_credits],
        revenue=_in_platform_currency(reply.revenue),
        currency=PLATFORM_CURRENCY,
        revenue_by_currency=_by_currency(reply.revenue),
        payments=reply.payments,
        monthly_recurring_revenue=_main_units(reply.monthly_recurring_paise),
        credits=CreditFlowOut(
            purchased=credits(reply.credits_purchased_micros),
            granted=credits(reply.credits_granted_micros),
            refunded=credits(reply.credits_refunded_micros),
            adjusted=credits(reply.credits_adjusted_micros),
            spent=credits(reply.credits_spent_micros),
        ),
        series=[_point(point) for point in reply.series],
        computed_at=_moment(reply.computed_at),
    )


def _ranked(model: generation_pb2.ModelUsage) -> ModelRankOut:
    return ModelRankOut(
        model_id=model.model_id,
        model_name=model.model_name,
        type=model.type,
        count=model.count,
        credits=credits(model.credits_micros),
    )


def _point(point: insights_pb2.AnalyticsPoint) -> PointOut:
    by_type = point.generations_by_type
    return PointOut(
        time=_moment(point.start),
        signups=point.signups,
        generations=point.generations,
        image=by_type.get("image", 0),
        video=by_type.get("video", 0),
        upscale=by_type.get("upscale", 0),
        completed=point.completed_generations,
        failed=point.failed_generations,
        generating_users=point.generating_users,
        revenue=_in_platform_currency(point.revenue),
        credits_purchased=credits(point.credits_purchased_micros),
        credits_granted=credits(point.credits_granted_micros),
        credits_spent=credits(point.credits_spent_micros),
    )


# Models


def _admin_model(model: catalog_pb2.Model) -> AdminModelOut:
    return AdminModelOut(
        id=model.id,
        name=model.name,
        type=model.type,
        category=model.category,
        provider=model.provider,
        provider_name=model.provider_name,
        enabled=model.enabled,
        credits=_usd(model.base_cost_micros),
        base_cost=_usd(model.base_cost_micros),
        input_cost=_usd(model.input_cost_micros_per_1k),
        output_cost=_usd(model.output_cost_micros_per_1k),
        price=credits(model.default_price_micros),
        display_order=model.display_order,
        thumbnail=model.thumbnail or None,
        max_wait_seconds=model.max_wait_seconds,
        tags=list(model.tags),
        endpoint=model.endpoint,
        doc_url=model.doc_url or None,
    )


@router.get("/models")
async def list_models(
    caller: AdminDep,
    insights: InsightsDep,
    response: Response,
    kind: Annotated[
        Literal["image", "video", "chat"] | None, Query(alias="type")
    ] = None,
) -> list[AdminModelOut]:
    """Every model, disabled ones included, in display order."""
    reply = await insights.call(
        insights.stub.ListModels,
        insights_pb2.ListModelsRequest(type=kind or ""),
        caller,
    )
    _no_store(response)
    return [_admin_model(model) for model in reply.models]


@router.put("/models/{model_id:path}")
async def update_model(
    model_id: Annotated[str, Path(max_length=200)],
    body: UpdateModelBody,
    caller: AdminDep,
    insights: InsightsDep,
) -> ModelUpdatedOut:
    """Change a model's name, availability, costs, display order, thumbnail,
    wait limit or tags (superadmins). Model ids contain slashes."""
    reply = await insights.call(
        insights.stub.UpdateModel,
        insights_pb2.UpdateModelRequest(id=model_id, changes=_model_changes(body)),
        caller,
        _MODEL_FIELDS,
    )
    return ModelUpdatedOut(
        **_admin_model(reply.model).model_dump(), audit_id=reply.audit_id
    )


def _model_changes(body: UpdateModelBody) -> catalog_pb2.ModelChanges:
    given = _not_null(body.given(), nullable={"thumbnail"})
    changes = catalog_pb2.ModelChanges()
    for field in ("name", "display_order", "max_wait_seconds"):
        if field in given:
            setattr(changes, field, given[field])
    if "enabled" in given:
        changes.enabled = bool(given["enabled"])
    if "thumbnail" in given:
        changes.thumbnail = given["thumbnail"] or ""
    for rest, field in (
        ("base_cost", "base_cost_micros"),
        ("input_cost", "input_cost_micros_per_1k"),
        ("output_cost", "output_cost_micros_per_1k"),
    ):
        if rest in given:
            setattr(changes, field, _micros(given[rest]))
    if "tags" in given:
        changes.tags.extend(given["tags"])
        changes.replace_tags = True
    return changes


def _not_null(given: dict[str, Any], nullable: set[str]) -> dict[str, Any]:
    """The fields sent, refusing null where it means nothing."""
    nulls = [
        FieldViolation(_camel(key), f"{_camel(key)} cannot be null.")
        for key, value in given.items()
        if value is None and key not in nullable
    ]
    if nulls:
        raise InvalidArgument(nulls[0].message, violations=tuple(nulls))
    return given


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


# Community moderation


def _admin_post(post: community_pb2.Post) -> AdminPostOut:
    return AdminPostOut(
        id=post.id,
        generation_id=post.generation_id,
        user_id=post.user_id,
        nickname=post.nickname,
        title=post.title,
        category=post.category,
        image_url=post.image_url,
        thumbnail_url=post.thumbnail_url or None,
        prompt=post.prompt,
        model_name=post.model_name,
        media_type=post.media_type,
        like_count=post.like_count,
        view_count=post.view_count,
        is_nsfw=post.is_nsfw,
        published_at=_moment(post.published_at),
    )


@router.get("/community")
async def list_community_posts(
    caller: AdminDep,
    insights: InsightsDep,
    response: Response,
    cursor: Cursor = None,
    user_id: UserFilter = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    search: Annotated[str | None, Query(max_length=200)] = None,
    nsfw: Annotated[bool, Query(description="NSFW posts only")] = False,
) -> list[AdminPostOut]:
    """Every community post, NSFW ones included, newest first. The next
    page's cursor is in the X-Next-Cursor header."""
    reply = await insights.call(
        insights.stub.ListCommunityPosts,
        insights_pb2.ListCommunityPostsRequest(
            page_size=limit,
            page_token=cursor or "",
            user_id=user_id or "",
            search=search or "",
            nsfw_only=nsfw,
        ),
        caller,
    )
    _no_store(response)
    if reply.next_page_token:
        response.headers[NEXT_CURSOR_HEADER] = reply.next_page_token
    return [_admin_post(post) for post in reply.posts]


@router.delete("/community/{post_id}")
async def delete_community_post(
    post_id: Annotated[str, Path(max_length=64)],
    caller: AdminDep,
    insights: InsightsDep,
    reason: Annotated[str | None, Query(max_length=500)] = None,
) -> PostDeletedOut:
    """Take a post down (support or superadmin). The reason goes into the
    audit trail; without one it says that none was given."""
    reply = await insights.call(
        insights.stub.DeleteCommunityPost,
        insights_pb2.DeleteCommunityPostRequest(id=post_id, reason=reason or ""),
        caller,
    )
    return PostDeletedOut(success=True, removed=reply.removed, audit_id=reply.audit_id)


# Payments, subscriptions and plans


@router.get("/payments")
async def list_payments(
    caller: AdminDep,
    insights: InsightsDep,
    response: Response,
    cursor: Cursor = None,
    user_id: UserFilter = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    status: Literal["pending", "completed", "failed"] | None = None,
    kind: Annotated[
        Literal["subscription", "credits"] | None, Query(alias="type")
    ] = None,
) -> PaymentsOut:
    """Every user's payments, newest first, and the revenue of all time and
    of the last 30 and 7 days."""
    reply = await insights.call(
        insights.stub.ListPayments,
        insights_pb2.ListPaymentsRequest(
            page_size=limit,
            page_token=cursor or "",
            user_id=user_id or "",
            status=status or "",
            type=kind or "",
        ),
        caller,
    )
    _no_store(response)
    return PaymentsOut(
        payments=[_admin_payment(payment) for payment in reply.payments],
        next_cursor=reply.next_page_token or None,
        revenue_stats=RevenueStatsOut(
            currency=PLATFORM_CURRENCY,
            total=_in_platform_currency(reply.revenue_total),
            last_30_days=_in_platform_currency(reply.revenue_last_30_days),
            last_7_days=_in_platform_currency(reply.revenue_last_7_days),
        ),
    )


def _admin_payment(payment: billing_pb2.Payment) -> AdminPaymentOut:
    return AdminPaymentOut(
        id=payment.id,
        user_id=payment.user_id,
        order_id=payment.order_id,
        payment_id=payment.payment_id or None,
        type=payment.type,
        plan_id=payment.plan_id or None,
        billing_cycle=payment.billing_cycle or None,
        amount=payment.amount,
        currency=payment.currency,
        status=payment.status,
        credits=credits(payment.credits_micros),
        created_at=_moment(payment.created_at),
        completed_at=(
            _moment(payment.completed_at) if payment.HasField("completed_at") else None
        ),
    )


@router.get("/subscriptions")
async def list_subscriptions(
    caller: AdminDep,
    insights: InsightsDep,
    response: Response,
    cursor: Cursor = None,
    user_id: UserFilter = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    status: Literal["active", "cancelled"] | None = None,
    plan_id: Annotated[str | None, Query(alias="planId", max_length=64)] = None,
) -> SubscriptionsOut:
    """Subscriptions, most recently changed first, with counts per status."""
    reply = await insights.call(
        insights.stub.ListSubscriptions,
        insights_pb2.ListSubscriptionsRequest(
            page_size=limit,
            page_token=cursor or "",
            status=status or "",
            plan_id=plan_id or "",
            user_id=user_id or "",
        ),
        caller,
    )
    _no_store(response)
    counts = reply.counts_by_status
    return SubscriptionsOut(
        subscriptions=[_subscription(row) for row in reply.subscriptions],
        next_cursor=reply.next_page_token or None,
        total=sum(counts.values()),
        active=counts.get("active", 0),
        cancelled=counts.get("cancelled", 0),
    )


def _subscription(row: billing_pb2.Subscription) -> SubscriptionOut:
    return SubscriptionOut(
        user_id=row.user_id,
        plan_id=row.plan_id,
        plan_name=row.plan_name,
        billing_cycle=row.billing_cycle,
        status=row.status,
        current_period_start=_moment(row.current_period_start),
        current_period_end=_moment(row.current_period_end),
        created_at=_moment(row.created_at),
        updated_at=_moment(row.updated_at),
    )


def _admin_plan(plan: billing_pb2.Plan) -> AdminPlanOut:
    return AdminPlanOut(
        id=plan.id,
        name=plan.name,
        price_monthly=plan.price_monthly,
        price_yearly=plan.price_yearly,
        credits_per_month=plan.credits_per_month,
        features=list(plan.features),
        is_popular=int(plan.is_popular),
        display_order=plan.display_order,
        active=plan.active,
    )


@router.get("/plans")
async def list_plans(
    caller: AdminDep, insights: InsightsDep, response: Response
) -> list[AdminPlanOut]:
    """Every plan, those off sale included, in display order."""
    reply = await insights.call(
        insights.stub.ListPlans, insights_pb2.ListPlansRequest(), caller
    )
    _no_store(response)
    return [_admin_plan(plan) for plan in reply.plans]


@router.put("/plans/{plan_id}")
async def update_plan(
    plan_id: Annotated[str, Path(max_length=64)],
    body: UpdatePlanBody,
    caller: AdminDep,
    insights: InsightsDep,
) -> PlanUpdatedOut:
    """Change a plan's name, prices (whole rupees), credits per month,
    features, popular badge, display order or whether it is on sale
    (superadmins). Orders made before keep their price."""
    reply = await insights.call(
        insights.stub.UpdatePlan,
        insights_pb2.UpdatePlanRequest(id=plan_id, changes=_plan_changes(body)),
        caller,
        _PLAN_FIELDS,
    )
    return PlanUpdatedOut(
        **_admin_plan(reply.plan).model_dump(), audit_id=reply.audit_id
    )


def _plan_changes(body: UpdatePlanBody) -> billing_pb2.PlanChanges:
    given = _not_null(body.given(), nullable=set())
    changes = billing_pb2.PlanChanges()
    for field in (
        "name",
        "price_monthly",
        "price_yearly",
        "credits_per_month",
        "display_order",
        "active",
    ):
        if field in given:
            setattr(changes, field, given[field])
    if "is_popular" in given:
        changes.is_popular = bool(given["is_popular"])
    if "features" in given:
        changes.features.extend(given["features"])
        changes.replace_features = True
    return changes
