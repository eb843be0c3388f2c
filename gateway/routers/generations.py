"""/api/generate, /api/generations, /api/upscale, the workspace gallery and
fal's webhook, served by the generation service.

Generating answers at once with pending generations; the generation worker
runs them on fal. A client follows them by polling GET /api/generations (the
web client does, every 3 s) or by the Server-Sent Events of
GET /api/generations/{id}/events. Another user's generation answers 404 on
every route, as does an id that is not a UUID.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Annotated, Any, TypeVar

import grpc
from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from google.protobuf import struct_pb2
from omnihub.generation.v1 import generation_pb2, generation_pb2_grpc
from pydantic.alias_generators import to_camel

from gateway.deps import UserDep
from gateway.errors import render_domain_error
from gateway.middleware import request_id_var
from gateway.schemas.billing import credits
from gateway.schemas.generations import (
    BulkDeleteBody,
    GalleryOut,
    GalleryQuery,
    GenerateBody,
    GenerationCancelledOut,
    GenerationDeletedOut,
    GenerationListOut,
    GenerationOut,
    GenerationsCreatedOut,
    GenerationsDeletedOut,
    GenerationsQuery,
    ShareBody,
    SharingOut,
    UpscaleBody,
    UpscaleQuoteBody,
    UpscaleQuoteOut,
    WebhookAcceptedOut,
    optional_moment,
)
from gateway.upstream import Upstream
from libs.errors import (
    DomainError,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from libs.grpc.status import from_rpc_error
from libs.logs import get_logger

log = get_logger(__name__)
router = APIRouter(tags=["generations"])

ReplyT = TypeVar("ReplyT")

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_IDEMPOTENCY_KEY_LENGTH = 255
FINISHED = frozenset({"completed", "failed", "cancelled"})
# The web client's proxy gives up on a response silent for 30 s.
KEEP_ALIVE_SECONDS = 15.0
# A watch lasts at most this long; the client reconnects to go on.
WATCH_DEADLINE_SECONDS = 1800.0
SSE_HEADERS = {
    # no-transform: otherwise Next.js's proxy gzips the stream and holds
    # every event until the end (web-client.md §4.2).
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",
}
FAL_WEBHOOK_HEADERS = (
    "x-fal-webhook-request-id",
    "x-fal-webhook-user-id",
    "x-fal-webhook-timestamp",
    "x-fal-webhook-signature",
)
GENERATION_NOT_FOUND = "Generation not found."
SOURCE_NOT_FOUND = "Source generation not found."
WORKSPACE_NOT_FOUND = "No such workspace."
NOT_ALL_YOURS = "Some generations do not exist or do not belong to you."
# The generation service names fields as its messages do; the REST API
# does not. Only the first part is renamed: `options.image_size` keeps the
# option's own name.
_REST_FIELDS = {
    "model_ids": "model",
    "options_by_model": "options",
    "source_generation_id": "generationId",
    "page_size": "limit",
    "page_token": "cursor",
    "shared": "sharedWithWorkspace",
    "idempotency_key": IDEMPOTENCY_HEADER,
}


WatchCall = grpc.aio.UnaryStreamCall[
    generation_pb2.WatchGenerationRequest, generation_pb2.WatchGenerationResponse
]


class GenerationClient:
    """The generation service's stub, made once per gateway."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.stub = generation_pb2_grpc.GenerationServiceStub(
            upstream.runtime.upstreams.channel("generation")
        )

    async def call(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[Any, ReplyT],
        message: Any,
        authorization: str | None,
    ) -> ReplyT:
        return await _named_as_in_rest(
            self.upstream.call(method, message, authorization)
        )

    def watch(self, generation_id: str, authorization: str) -> WatchCall:
        """A server stream, so without Upstream.call's short deadline."""
        metadata = self.upstream.runtime.upstreams.metadata(
            authorization=authorization, request_id=request_id_var.get()
        )
        return self.stub.WatchGeneration(
            generation_pb2.WatchGenerationRequest(id=generation_id),
            timeout=WATCH_DEADLINE_SECONDS,
            metadata=metadata,
        )


async def get_generations(request: Request) -> GenerationClient:
    client: GenerationClient = request.app.state.generations
    return client


GenerationsDep = Annotated[GenerationClient, Depends(get_generations)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=IDEMPOTENCY_HEADER,
        max_length=MAX_IDEMPOTENCY_KEY_LENGTH,
        description="Any unique string; a retry with the same key creates "
        "and charges nothing more and answers the first result",
    ),
]


def _rest_field(field: str) -> str:
    first, dot, rest = field.partition(".")
    return (_REST_FIELDS.get(first) or to_camel(first)) + dot + rest


async def _named_as_in_rest(call: Awaitable[ReplyT]) -> ReplyT:
    try:
        return await call
    except InvalidArgument as error:
        violations = tuple(
            FieldViolation(_rest_field(v.field), v.message) for v in error.violations
        )
        raise InvalidArgument(error.message, violations=violations) from None


def _uuid(raw: str, missing: str) -> str:
    """The canonical form of a UUID id; anything else names nothing, so it is
    not found (never a 422 or 500)."""
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise NotFound(missing) from None


def generation_id_of(raw: str) -> str:
    """The canonical id of a generation a client names; NotFound otherwise."""
    return _uuid(raw, GENERATION_NOT_FOUND)


def _plain(value: struct_pb2.Value) -> Any:
    """A Struct value as plain JSON; whole numbers (Struct has only floats)
    go back to ints. Cheaper than json_format on lists of a thousand."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        return int(number) if number.is_integer() else number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return {k: _plain(v) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_plain(v) for v in value.list_value.values]
    return None


def generation_out(generation: generation_pb2.Generation) -> GenerationOut:
    g = generation
    return GenerationOut(
        id=g.id,
        visible_id=g.visible_id,
        user_id=g.user_id,
        workspace_id=g.workspace_id or None,
        shared_with_workspace=g.shared_with_workspace,
        type=g.type,
        model=g.model_id,
        model_id=g.model_id,
        model_name=g.model_name,
        prompt=g.prompt,
        options={key: _plain(value) for key, value in g.options.fields.items()},
        credits=credits(g.credits_micros),
        status=g.status,
        result=g.result_url or None,
        thumbnail_url=g.thumbnail_url or None,
        error=g.error or None,
        error_type=g.error_type or None,
        started_at=optional_moment(g.started_at, g.HasField("started_at")),
        queued_at=optional_moment(g.queued_at, g.HasField("queued_at")),
        completed_at=optional_moment(g.completed_at, g.HasField("completed_at")),
        cancelled_at=optional_moment(g.cancelled_at, g.HasField("cancelled_at")),
        max_wait_time=g.max_wait_seconds,
        external_request_id=g.external_request_id or None,
        source_generation_id=g.source_generation_id or None,
        credit_source=g.credit_source or None,
        image_index=g.image_index,
        simulated=g.simulated,
        queue_position=g.queue_position if g.HasField("queue_position") else None,
        progress=g.progress or None,
    )


def _created(
    reply: generation_pb2.CreateGenerationsResponse
    | generation_pb2.CreateUpscaleResponse,
    response: Response,
) -> GenerationsCreatedOut:
    if reply.replayed:
        response.headers[REPLAYED_HEADER] = "true"
    own_balance = (
        credits(reply.user_balance_micros)
        if reply.HasField("user_balance_micros")
        else None
    )
    generations = [generation_out(g) for g in reply.generations]
    return GenerationsCreatedOut(
        generations=generations,
        credits=credits(reply.total_micros),
        remaining_credits=credits(reply.remaining_micros),
        credit_source=reply.credit_source,
        id=generations[0].id,
        visible_id=generations[0].visible_id,
        user_credits=own_balance,
        new_credits=own_balance,
    )


def _no_store(response: Response) -> None:
    response.headers["Cache-Control"] = "no-store"


# --- Generating -----------------------------------------------------------


def _model_ids(body: GenerateBody) -> list[str]:
    """The models asked for, under whichever name the client used."""
    given = [
        (name, value)
        for name, value in (
            ("model", body.model),
            ("models", body.models),
            ("modelId", body.model_id),
        )
        if value is not None
    ]
    if not given:
        raise InvalidArgument.for_field("model", "model is required.")
    if len(given) > 1:
        raise InvalidArgument.for_field(
            given[1][0], "Name the models in one of model, models or modelId."
        )
    name, model_ids = given[0]
    if len(set(model_ids)) != len(model_ids):
        raise InvalidArgument.for_field(name, f"{name} names a model twice.")
    return model_ids


def _options(
    body: GenerateBody, model_ids: list[str]
) -> tuple[dict[str, str], dict[str, generation_pb2.ModelOptions]]:
    """Options for every model, or per model as the dashboard sends them."""
    options = body.options or {}
    shared = {key: value for key, value in options.items() if isinstance(value, str)}
    by_model = {key: value for key, value in options.items() if isinstance(value, dict)}
    if shared and by_model:
        raise InvalidArgument.for_field(
            "options",
            "options holds option values, or objects of them per model id; not both.",
        )
    for key in by_model:
        if key not in model_ids:
            raise InvalidArgument.for_field(
                f"options.{key}", f"{key} is not one of the models asked for."
            )
    return shared, {
        key: generation_pb2.ModelOptions(options=value)
        for key, value in by_model.items()
    }


@router.post("/api/generate", status_code=status.HTTP_201_CREATED)
async def generate(
    body: GenerateBody,
    user: UserDep,
    generations: GenerationsDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> GenerationsCreatedOut:
    """Start generating: one batch per model, `numImages` (or the
    `num_images` option) images each. Credits are held now and charged when
    a generation completes; a failed, timed-out or cancelled one gives them
    back. 402 with `required` and `available` when the credits are short."""
    model_ids = _model_ids(body)
    shared, by_model = _options(body, model_ids)
    reply = await generations.call(
        generations.stub.CreateGenerations,
        generation_pb2.CreateGenerationsRequest(
            model_ids=model_ids,
            type=body.type or "",
            prompt=body.prompt,
            options=shared,
            options_by_model=by_model,
            num_images=body.num_images or 0,
            input_images=body.input_images or [],
            workspace_id=body.workspace_id or "",
            idempotency_key=idempotency_key or "",
        ),
        user.authorization,
    )
    return _created(reply, response)


@router.post("/api/upscale", status_code=status.HTTP_201_CREATED)
async def upscale(
    body: UpscaleBody,
    user: UserDep,
    generations: GenerationsDep,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> GenerationsCreatedOut:
    """Upscale one of your completed generations, as a new generation of
    type `upscale`, paid like any other."""
    reply = await generations.call(
        generations.stub.CreateUpscale,
        generation_pb2.CreateUpscaleRequest(
            source_generation_id=_uuid(body.generation_id, SOURCE_NOT_FOUND),
            model_id=body.model_id or "",
            options=body.options or {},
            workspace_id=body.workspace_id or "",
            idempotency_key=idempotency_key or "",
        ),
        user.authorization,
    )
    return _created(reply, response)


@router.post("/api/upscale/calculate")
async def quote_upscale(
    body: UpscaleQuoteBody, user: UserDep, generations: GenerationsDep
) -> UpscaleQuoteOut:
    """What upscaling one of your generations with this upscaler and these
    options costs, in credits."""
    reply = await generations.call(
        generations.stub.QuoteUpscale,
        generation_pb2.QuoteUpscaleRequest(
            source_generation_id=_uuid(body.generation_id, SOURCE_NOT_FOUND),
            model_id=body.model_id or "",
            options=body.options or {},
        ),
        user.authorization,
    )
    return UpscaleQuoteOut(
        price=credits(reply.price_micros),
        base_price=credits(reply.base_price_micros),
        model=reply.model_name,
        model_id=reply.model_id,
        source_type=reply.source_type,
    )


# --- The caller's generations ---------------------------------------------


@router.get("/api/generations")
async def list_generations(
    query: Annotated[GenerationsQuery, Query()],
    user: UserDep,
    generations: GenerationsDep,
    response: Response,
) -> GenerationListOut:
    """Newest first. Follow `nextCursor` (stable while new ones arrive), or
    page with `offset` as the original API did."""
    reply = await generations.call(
        generations.stub.ListGenerations,
        generation_pb2.ListGenerationsRequest(
            type=query.type or "",
            workspace_id=query.workspace_id or "",
            status=query.status or "",
            page_size=query.limit,
            page_token=query.cursor or "",
            offset=query.offset,
        ),
        user.authorization,
    )
    _no_store(response)
    return GenerationListOut(
        generations=[generation_out(g) for g in reply.generations],
        # The web client counts the listed page itself when a type is absent.
        counts={"image": 0, "video": 0, **reply.counts},
        next_cursor=reply.next_page_token or None,
    )


@router.post("/api/generations/bulk-delete")
async def delete_generations(
    body: BulkDeleteBody, user: UserDep, generations: GenerationsDep
) -> GenerationsDeletedOut:
    """Delete all of them, or, when one is not yours, none (403)."""
    try:
        reply = await generations.call(
            generations.stub.DeleteGenerations,
            generation_pb2.DeleteGenerationsRequest(ids=[str(i) for i in body.ids]),
            user.authorization,
        )
    except (NotFound, PermissionDenied):
        raise PermissionDenied(NOT_ALL_YOURS) from None
    return GenerationsDeletedOut(deleted=reply.deleted)


@router.get("/api/generations/{generation_id}")
async def get_generation(
    generation_id: str, user: UserDep, generations: GenerationsDep, response: Response
) -> GenerationOut:
    reply = await generations.call(
        generations.stub.GetGeneration,
        generation_pb2.GetGenerationRequest(
            id=_uuid(generation_id, GENERATION_NOT_FOUND)
        ),
        user.authorization,
    )
    _no_store(response)
    return generation_out(reply.generation)


@router.delete("/api/generations/{generation_id}")
async def delete_generation(
    generation_id: str, user: UserDep, generations: GenerationsDep
) -> GenerationDeletedOut:
    """An unfinished one is cancelled first, its credits given back."""
    try:
        await generations.call(
            generations.stub.DeleteGenerations,
            generation_pb2.DeleteGenerationsRequest(
                ids=[_uuid(generation_id, GENERATION_NOT_FOUND)]
            ),
            user.authorization,
        )
    except PermissionDenied:
        raise NotFound(GENERATION_NOT_FOUND) from None
    return GenerationDeletedOut()


@router.post("/api/generations/{generation_id}/cancel")
async def cancel_generation(
    generation_id: str, user: UserDep, generations: GenerationsDep
) -> GenerationCancelledOut:
    """Pending or processing only (409 once finished); its credits go back
    to the account that paid."""
    reply = await generations.call(
        generations.stub.CancelGeneration,
        generation_pb2.CancelGenerationRequest(
            id=_uuid(generation_id, GENERATION_NOT_FOUND)
        ),
        user.authorization,
    )
    return GenerationCancelledOut(
        credits_refunded=credits(reply.released_micros),
        generation=generation_out(reply.generation),
    )


@router.patch("/api/generations/{generation_id}/share")
async def share_generation(
    generation_id: str, body: ShareBody, user: UserDep, generations: GenerationsDep
) -> SharingOut:
    """Show it in (or take it out of) its workspace's gallery."""
    reply = await generations.call(
        generations.stub.SetWorkspaceSharing,
        generation_pb2.SetWorkspaceSharingRequest(
            id=_uuid(generation_id, GENERATION_NOT_FOUND),
            shared=body.shared_with_workspace,
        ),
        user.authorization,
    )
    return SharingOut(shared_with_workspace=reply.generation.shared_with_workspace)


# --- Following one generation ---------------------------------------------


def _frame(event: generation_pb2.WatchGenerationResponse) -> bytes:
    kind = "".join(ch for ch in event.kind if ch.isalnum() or ch == "_") or "status"
    data = generation_out(event.generation).model_dump_json(by_alias=True)
    return f"event: {kind}\ndata: {data}\n\n".encode()


def _error_frame(error: DomainError) -> bytes:
    return b"event: error\ndata: " + render_domain_error(error).body + b"\n\n"


async def _first_event(call: WatchCall) -> generation_pb2.WatchGenerationResponse:
    """The snapshot, read before answering so that a generation that is not
    the caller's is a plain 404 rather than a stream that says so."""
    try:
        event = await call.read()
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc) from None
    if event is grpc.aio.EOF:
        raise Unavailable()
    assert isinstance(event, generation_pb2.WatchGenerationResponse)
    return event


async def _events(
    call: WatchCall, first: generation_pb2.WatchGenerationResponse
) -> AsyncIterator[bytes]:
    """Each event whole in one chunk, a comment while nothing happens; ends
    after a finished generation. Leaving early (the client went away)
    cancels the call."""
    reading: asyncio.Future[Any] | None = None
    try:
        yield _frame(first)
        if first.generation.status in FINISHED:
            return
        while True:
            reading = reading or asyncio.ensure_future(call.read())
            done, _ = await asyncio.wait({reading}, timeout=KEEP_ALIVE_SECONDS)
            if not done:
                yield b": keep-alive\n\n"
                continue
            event, reading = reading.result(), None
            if event is grpc.aio.EOF:
                return
            yield _frame(event)
            if event.generation.status in FINISHED:
                return
    except grpc.aio.AioRpcError as exc:
        # Headers are gone already: say it in the stream (web-client.md §3).
        yield _error_frame(from_rpc_error(exc))
    finally:
        call.cancel()
        if reading is not None:
            reading.cancel()


@router.get(
    "/api/generations/{generation_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def watch_generation(
    generation_id: str, user: UserDep, generations: GenerationsDep
) -> StreamingResponse:
    """Server-Sent Events: `snapshot` (the generation now), then `status`,
    `queue` and `progress` as they happen, each with the whole generation as
    `data`; the stream ends after the event that shows it finished, with its
    outputs. A `: keep-alive` comment comes every 15 s of quiet."""
    call = generations.watch(
        _uuid(generation_id, GENERATION_NOT_FOUND), user.authorization
    )
    try:
        first = await _first_event(call)
    except BaseException:
        call.cancel()
        raise
    log.info("generation.watch_started", generation_id=first.generation.id)
    return StreamingResponse(
        _events(call, first), media_type="text/event-stream", headers=SSE_HEADERS
    )


# --- Workspace gallery ----------------------------------------------------


@router.get("/api/workspaces/{workspace_id}/gallery")
async def workspace_gallery(
    workspace_id: str,
    query: Annotated[GalleryQuery, Query()],
    user: UserDep,
    generations: GenerationsDep,
    response: Response,
) -> GalleryOut:
    """Completed generations the members shared with the workspace, newest
    first; members only."""
    reply = await generations.call(
        generations.stub.ListWorkspaceGallery,
        generation_pb2.ListWorkspaceGalleryRequest(
            workspace_id=_uuid(workspace_id, WORKSPACE_NOT_FOUND),
            type=query.type or "",
            page_size=query.limit,
            page_token=query.cursor or "",
        ),
        user.authorization,
    )
    _no_store(response)
    return GalleryOut(
        generations=[generation_out(g) for g in reply.generations],
        next_cursor=reply.next_page_token or None,
    )


# --- fal ------------------------------------------------------------------


@router.post("/api/webhooks/fal")
async def fal_webhook(
    request: Request, generations: GenerationsDep
) -> WebhookAcceptedOut:
    """fal's report that a job finished. The signature covers the body's
    exact bytes, so they go to the generation service as received, with the
    X-Fal-Webhook-* headers; it verifies them (401 when the signature is
    not fal's). A delivery already handled is acknowledged too; one that
    comes before the worker stored the request id is 404, and fal sends it
    again."""
    headers = {
        name: value
        for name in FAL_WEBHOOK_HEADERS
        if (value := request.headers.get(name)) is not None
    }
    reply = await generations.call(
        generations.stub.HandleFalWebhook,
        generation_pb2.HandleFalWebhookRequest(
            body=await request.body(), headers=headers
        ),
        None,
    )
    log.info("generation.fal_webhook_received", applied=reply.applied)
    return WebhookAcceptedOut()
