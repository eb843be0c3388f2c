"""The services the insights area asks, called as the admin service: auth,
generation (and its CommunityService), billing and the catalog.

A call that fails comes back as the DomainError the service raised; one
that could not reach the service (or ran out of time) comes back as
Unavailable naming the service, so that an operator reads which part of
OmniHub is missing instead of a bare 500.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

import grpc
from omnihub.auth.v1 import auth_pb2, auth_pb2_grpc
from omnihub.billing.v1 import billing_pb2, billing_pb2_grpc
from omnihub.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from omnihub.generation.v1 import (
    community_pb2,
    community_pb2_grpc,
    generation_pb2,
    generation_pb2_grpc,
)

from libs.errors import DeadlineExceeded, DomainError, Unavailable
from libs.grpc.client import Upstreams
from libs.grpc.messages import timestamp
from libs.grpc.status import from_rpc_error

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")

# The owner of each stub, as operators know it.
AUTH = "auth"
GENERATION = "generation"
BILLING = "billing"
CATALOG = "catalog"


def unreachable(services: list[str]) -> Unavailable:
    """The error of figures that need services which did not answer."""
    names = " and ".join(sorted(set(services)))
    plural = "services are" if len(set(services)) > 1 else "service is"
    return Unavailable(
        f"The {names} {plural} not reachable right now; try again shortly.",
        context={"service": ",".join(sorted(set(services)))},
    )


class Owners:
    """Stubs of the services that own the data, and one way to call them."""

    def __init__(self, upstreams: Upstreams) -> None:
        self._upstreams = upstreams
        self.auth = auth_pb2_grpc.AuthServiceStub(upstreams.channel(AUTH))
        generation = upstreams.channel(GENERATION)
        self.generation = generation_pb2_grpc.GenerationServiceStub(generation)
        self.community = community_pb2_grpc.CommunityServiceStub(generation)
        self.billing = billing_pb2_grpc.BillingServiceStub(upstreams.channel(BILLING))
        self.catalog = catalog_pb2_grpc.CatalogServiceStub(upstreams.channel(CATALOG))

    async def call(
        self,
        service: str,
        method: grpc.aio.UnaryUnaryMultiCallable[RequestT, ResponseT],
        message: RequestT,
    ) -> ResponseT:
        try:
            return await method(
                message,
                timeout=self._upstreams.timeout(),
                metadata=self._upstreams.metadata(),
            )
        except grpc.aio.AioRpcError as exc:
            error: DomainError = from_rpc_error(exc)
        if isinstance(error, Unavailable | DeadlineExceeded):
            raise unreachable([service]) from None
        raise error

    # Figures

    async def users(
        self, start: datetime, end: datetime, bucket: str
    ) -> auth_pb2.SummarizeUsersResponse:
        return await self.call(
            AUTH,
            self.auth.SummarizeUsers,
            auth_pb2.SummarizeUsersRequest(
                start=timestamp(start), end=timestamp(end), bucket=bucket
            ),
        )

    async def generations(
        self,
        start: datetime,
        end: datetime,
        bucket: str,
        *,
        top_models: int = 0,
        recent: int = 0,
    ) -> generation_pb2.SummarizeGenerationsResponse:
        return await self.call(
            GENERATION,
            self.generation.SummarizeGenerations,
            generation_pb2.SummarizeGenerationsRequest(
                start=timestamp(start),
                end=timestamp(end),
                bucket=bucket,
                top_models=top_models,
                recent=recent,
            ),
        )

    async def revenue(
        self, start: datetime, end: datetime, bucket: str
    ) -> billing_pb2.SummarizeRevenueResponse:
        return await self.call(
            BILLING,
            self.billing.SummarizeRevenue,
            billing_pb2.SummarizeRevenueRequest(
                start=timestamp(start), end=timestamp(end), bucket=bucket
            ),
        )

    # Models

    async def models(self, kind: str = "") -> list[catalog_pb2.Model]:
        reply = await self.call(
            CATALOG,
            self.catalog.ListModels,
            catalog_pb2.ListModelsRequest(type=kind, include_disabled=True),
        )
        return list(reply.models)

    async def model(self, model_id: str) -> catalog_pb2.Model:
        reply = await self.call(
            CATALOG, self.catalog.GetModel, catalog_pb2.GetModelRequest(id=model_id)
        )
        return reply.model

    async def update_model(
        self, model_id: str, changes: catalog_pb2.ModelChanges, actor: str
    ) -> catalog_pb2.Model:
        reply = await self.call(
            CATALOG,
            self.catalog.UpdateModel,
            catalog_pb2.UpdateModelRequest(id=model_id, changes=changes, actor=actor),
        )
        return reply.model

    # Community

    async def posts(
        self, request: community_pb2.ListPostsForModerationRequest
    ) -> community_pb2.ListPostsForModerationResponse:
        return await self.call(
            GENERATION, self.community.ListPostsForModeration, request
        )

    async def moderate_post(self, post_id: str, reason: str, actor: str) -> bool:
        reply = await self.call(
            GENERATION,
            self.community.ModeratePost,
            community_pb2.ModeratePostRequest(
                post_id=post_id, reason=reason, actor=actor
            ),
        )
        return reply.removed

    # Payments and plans

    async def payments(
        self, request: billing_pb2.ListAllPaymentsRequest
    ) -> billing_pb2.ListAllPaymentsResponse:
        return await self.call(BILLING, self.billing.ListAllPayments, request)

    async def subscriptions(
        self, request: billing_pb2.ListSubscriptionsRequest
    ) -> billing_pb2.ListSubscriptionsResponse:
        return await self.call(BILLING, self.billing.ListSubscriptions, request)

    async def plans(self) -> list[billing_pb2.Plan]:
        reply = await self.call(
            BILLING,
            self.billing.ListPlans,
            billing_pb2.ListPlansRequest(include_inactive=True),
        )
        return list(reply.plans)

    async def update_plan(
        self, plan_id: str, changes: billing_pb2.PlanChanges, actor: str
    ) -> billing_pb2.Plan:
        reply = await self.call(
            BILLING,
            self.billing.UpdatePlan,
            billing_pb2.UpdatePlanRequest(id=plan_id, changes=changes, actor=actor),
        )
        return reply.plan
