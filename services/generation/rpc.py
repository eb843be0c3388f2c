"""gRPC servicer of the generation service: translates messages, calls the
service, and raises domain errors unchanged (the server interceptor maps
them to statuses). Users call for themselves through the gateway; the
gateway calls HandleFalWebhook as a service."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf import struct_pb2
from omnihub.generation.v1 import generation_pb2, generation_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.errors import Unauthenticated
from libs.grpc.identity import Access, current_caller
from libs.grpc.messages import refuse_unknown_fields, timestamp
from libs.grpc.server import ServiceDefinition
from libs.periods import Period
from services.generation import reports
from services.generation.events import EventHub
from services.generation.fal import WebhookRejected, WebhookVerifier
from services.generation.models import FINISHED, Generation, Job
from services.generation.repository import ModelCount
from services.generation.service import (
    Created,
    CreateRequest,
    GenerationService,
    UpscaleRequest,
)

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]

ACCESS = {
    "CreateGenerations": Access.USER,
    "CreateUpscale": Access.USER,
    "QuoteUpscale": Access.USER,
    "ListGenerations": Access.USER,
    "GetGeneration": Access.USER,
    "DeleteGenerations": Access.USER,
    "CancelGeneration": Access.USER,
    "SetWorkspaceSharing": Access.USER,
    "WatchGeneration": Access.USER,
    "ListWorkspaceGallery": Access.USER,
    "HandleFalWebhook": Access.SERVICE,
    "SummarizeGenerations": Access.SERVICE,
    "GetUserGenerationSummary": Access.SERVICE,
    "DeleteUserData": Access.SERVICE,
}
# A watcher re-reads at least this often, notification or not.
WATCH_RECHECK_SECONDS = 5.0


class GenerationServicer(generation_pb2_grpc.GenerationServiceServicer):
    def __init__(
        self,
        service: GenerationService,
        events: EventHub,
        verifier: WebhookVerifier,
        reads: async_sessionmaker[AsyncSession],
    ) -> None:
        self._service = service
        self._events = events
        self._verifier = verifier
        # Autocommit sessions for the operators' figures, which lock nothing.
        self._reads = reads

    async def CreateGenerations(
        self, request: generation_pb2.CreateGenerationsRequest, context: Context
    ) -> generation_pb2.CreateGenerationsResponse:
        refuse_unknown_fields(request)
        created = await self._service.create(
            CreateRequest(
                user_id=current_caller().user_id,
                model_ids=list(request.model_ids),
                type=request.type,
                prompt=request.prompt,
                options=dict(request.options),
                options_by_model={
                    key: dict(value.options)
                    for key, value in request.options_by_model.items()
                },
                num_images=request.num_images,
                input_images=list(request.input_images),
                workspace_id=request.workspace_id,
                idempotency_key=request.idempotency_key,
            )
        )
        return _created(created, generation_pb2.CreateGenerationsResponse())

    async def CreateUpscale(
        self, request: generation_pb2.CreateUpscaleRequest, context: Context
    ) -> generation_pb2.CreateUpscaleResponse:
        refuse_unknown_fields(request)
        created = await self._service.create_upscale(
            UpscaleRequest(
                user_id=current_caller().user_id,
                source_id=request.source_generation_id,
                model_id=request.model_id,
                options=dict(request.options),
                workspace_id=request.workspace_id,
                idempotency_key=request.idempotency_key,
            )
        )
        return _created(created, generation_pb2.CreateUpscaleResponse())

    async def QuoteUpscale(
        self, request: generation_pb2.QuoteUpscaleRequest, context: Context
    ) -> generation_pb2.QuoteUpscaleResponse:
        quote, model, source = await self._service.quote_upscale(
            current_caller().user_id,
            request.source_generation_id,
            request.model_id,
            dict(request.options),
        )
        return generation_pb2.QuoteUpscaleResponse(
            price_micros=quote.price_micros,
            base_price_micros=model.default_price_micros,
            model_name=model.name,
            source_type="video" if source.type == "video" else "image",
            model_id=model.id,
        )

    async def ListGenerations(
        self, request: generation_pb2.ListGenerationsRequest, context: Context
    ) -> generation_pb2.ListGenerationsResponse:
        page = await self._service.list(
            current_caller().user_id,
            workspace_id=request.workspace_id,
            type_=request.type,
            status=request.status,
            page_size=request.page_size,
            page_token=request.page_token,
            offset=request.offset,
        )
        return generation_pb2.ListGenerationsResponse(
            generations=[generation_message(g) for g in page.generations],
            next_page_token=page.next_token,
            counts=page.counts,
        )

    async def GetGeneration(
        self, request: generation_pb2.GetGenerationRequest, context: Context
    ) -> generation_pb2.GetGenerationResponse:
        generation, job = await self._service.get(current_caller().user_id, request.id)
        return generation_pb2.GetGenerationResponse(
            generation=generation_message(generation, job)
        )

    async def DeleteGenerations(
        self, request: generation_pb2.DeleteGenerationsRequest, context: Context
    ) -> generation_pb2.DeleteGenerationsResponse:
        deleted = await self._service.delete(
            current_caller().user_id, list(request.ids)
        )
        return generation_pb2.DeleteGenerationsResponse(deleted=deleted)

    async def CancelGeneration(
        self, request: generation_pb2.CancelGenerationRequest, context: Context
    ) -> generation_pb2.CancelGenerationResponse:
        generation, released = await self._service.cancel(
            current_caller().user_id, request.id
        )
        return generation_pb2.CancelGenerationResponse(
            generation=generation_message(generation), released_micros=released
        )

    async def SetWorkspaceSharing(
        self, request: generation_pb2.SetWorkspaceSharingRequest, context: Context
    ) -> generation_pb2.SetWorkspaceSharingResponse:
        generation = await self._service.set_sharing(
            current_caller().user_id, request.id, request.shared
        )
        return generation_pb2.SetWorkspaceSharingResponse(
            generation=generation_message(generation)
        )

    async def WatchGeneration(
        self, request: generation_pb2.WatchGenerationRequest, context: Context
    ) -> AsyncIterator[generation_pb2.WatchGenerationResponse]:
        user_id = current_caller().user_id
        generation, job = await self._service.get(user_id, request.id)
        with self._events.subscription(str(generation.id)) as changed:
            last = generation_message(generation, job)
            yield generation_pb2.WatchGenerationResponse(
                kind="snapshot", generation=last
            )
            while last.status not in FINISHED:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), WATCH_RECHECK_SECONDS)
                changed.clear()
                generation, job = await self._service.get(user_id, request.id)
                current = generation_message(generation, job)
                kind = _change(last, current)
                if kind:
                    yield generation_pb2.WatchGenerationResponse(
                        kind=kind, generation=current
                    )
                last = current

    async def ListWorkspaceGallery(
        self, request: generation_pb2.ListWorkspaceGalleryRequest, context: Context
    ) -> generation_pb2.ListWorkspaceGalleryResponse:
        page = await self._service.gallery(
            current_caller().user_id,
            request.workspace_id,
            request.type,
            request.page_size,
            request.page_token,
        )
        return generation_pb2.ListWorkspaceGalleryResponse(
            generations=[generation_message(g) for g in page.generations],
            next_page_token=page.next_token,
        )

    async def HandleFalWebhook(
        self, request: generation_pb2.HandleFalWebhookRequest, context: Context
    ) -> generation_pb2.HandleFalWebhookResponse:
        try:
            event = await self._verifier.verify(dict(request.headers), request.body)
        except WebhookRejected as error:
            raise Unauthenticated(f"The fal webhook was refused: {error}") from None
        applied = await self._service.on_webhook(event)
        return generation_pb2.HandleFalWebhookResponse(applied=applied)

    async def SummarizeGenerations(
        self, request: generation_pb2.SummarizeGenerationsRequest, context: Context
    ) -> generation_pb2.SummarizeGenerationsResponse:
        period = Period.from_request(request.start, request.end, request.bucket)
        summary = await reports.summarize_generations(
            self._reads, period, request.top_models, request.recent
        )
        return _summary(summary)

    async def GetUserGenerationSummary(
        self,
        request: generation_pb2.GetUserGenerationSummaryRequest,
        context: Context,
    ) -> generation_pb2.GetUserGenerationSummaryResponse:
        counts, recent = await self._service.user_summary(
            request.user_id, request.recent_limit
        )
        return generation_pb2.GetUserGenerationSummaryResponse(
            counts=counts, recent=[generation_message(g) for g in recent]
        )

    async def DeleteUserData(
        self, request: generation_pb2.DeleteUserDataRequest, context: Context
    ) -> generation_pb2.DeleteUserDataResponse:
        deleted = await self._service.delete_user_data(request.user_id)
        return generation_pb2.DeleteUserDataResponse(
            cancelled_generations=deleted.cancelled,
            deleted_generations=deleted.deleted,
            deleted_posts=deleted.community.posts,
            deleted_likes=deleted.community.likes,
            deleted_shares=deleted.community.shares,
        )


def _change(last: generation_pb2.Generation, current: generation_pb2.Generation) -> str:
    if current.status != last.status:
        return "status"
    if current.queue_position != last.queue_position or current.HasField(
        "queue_position"
    ) != last.HasField("queue_position"):
        return "queue"
    if current.progress != last.progress:
        return "progress"
    return ""


CreatedReply = TypeVar(
    "CreatedReply",
    generation_pb2.CreateGenerationsResponse,
    generation_pb2.CreateUpscaleResponse,
)


def _created(created: Created, reply: CreatedReply) -> CreatedReply:
    reply.generations.extend(generation_message(g) for g in created.generations)
    reply.total_micros = created.total
    reply.credit_source = created.credit_source
    reply.remaining_micros = created.remaining
    reply.replayed = created.replayed
    if created.user_balance is not None:
        reply.user_balance_micros = created.user_balance
    return reply


def generation_message(
    row: Generation, job: Job | None = None
) -> generation_pb2.Generation:
    options = struct_pb2.Struct()
    options.update(row.options or {})
    message = generation_pb2.Generation(
        id=str(row.id),
        visible_id=str(row.id)[:8],
        user_id=str(row.user_id),
        workspace_id=str(row.workspace_id),
        shared_with_workspace=row.shared_with_workspace,
        type=row.type,
        model_id=row.model_id,
        model_name=row.model_name,
        prompt=row.prompt,
        options=options,
        credits_micros=row.credits_micros,
        status=row.status,
        result_url=row.result_url or "",
        thumbnail_url=row.thumbnail_url or "",
        error=row.error or "",
        error_type=row.error_type or "",
        started_at=timestamp(row.started_at),
        max_wait_seconds=row.max_wait_seconds,
        source_generation_id=str(row.source_generation_id or ""),
        credit_source=row.credit_source,
        image_index=row.image_index,
        simulated=row.simulated,
    )
    for name in ("queued_at", "completed_at", "cancelled_at"):
        moment = getattr(row, name)
        if moment is not None:
            getattr(message, name).CopyFrom(timestamp(moment))
    if job is not None:
        message.external_request_id = job.request_id or ""
        message.simulated = message.simulated or job.simulated
        if row.status == "processing" and job.queue_position is not None:
            message.queue_position = job.queue_position
        if row.status == "processing":
            message.progress = job.progress or ""
    return message


def _summary(
    summary: reports.GenerationSummary,
) -> generation_pb2.SummarizeGenerationsResponse:
    return generation_pb2.SummarizeGenerationsResponse(
        buckets=[
            generation_pb2.GenerationBucket(
                start=timestamp(b.start),
                type=b.type,
                status=b.status,
                count=b.count,
                credits_micros=b.credits,
            )
            for b in summary.buckets
        ],
        generating_users_buckets=[
            generation_pb2.GeneratingUsersBucket(start=timestamp(start), users=users)
            for start, users in summary.user_buckets
        ],
        generating_users=summary.users,
        top_models_by_count=[_model_usage(m) for m in summary.top_by_count],
        top_models_by_credits=[_model_usage(m) for m in summary.top_by_credits],
        totals_by_type=summary.totals_by_type,
        recent=[
            generation_pb2.RecentGeneration(
                id=str(g.id),
                user_id=str(g.user_id),
                type=g.type,
                model_id=g.model_id,
                model_name=g.model_name,
                status=g.status,
                credits_micros=g.credits_micros,
                started_at=timestamp(g.started_at),
            )
            for g in summary.recent
        ],
    )


def _model_usage(model: ModelCount) -> generation_pb2.ModelUsage:
    return generation_pb2.ModelUsage(
        model_id=model.model_id,
        model_name=model.model_name,
        type=model.type,
        count=model.count,
        credits_micros=model.credits,
    )


def definition(servicer: GenerationServicer) -> ServiceDefinition:
    return ServiceDefinition(
        full_name=generation_pb2.DESCRIPTOR.services_by_name[
            "GenerationService"
        ].full_name,
        servicer=servicer,
        register=generation_pb2_grpc.add_GenerationServiceServicer_to_server,
        access=ACCESS,
    )
