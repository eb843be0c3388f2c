"""gRPC servicer of AdminInsightsService: translates messages, calls the
insights service, and raises domain errors unchanged (the server
interceptor maps them to statuses).

Every method is ADMIN; the roles a change needs are checked in service.py.
The operator's client address and the request id come as metadata
(`x-client-address`, `x-request-id`, set by the gateway's admin routes) and
go into the audit trail.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
from omnihub.admin.v1 import insights_pb2, insights_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.db import session_factory
from libs.grpc.identity import REQUEST_ID_KEY, Access
from libs.grpc.messages import refuse_unknown_fields
from libs.grpc.server import ServiceDefinition
from libs.runtime import Runtime
from services.admin.audit import Actor
from services.admin.insights.service import InsightsService
from services.admin.insights.upstream import Owners
from services.admin.tasks import AdminTasks

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]

CLIENT_ADDRESS_KEY = "x-client-address"
_SERVICE = insights_pb2.DESCRIPTOR.services_by_name["AdminInsightsService"]
ACCESS = {method.name: Access.ADMIN for method in _SERVICE.methods}


def _actor(context: Context) -> Actor:
    """The operator, and where they called from as the gateway saw it."""
    metadata = {
        key: value
        for key, value in context.invocation_metadata() or ()
        if isinstance(value, str)
    }
    return Actor.current(
        client_address=metadata.get(CLIENT_ADDRESS_KEY, ""),
        request_id=metadata.get(REQUEST_ID_KEY, ""),
    )


class InsightsServicer(insights_pb2_grpc.AdminInsightsServiceServicer):
    def __init__(self, service: InsightsService) -> None:
        self._service = service

    async def GetStats(
        self, request: insights_pb2.GetStatsRequest, context: Context
    ) -> insights_pb2.GetStatsResponse:
        return await self._service.stats()

    async def GetAnalytics(
        self, request: insights_pb2.GetAnalyticsRequest, context: Context
    ) -> insights_pb2.GetAnalyticsResponse:
        return await self._service.analytics(request.range)

    async def ListModels(
        self, request: insights_pb2.ListModelsRequest, context: Context
    ) -> insights_pb2.ListModelsResponse:
        models = await self._service.models(request.type)
        return insights_pb2.ListModelsResponse(models=models)

    async def UpdateModel(
        self, request: insights_pb2.UpdateModelRequest, context: Context
    ) -> insights_pb2.UpdateModelResponse:
        refuse_unknown_fields(request.changes)
        model, audit_id = await self._service.update_model(
            _actor(context), request.id, request.changes
        )
        return insights_pb2.UpdateModelResponse(model=model, audit_id=audit_id)

    async def ListCommunityPosts(
        self, request: insights_pb2.ListCommunityPostsRequest, context: Context
    ) -> insights_pb2.ListCommunityPostsResponse:
        page = await self._service.posts(request)
        return insights_pb2.ListCommunityPostsResponse(
            posts=page.posts, next_page_token=page.next_page_token
        )

    async def DeleteCommunityPost(
        self, request: insights_pb2.DeleteCommunityPostRequest, context: Context
    ) -> insights_pb2.DeleteCommunityPostResponse:
        removed, audit_id = await self._service.delete_post(
            _actor(context), request.id, request.reason
        )
        return insights_pb2.DeleteCommunityPostResponse(
            removed=removed, audit_id=audit_id
        )

    async def ListPayments(
        self, request: insights_pb2.ListPaymentsRequest, context: Context
    ) -> insights_pb2.ListPaymentsResponse:
        return await self._service.payments(request)

    async def ListSubscriptions(
        self, request: insights_pb2.ListSubscriptionsRequest, context: Context
    ) -> insights_pb2.ListSubscriptionsResponse:
        page = await self._service.subscriptions(request)
        return insights_pb2.ListSubscriptionsResponse(
            subscriptions=page.subscriptions,
            next_page_token=page.next_page_token,
            counts_by_status=page.counts_by_status,
        )

    async def ListPlans(
        self, request: insights_pb2.ListPlansRequest, context: Context
    ) -> insights_pb2.ListPlansResponse:
        return insights_pb2.ListPlansResponse(plans=await self._service.plans())

    async def UpdatePlan(
        self, request: insights_pb2.UpdatePlanRequest, context: Context
    ) -> insights_pb2.UpdatePlanResponse:
        refuse_unknown_fields(request.changes)
        plan, audit_id = await self._service.update_plan(
            _actor(context), request.id, request.changes
        )
        return insights_pb2.UpdatePlanResponse(plan=plan, audit_id=audit_id)


def definition(servicer: InsightsServicer) -> ServiceDefinition:
    return ServiceDefinition(
        full_name=_SERVICE.full_name,
        servicer=servicer,
        register=insights_pb2_grpc.add_AdminInsightsServiceServicer_to_server,
        access=ACCESS,
    )


def build(
    runtime: Runtime, engine: AsyncEngine, tasks: AdminTasks
) -> ServiceDefinition:
    """AdminInsightsService as the admin process serves it."""
    service = InsightsService(
        Owners(runtime.upstreams),
        session_factory(engine),
        tasks,
        runtime.settings.admin_insights_cache_seconds,
    )
    return definition(InsightsServicer(service))
