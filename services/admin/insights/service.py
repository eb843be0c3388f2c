"""The rules of the insights area: which operator may do what, how figures
are gathered, and how changes reach the services that own the data.

Figures are asked of every owner at once and kept briefly (cache.py). A
change (a model, a plan, a community post) is written as a pending audit
entry and an admin task in one transaction of the admin schema, then
carried out at once through the owning service; the entry is settled with
what the service answered. When the owner cannot be reached the task stays
queued and is retried in the background (services/admin/tasks.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from google.protobuf import json_format
from omnihub.admin.v1 import insights_pb2
from omnihub.billing.v1 import billing_pb2
from omnihub.catalog.v1 import catalog_pb2
from omnihub.generation.v1 import community_pb2
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.errors import InvalidArgument, NotFound, Unavailable
from libs.logs import get_logger
from services.admin import audit
from services.admin.audit import Actor
from services.admin.insights import figures
from services.admin.insights.cache import FigureCache
from services.admin.insights.upstream import Owners, unreachable
from services.admin.roles import SUPERADMIN, SUPPORT_OR_ABOVE, require
from services.admin.tasks import AdminTasks, TaskFailed

log = get_logger(__name__)

ResultT = TypeVar("ResultT")

UPDATE_MODEL = "insights.update_model"
UPDATE_PLAN = "insights.update_plan"
MODERATE_POST = "insights.moderate_post"
MAX_REASON_LENGTH = 500
NO_REASON = "No reason given."
STATS_KEY = "stats"


class InsightsService:
    def __init__(
        self,
        owners: Owners,
        sessions: async_sessionmaker[AsyncSession],
        tasks: AdminTasks,
        cache_seconds: float,
    ) -> None:
        self._owners = owners
        self._sessions = sessions
        self._tasks = tasks
        self._stats: FigureCache[insights_pb2.GetStatsResponse] = FigureCache(
            cache_seconds
        )
        self._analytics: FigureCache[insights_pb2.GetAnalyticsResponse] = FigureCache(
            cache_seconds
        )
        tasks.register(UPDATE_MODEL, self._update_model)
        tasks.register(UPDATE_PLAN, self._update_plan)
        tasks.register(MODERATE_POST, self._moderate_post)

    # Figures (every operator)

    async def stats(self) -> insights_pb2.GetStatsResponse:
        return await self._stats.get(STATS_KEY, self._compute_stats)

    async def _compute_stats(self) -> insights_pb2.GetStatsResponse:
        now = datetime.now(UTC)
        today = figures.start_of_day(now)
        tomorrow = today + figures.DAY
        users, generations, revenue, models = await _together(
            self._owners.users(today, tomorrow, "day"),
            self._owners.generations(
                today, tomorrow, "day", recent=figures.RECENT_ACTIVITY
            ),
            self._owners.revenue(figures.start_of_month(now), tomorrow, "day"),
            self._owners.models(),
        )
        log.info("insights.stats_computed", elapsed_ms=_since(now))
        return figures.stats(users, generations, revenue, models, now)

    async def analytics(self, range_name: str) -> insights_pb2.GetAnalyticsResponse:
        span = figures.window(range_name, datetime.now(UTC))

        async def compute() -> insights_pb2.GetAnalyticsResponse:
            now = datetime.now(UTC)
            users, generations, revenue = await _together(
                self._owners.users(span.start, span.end, span.bucket),
                self._owners.generations(
                    span.start, span.end, span.bucket, top_models=figures.TOP_MODELS
                ),
                self._owners.revenue(span.start, span.end, span.bucket),
            )
            log.info(
                "insights.analytics_computed", range=span.name, elapsed_ms=_since(now)
            )
            return figures.analytics(span, users, generations, revenue, now)

        return await self._analytics.get(span.name, compute)

    # Models

    async def models(self, kind: str) -> list[catalog_pb2.Model]:
        return await self._owners.models(kind)

    async def update_model(
        self, actor: Actor, model_id: str, changes: catalog_pb2.ModelChanges
    ) -> tuple[catalog_pb2.Model, int]:
        """Edit a model through the catalog (superadmin); the catalog checks
        each value. Returns the model as it now is and the audit entry."""
        require(SUPERADMIN)
        _require_changes(changes)
        before = await self._owners.model(model_id)
        _, audit_id = await self._carry_out(
            actor,
            "model_updated",
            ("model", model_id),
            _model_fields(before),
            UPDATE_MODEL,
            {
                "model_id": model_id,
                "changes": json_format.MessageToDict(
                    changes, preserving_proto_field_name=True
                ),
                "actor": _actor_label(actor),
            },
        )
        return await self._owners.model(model_id), audit_id

    async def _update_model(self, task_id: str, payload: dict[str, Any]) -> Any:
        changes = json_format.ParseDict(payload["changes"], catalog_pb2.ModelChanges())
        model = await self._owners.update_model(
            payload["model_id"], changes, payload["actor"]
        )
        return _model_fields(model)

    # Community moderation

    async def posts(
        self, request: insights_pb2.ListCommunityPostsRequest
    ) -> community_pb2.ListPostsForModerationResponse:
        return await self._owners.posts(
            community_pb2.ListPostsForModerationRequest(
                page_size=request.page_size,
                page_token=request.page_token,
                user_id=request.user_id,
                search=request.search,
                nsfw_only=request.nsfw_only,
            )
        )

    async def delete_post(
        self, actor: Actor, post_id: str, reason: str
    ) -> tuple[bool, int]:
        """Take a post down (support or superadmin), with a reason."""
        require(*SUPPORT_OR_ABOVE)
        reason = _reason(reason)
        found = await self._owners.posts(
            community_pb2.ListPostsForModerationRequest(post_id=post_id, page_size=1)
        )
        if not found.posts:
            raise NotFound("Post not found.")
        result, audit_id = await self._carry_out(
            actor,
            "community_post_deleted",
            ("community_post", post_id),
            _post_fields(found.posts[0]),
            MODERATE_POST,
            {"post_id": post_id, "reason": reason, "actor": _actor_label(actor)},
        )
        return bool(result["removed"]), audit_id

    async def _moderate_post(self, task_id: str, payload: dict[str, Any]) -> Any:
        removed = await self._owners.moderate_post(
            payload["post_id"], payload["reason"], payload["actor"]
        )
        return {"removed": removed, "reason": payload["reason"]}

    # Payments, subscriptions and plans

    async def payments(
        self, request: insights_pb2.ListPaymentsRequest
    ) -> insights_pb2.ListPaymentsResponse:
        """A page of payments, and the revenue of all time and of the last
        30 and 7 days (today included)."""
        today = figures.start_of_day(datetime.now(UTC))
        page, revenue = await _together(
            self._owners.payments(
                billing_pb2.ListAllPaymentsRequest(
                    page_size=request.page_size,
                    page_token=request.page_token,
                    user_id=request.user_id,
                    status=request.status,
                    type=request.type,
                )
            ),
            self._owners.revenue(today - 29 * figures.DAY, today + figures.DAY, "day"),
        )
        return insights_pb2.ListPaymentsResponse(
            payments=page.payments,
            next_page_token=page.next_page_token,
            **figures.recent_revenue(revenue, today),
        )

    async def subscriptions(
        self, request: insights_pb2.ListSubscriptionsRequest
    ) -> billing_pb2.ListSubscriptionsResponse:
        return await self._owners.subscriptions(
            billing_pb2.ListSubscriptionsRequest(
                page_size=request.page_size,
                page_token=request.page_token,
                status=request.status,
                plan_id=request.plan_id,
                user_id=request.user_id,
            )
        )

    async def plans(self) -> list[billing_pb2.Plan]:
        return await self._owners.plans()

    async def update_plan(
        self, actor: Actor, plan_id: str, changes: billing_pb2.PlanChanges
    ) -> tuple[billing_pb2.Plan, int]:
        """Edit a plan through billing (superadmin); billing checks each
        value. Returns the plan as it now is and the audit entry."""
        require(SUPERADMIN)
        _require_changes(changes)
        before = {plan.id: plan for plan in await self._owners.plans()}.get(plan_id)
        if before is None:
            raise NotFound(f'There is no plan "{plan_id}".')
        result, audit_id = await self._carry_out(
            actor,
            "plan_updated",
            ("plan", plan_id),
            _plan_fields(before),
            UPDATE_PLAN,
            {
                "plan_id": plan_id,
                "changes": json_format.MessageToDict(
                    changes, preserving_proto_field_name=True
                ),
                "actor": _actor_label(actor),
            },
        )
        return _plan_message(result), audit_id

    async def _update_plan(self, task_id: str, payload: dict[str, Any]) -> Any:
        changes = json_format.ParseDict(payload["changes"], billing_pb2.PlanChanges())
        plan = await self._owners.update_plan(
            payload["plan_id"], changes, payload["actor"]
        )
        return _plan_fields(plan)

    # Changes

    async def _carry_out(
        self,
        actor: Actor,
        action: str,
        target: tuple[str, str],
        before: dict[str, Any],
        kind: str,
        payload: dict[str, Any],
    ) -> tuple[Any, int]:
        """Record the change with its task, then have the owner make it.
        Returns what the owner answered and the audit entry's id."""
        async with self._sessions.begin() as db:
            audit_id = await audit.record(
                db, actor, action, *target, before=before, pending=True
            )
            task_id = await self._tasks.enqueue(db, kind, payload, audit_id)
        try:
            result = await self._tasks.run(task_id)
        except TaskFailed as failed:
            raise failed.error from None
        except Unavailable as error:
            raise Unavailable(
                f"{error.message} The change is queued and will be made "
                "once it answers.",
                context=error.context,
            ) from None
        log.info("insights.change_made", action=action, target_id=target[1])
        return result, audit_id


async def _together(*calls: Awaitable[Any]) -> list[Any]:
    """Await every call at once. When some services did not answer, one
    Unavailable names them all; any other failure is raised as it is."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    missing = [
        service
        for result in results
        if isinstance(result, Unavailable)
        for service in result.context.get("service", "").split(",")
        if service
    ]
    if missing:
        raise unreachable(missing)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return list(results)


def _since(started: datetime) -> float:
    return round((datetime.now(UTC) - started) / timedelta(milliseconds=1), 1)


def _require_changes(
    changes: catalog_pb2.ModelChanges | billing_pb2.PlanChanges,
) -> None:
    if not changes.ListFields():
        raise InvalidArgument.for_field("changes", "Name at least one field to change.")


def _reason(reason: str) -> str:
    """The reason as the trail keeps it. The web client's delete button sends
    none; the trail then says so rather than refusing the operator."""
    cleaned = reason.strip()
    if len(cleaned) > MAX_REASON_LENGTH:
        raise InvalidArgument.for_field(
            "reason", f"A reason has at most {MAX_REASON_LENGTH} characters."
        )
    return cleaned or NO_REASON


def _actor_label(actor: Actor) -> str:
    """Who asked, as the owning service's log names them."""
    return f"admin:{actor.name or actor.id}"


# What the audit trail keeps of each object


def _model_fields(model: catalog_pb2.Model) -> dict[str, Any]:
    return {
        "name": model.name,
        "enabled": model.enabled,
        "base_cost_micros": model.base_cost_micros,
        "input_cost_micros_per_1k": model.input_cost_micros_per_1k,
        "output_cost_micros_per_1k": model.output_cost_micros_per_1k,
        "display_order": model.display_order,
        "thumbnail": model.thumbnail,
        "max_wait_seconds": model.max_wait_seconds,
        "tags": list(model.tags),
    }


def _plan_fields(plan: billing_pb2.Plan) -> dict[str, Any]:
    return {
        "id": plan.id,
        "name": plan.name,
        "price_monthly": plan.price_monthly,
        "price_yearly": plan.price_yearly,
        "credits_per_month": plan.credits_per_month,
        "features": list(plan.features),
        "is_popular": plan.is_popular,
        "display_order": plan.display_order,
        "active": plan.active,
    }


def _plan_message(fields: dict[str, Any]) -> billing_pb2.Plan:
    return billing_pb2.Plan(**fields)


def _post_fields(post: community_pb2.Post) -> dict[str, Any]:
    return {
        "id": post.id,
        "user_id": post.user_id,
        "generation_id": post.generation_id,
        "title": post.title,
        "category": post.category,
        "image_url": post.image_url,
        "is_nsfw": post.is_nsfw,
        "like_count": post.like_count,
    }
