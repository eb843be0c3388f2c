"""The generation service's rules: what may be generated, by whom, at what
price, and who may see, cancel or delete it.

Creating spans calls to catalog, workspace and billing, so `create` commits
its own steps in order: rows (with the idempotency key) first, holds next,
then the job is released to the worker. A crash between the steps leaves a
job in `holding`, which the worker finishes the same way (holds are keyed by
generation id, so a repeat holds nothing twice).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from omnihub.catalog.v1 import catalog_pb2
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.errors import (
    DomainError,
    FailedPrecondition,
    FeatureDisabled,
    FieldViolation,
    IdempotencyKeyReused,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from libs.flags import VIDEO_GENERATION, FeatureFlags
from libs.logs import get_logger
from libs.tracing import current_traceparent
from services.generation import repository
from services.generation.fal import FalError, WebhookEvent
from services.generation.inputs import (
    parse_input_images,
    refuse_private_hosts,
    store_inline_images,
)
from services.generation.lifecycle import Failure, Lifecycle
from services.generation.models import FINISHED, Generation, Job
from services.generation.models import CreateRequest as KeyClaim
from services.generation.payload import (
    choose_endpoint,
    generation_payload,
    upscale_payload,
)
from services.generation.repository import CommunityDataDeleted, Cursor
from services.generation.storage import MediaStore, MediaStoreError
from services.generation.upstream import ChosenPayer, Platform

log = get_logger(__name__)

MAX_PROMPT_CHARS = 4000
MAX_MODELS = 4
MAX_IMAGES = 4
MAX_PAGE = 1000
DEFAULT_PAGE = 50
MAX_BULK_DELETE = 100
MAX_RECENT_FOR_OPERATORS = 50
# A user's generations are deleted for an operator this many at a time.
DELETE_BATCH = 500
DEFAULT_WAIT = {"image": 120, "video": 600, "upscale": 300}
UPSCALER_FOR = {"image": "fal-crystal-upscaler", "video": "fal-crystal-video-upscaler"}
STATUS_FILTERS = ("pending", "processing", "completed", "failed", "cancelled")
NOT_FOUND = "Generation not found."
# A job whose create request has not placed its holds by then is finished by
# a worker (see worker.py).
HOLDING_GRACE_SECONDS = 30


def parse_id(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None


def encode_cursor(moment: datetime, row_id: uuid.UUID) -> str:
    return f"{moment.timestamp():.6f}_{row_id}"


def decode_cursor(token: str) -> Cursor:
    moment, _, row_id = token.partition("_")
    parsed = parse_id(row_id)
    try:
        stamp = datetime.fromtimestamp(float(moment), UTC)
    except (ValueError, OverflowError):
        parsed = None
    if parsed is None:
        raise InvalidArgument.for_field("page_token", "The page cursor is not valid.")
    return Cursor(stamp, parsed)


@dataclass(frozen=True)
class Batch:
    """One model's part of a create request."""

    model: catalog_pb2.Model
    quote: catalog_pb2.QuotePriceResponse
    count: int
    endpoint: str
    payload: dict[str, object]
    options: dict[str, object]


@dataclass(frozen=True)
class CreateRequest:
    user_id: str
    model_ids: Sequence[str]
    type: str
    prompt: str
    options: Mapping[str, str]
    options_by_model: Mapping[str, Mapping[str, str]]
    num_images: int
    input_images: Sequence[str]
    workspace_id: str
    idempotency_key: str

    def fingerprint(self) -> str:
        body = {
            "models": list(self.model_ids),
            "type": self.type,
            "prompt": self.prompt,
            "options": dict(self.options),
            "by_model": {k: dict(v) for k, v in self.options_by_model.items()},
            "count": self.num_images,
            "images": list(self.input_images),
            "workspace": self.workspace_id,
        }
        encoded = json.dumps(body, sort_keys=True).encode()
        return hashlib.sha256(encoded).hexdigest()


@dataclass(frozen=True)
class UpscaleRequest:
    user_id: str
    source_id: str
    model_id: str
    options: Mapping[str, str]
    workspace_id: str
    idempotency_key: str

    def fingerprint(self) -> str:
        body = [self.source_id, self.model_id, dict(self.options), self.workspace_id]
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@dataclass
class Created:
    generations: list[Generation]
    total: int
    credit_source: str
    remaining: int
    user_balance: int | None
    replayed: bool = False
    jobs: list[Job] = field(default_factory=list)


@dataclass(frozen=True)
class Page:
    generations: list[Generation]
    next_token: str
    counts: dict[str, int]


@dataclass(frozen=True)
class UserDataDeleted:
    cancelled: int
    deleted: int
    community: CommunityDataDeleted


class GenerationService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        platform: Platform,
        lifecycle: Lifecycle,
        store: MediaStore,
        flags: FeatureFlags,
    ) -> None:
        self._sessions = sessions
        self._platform = platform
        self._lifecycle = lifecycle
        self._store = store
        self._flags = flags

    # Creating

    async def create(self, request: CreateRequest) -> Created:
        _check_create(request)
        if replay := await self._replay(
            request.user_id, request.idempotency_key, request.fingerprint()
        ):
            return replay
        images = parse_input_images(request.input_images, max_count=MAX_IMAGES)
        await refuse_private_hosts(images)
        batches = [
            await self._batch(request, model_id, [i.provider_url for i in images])
            for model_id in request.model_ids
        ]
        workspace = request.workspace_id or await self._platform.personal_workspace(
            request.user_id
        )
        total = sum(b.quote.price_micros for b in batches)
        payer = await self._platform.payer(workspace, request.user_id, total)
        shown = await store_inline_images(images, self._store, f"inputs/{uuid.uuid4()}")
        display = [i.display_url for i in shown]
        jobs: list[tuple[Job, list[Generation]]] = []
        for batch in batches:
            jobs.append(
                _new_job(request, batch, workspace, payer, display, request.prompt)
            )
        return await self._commit_and_hold(
            request.user_id,
            request.idempotency_key,
            request.fingerprint(),
            jobs,
            payer,
            total,
        )

    async def _batch(
        self, request: CreateRequest, model_id: str, images: list[str]
    ) -> Batch:
        model = await self._platform.model(model_id)
        if not model.enabled:
            raise InvalidArgument.for_field(
                "model", f"{model.name} is currently disabled."
            )
        if model.type == "video" and not self._flags.enabled(VIDEO_GENERATION):
            raise FeatureDisabled("Video generation is turned off right now.")
        if model.type != request.type or model.type not in ("image", "video"):
            raise InvalidArgument.for_field(
                "type", f"{model.name} makes {model.type}s, not {request.type}s."
            )
        _check_images(model, len(images))
        options = dict(request.options_by_model.get(model_id, request.options))
        count = 1
        if model.type == "image":
            count = request.num_images or _int_option(options.get("num_images")) or 1
            if not 1 <= count <= MAX_IMAGES:
                raise InvalidArgument.for_field(
                    "numImages", f"Ask for 1 to {MAX_IMAGES} images."
                )
            options.pop("num_images", None)
        quote = await self._platform.quote(model_id, options, count)
        endpoint = choose_endpoint(model, bool(images))
        resolved = dict(quote.resolved_options)
        payload = generation_payload(
            model, endpoint, request.prompt, resolved, count, images
        )
        return Batch(model, quote, count, endpoint, payload, dict(resolved))

    async def create_upscale(self, request: UpscaleRequest) -> Created:
        if replay := await self._replay(
            request.user_id, request.idempotency_key, request.fingerprint()
        ):
            return replay
        source = await self._source(request.user_id, request.source_id)
        if source.status != "completed" or not source.result_url:
            raise FailedPrecondition("Only a completed generation can be upscaled.")
        model = await self._upscaler(request.model_id, source)
        quote = await self._platform.quote(model.id, dict(request.options), 1)
        workspace = request.workspace_id or source.workspace_id.hex
        workspace = str(uuid.UUID(workspace))
        payer = await self._platform.payer(
            workspace, request.user_id, quote.price_micros
        )
        source_type = "video" if source.type == "video" else "image"
        resolved = dict(quote.resolved_options)
        options: dict[str, object] = {
            **resolved,
            "sourceGenerationId": str(source.id),
            "sourceUrl": source.result_url,
            "sourceType": source_type,
        }
        batch = Batch(
            model,
            quote,
            1,
            model.endpoint,
            upscale_payload(
                model, source.provider_url or source.result_url, source_type, resolved
            ),
            options,
        )
        job, rows = _new_upscale(request.user_id, batch, workspace, payer, source)
        return await self._commit_and_hold(
            request.user_id,
            request.idempotency_key,
            request.fingerprint(),
            [(job, rows)],
            payer,
            quote.price_micros,
        )

    async def quote_upscale(
        self, user_id: str, source_id: str, model_id: str, options: Mapping[str, str]
    ) -> tuple[catalog_pb2.QuotePriceResponse, catalog_pb2.Model, Generation]:
        source = await self._source(user_id, source_id)
        model = await self._upscaler(model_id, source)
        quote = await self._platform.quote(model.id, dict(options), 1)
        return quote, model, source

    async def _source(self, user_id: str, source_id: str) -> Generation:
        parsed = parse_id(source_id)
        async with self._sessions() as db:
            rows = await repository.owned(
                db, uuid.UUID(user_id), [parsed] if parsed else []
            )
        if not rows:
            raise NotFound("Source generation not found.")
        return rows[0]

    async def _upscaler(self, model_id: str, source: Generation) -> catalog_pb2.Model:
        source_type = "video" if source.type == "video" else "image"
        wanted = model_id or UPSCALER_FOR[source_type]
        try:
            model = await self._platform.model(wanted)
        except NotFound:
            raise InvalidArgument.for_field(
                "modelId", f'There is no upscaler "{wanted}".'
            ) from None
        if model.category != "upscale" or not model.enabled:
            raise InvalidArgument.for_field(
                "modelId", f"{model.name} is not an upscaler."
            )
        if model.type != source_type:
            raise InvalidArgument.for_field(
                "modelId", f"{model.name} upscales {model.type}s, not {source_type}s."
            )
        return model

    async def _replay(self, user_id: str, key: str, fingerprint: str) -> Created | None:
        if not key:
            return None
        async with self._sessions() as db:
            claim = await db.get(KeyClaim, (uuid.UUID(user_id), key))
            if claim is None:
                return None
            if claim.fingerprint != fingerprint:
                raise IdempotencyKeyReused(
                    "This Idempotency-Key was used for a different request."
                )
            ids = [uuid.UUID(i) for i in claim.generation_ids]
            rows = await repository.generations_by_ids(db, ids)
        if not rows:
            raise IdempotencyKeyReused(
                "This Idempotency-Key was used for a request that did not go through."
            )
        payer_balance = await self._platform.balance(
            rows[0].payer_type, str(rows[0].payer_id)
        )
        personal = rows[0].credit_source in ("personal", "personal_fallback")
        return Created(
            rows,
            sum(r.credits_micros for r in rows),
            rows[0].credit_source,
            payer_balance,
            payer_balance if personal else None,
            replayed=True,
        )

    async def _commit_and_hold(
        self,
        user_id: str,
        key: str,
        fingerprint: str,
        jobs: list[tuple[Job, list[Generation]]],
        payer: ChosenPayer,
        total: int,
    ) -> Created:
        ids = [str(g.id) for _, rows in jobs for g in rows]
        async with self._sessions.begin() as db:
            if key:
                earlier = await repository.claim_create_request(
                    db, uuid.UUID(user_id), key, fingerprint, ids
                )
                if earlier is not None:
                    raise IdempotencyKeyReused(
                        "A request with this Idempotency-Key is already being handled."
                    )
            for job, rows in jobs:
                await repository.add_job(db, job, rows)
        remaining = payer.balance - total
        try:
            for job, _ in jobs:
                remaining = await self._lifecycle.place_holds(job.id, payer)
        except Exception:
            await self._undo(user_id, key, [job for job, _ in jobs])
            raise
        async with self._sessions() as db:
            rows = await repository.generations_by_ids(db, [uuid.UUID(i) for i in ids])
        personal = payer.source in ("personal", "personal_fallback")
        log.info("generation.created", count=len(rows), total_micros=total)
        return Created(
            rows, total, payer.source, remaining, remaining if personal else None
        )

    async def _undo(self, user_id: str, key: str, jobs: Sequence[Job]) -> None:
        """A batch of a multi-model request could not be paid: drop them all."""
        for job in jobs:
            async with self._sessions() as db:
                still = await repository.job(db, job.id)
            if still is not None:
                try:
                    await self._lifecycle.drop(job.id)
                except DomainError as error:
                    # The worker finishes a job left in `holding`.
                    log.warning("generation.drop_deferred", error=error.code)
        if key:
            async with self._sessions.begin() as db:
                await repository.forget_create_request(db, uuid.UUID(user_id), key)

    # Reading

    async def get(self, user_id: str, generation_id: str) -> tuple[Generation, Job]:
        parsed = parse_id(generation_id)
        async with self._sessions() as db:
            rows = await repository.owned(
                db, uuid.UUID(user_id), [parsed] if parsed else []
            )
            if not rows:
                raise NotFound(NOT_FOUND)
            job = await repository.job(db, rows[0].job_id)
        assert job is not None
        return rows[0], job

    async def list(
        self,
        user_id: str,
        *,
        workspace_id: str,
        type_: str,
        status: str,
        page_size: int,
        page_token: str,
        offset: int,
    ) -> Page:
        if status and status not in STATUS_FILTERS:
            raise InvalidArgument.for_field(
                "status", f"status must be one of {', '.join(STATUS_FILTERS)}."
            )
        if offset < 0:
            raise InvalidArgument.for_field("offset", "offset must be 0 or more.")
        limit = page_size or DEFAULT_PAGE
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidArgument.for_field("limit", f"limit must be 1 to {MAX_PAGE}.")
        workspace = await self._workspace_to_list(user_id, workspace_id)
        cursor = decode_cursor(page_token) if page_token else None
        owner = uuid.UUID(user_id)
        async with self._sessions() as db:
            rows = await repository.list_generations(
                db,
                owner,
                workspace,
                type_=type_ or None,
                status=status or None,
                limit=limit + 1,
                cursor=cursor,
                offset=offset,
            )
            counts = await repository.counts(db, owner, workspace)
        token = ""
        if len(rows) > limit:
            rows = rows[:limit]
            token = encode_cursor(rows[-1].started_at, rows[-1].id)
        return Page(rows, token, counts)

    async def _workspace_to_list(self, user_id: str, workspace_id: str) -> uuid.UUID:
        if not workspace_id:
            return uuid.UUID(await self._platform.personal_workspace(user_id))
        parsed = parse_id(workspace_id)
        if parsed is None:
            raise InvalidArgument.for_field(
                "workspace_id", "workspaceId must be a UUID."
            )
        return parsed

    async def gallery(
        self,
        user_id: str,
        workspace_id: str,
        type_: str,
        page_size: int,
        page_token: str,
    ) -> Page:
        parsed = parse_id(workspace_id)
        if parsed is None:
            raise NotFound("Workspace not found.")
        await self._platform.is_member(str(parsed), user_id)
        limit = min(page_size or DEFAULT_PAGE, MAX_PAGE)
        cursor = decode_cursor(page_token) if page_token else None
        async with self._sessions() as db:
            rows = await repository.gallery(
                db, parsed, type_=type_ or None, limit=limit + 1, cursor=cursor
            )
        token = ""
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            token = encode_cursor(last.completed_at or last.started_at, last.id)
        visible = [
            row
            for row in rows
            if row.user_id == uuid.UUID(user_id)
            or await self._platform.can_see(
                str(parsed), user_id, str(row.user_id), _content_type(row)
            )
        ]
        return Page(visible, token, {})

    # Changing

    async def cancel(self, user_id: str, generation_id: str) -> tuple[Generation, int]:
        generation, _ = await self.get(user_id, generation_id)
        if generation.status in FINISHED:
            raise FailedPrecondition(
                "Only a pending or processing generation can be cancelled."
            )
        cancelled = await self._lifecycle.cancel(generation)
        if cancelled is None:
            raise FailedPrecondition(
                "Only a pending or processing generation can be cancelled."
            )
        released = cancelled.credits_micros if cancelled.hold_id else 0
        return cancelled, released

    async def delete(self, user_id: str, ids: Sequence[str]) -> int:
        if not 1 <= len(ids) <= MAX_BULK_DELETE:
            raise InvalidArgument.for_field(
                "ids", f"Give 1 to {MAX_BULK_DELETE} generation ids."
            )
        parsed = [parse_id(i) for i in ids]
        if len(set(ids)) != len(ids):
            raise InvalidArgument.for_field("ids", "The same id is listed twice.")
        wanted = [p for p in parsed if p is not None]
        async with self._sessions() as db:
            rows = await repository.owned(db, uuid.UUID(user_id), wanted)
        if len(rows) != len(ids):
            if len(ids) == 1:
                raise NotFound(NOT_FOUND)
            raise PermissionDenied(
                "Some generations do not exist or do not belong to you."
            )
        for row in rows:
            if row.status not in FINISHED:
                await self._lifecycle.cancel(row)
        async with self._sessions.begin() as db:
            await repository.soft_delete(db, rows)
        return len(rows)

    # Operators (the admin service)

    async def user_summary(
        self, user_id: str, recent_limit: int
    ) -> tuple[dict[str, int], Sequence[Generation]]:
        """A user's generation counts by type and their latest generations."""
        owner = _owner(user_id)
        if not 0 <= recent_limit <= MAX_RECENT_FOR_OPERATORS:
            raise InvalidArgument.for_field(
                "recent_limit",
                f"recent_limit must be 0 to {MAX_RECENT_FOR_OPERATORS}.",
            )
        async with self._sessions() as db:
            counts = await repository.counts_of_user(db, owner)
            recent = (
                await repository.latest_of_user(db, owner, recent_limit)
                if recent_limit
                else []
            )
        return counts, recent

    async def delete_user_data(self, user_id: str) -> UserDataDeleted:
        """Delete the user's posts, likes and share links, then cancel
        (releasing holds) and soft-delete every generation of theirs. A
        repeat finds nothing left."""
        owner = _owner(user_id)
        async with self._sessions.begin() as db:
            community = await repository.delete_community_data_of(db, owner)
        cancelled = deleted = 0
        while True:
            async with self._sessions() as db:
                rows = await repository.undeleted_of_user(db, owner, DELETE_BATCH)
            if not rows:
                break
            for row in rows:
                if row.status not in FINISHED and await self._lifecycle.cancel(row):
                    cancelled += 1
            async with self._sessions.begin() as db:
                await repository.soft_delete(db, rows)
            deleted += len(rows)
        log.info(
            "generation.user_data_deleted",
            user_id=user_id,
            cancelled=cancelled,
            deleted=deleted,
            posts=community.posts,
        )
        return UserDataDeleted(cancelled, deleted, community)

    async def on_webhook(self, event: WebhookEvent) -> bool:
        """Finish a job from fal's webhook; False when it was already handled.
        A webhook that beats the worker's own record of the request id is
        answered NOT_FOUND, so that fal delivers it again."""
        async with self._sessions() as db:
            job = await repository.job_by_request(db, event.request_id)
        if job is None:
            raise NotFound("No job waits for this fal request yet.")
        async with self._sessions.begin() as db:
            first = await repository.record_delivery(db, event.request_id)
        if not first or job.state == "finished":
            return False
        try:
            if not event.ok:
                raise event.failure()
            return await self._lifecycle.complete(job, event.outputs(), job.simulated)
        except FalError as error:
            return await self._lifecycle.fail(job, Failure.from_fal(error))
        except MediaStoreError:
            return await self._lifecycle.fail(job, Failure.of("api_error"))

    async def set_sharing(
        self, user_id: str, generation_id: str, shared: bool
    ) -> Generation:
        generation, _ = await self.get(user_id, generation_id)
        async with self._sessions.begin() as db:
            await repository.share_with_workspace(db, generation.id, shared)
        generation.shared_with_workspace = shared
        return generation


def _owner(user_id: str) -> uuid.UUID:
    owner = parse_id(user_id)
    if owner is None:
        raise InvalidArgument.for_field("user_id", "user_id must be a UUID.")
    return owner


def _check_create(request: CreateRequest) -> None:
    violations: list[FieldViolation] = []
    prompt = request.prompt.strip()
    if not prompt:
        violations.append(FieldViolation("prompt", "Write a prompt."))
    elif len(prompt) > MAX_PROMPT_CHARS:
        violations.append(
            FieldViolation(
                "prompt", f"The prompt is over {MAX_PROMPT_CHARS} characters."
            )
        )
    if not 1 <= len(request.model_ids) <= MAX_MODELS:
        violations.append(FieldViolation("model", f"Choose 1 to {MAX_MODELS} models."))
    elif len(set(request.model_ids)) != len(request.model_ids):
        violations.append(FieldViolation("model", "A model is listed twice."))
    if request.type not in ("image", "video"):
        violations.append(FieldViolation("type", "type must be image or video."))
    if not 0 <= request.num_images <= MAX_IMAGES:
        violations.append(
            FieldViolation("numImages", f"Ask for 1 to {MAX_IMAGES} images.")
        )
    if request.workspace_id and parse_id(request.workspace_id) is None:
        violations.append(FieldViolation("workspaceId", "workspaceId must be a UUID."))
    if len(request.idempotency_key) > 255:
        violations.append(
            FieldViolation(
                "idempotencyKey", "The Idempotency-Key is over 255 characters."
            )
        )
    if violations:
        raise InvalidArgument(violations[0].message, violations=tuple(violations))


def _check_images(model: catalog_pb2.Model, count: int) -> None:
    if model.image_input == "required" and count == 0:
        raise InvalidArgument.for_field(
            "inputImages", f"{model.name} needs a reference image."
        )
    limit = model.max_input_images if model.image_input != "none" else 0
    if model.type == "video" and model.image_input != "none":
        limit = max(limit, 1)
    if count > limit:
        raise InvalidArgument.for_field(
            "inputImages",
            f"{model.name} takes at most {limit} reference image"
            f"{'' if limit == 1 else 's'}.",
        )


def _int_option(value: str | None) -> int:
    try:
        return int(value) if value is not None else 0
    except ValueError:
        raise InvalidArgument.for_field(
            "options.num_images", "num_images must be a whole number."
        ) from None


def _content_type(row: Generation) -> str:
    return "video" if row.type == "video" else "image"


def _new_job(
    request: CreateRequest,
    batch: Batch,
    workspace: str,
    payer: ChosenPayer,
    display_images: list[str],
    prompt: str,
) -> tuple[Job, list[Generation]]:
    now = datetime.now(UTC)
    wait = batch.model.max_wait_seconds or DEFAULT_WAIT[batch.model.type]
    job = Job(
        id=uuid.uuid4(),
        user_id=uuid.UUID(request.user_id),
        kind="generate",
        model_id=batch.model.id,
        endpoint=batch.endpoint,
        payload=batch.payload,
        state="holding",
        due_at=now + timedelta(seconds=HOLDING_GRACE_SECONDS),
        deadline_at=now + timedelta(seconds=wait),
        trace_context=current_traceparent(),
    )
    shares = _split(batch.quote.price_micros, batch.count)
    rows = [
        Generation(
            id=uuid.uuid4(),
            job_id=job.id,
            user_id=job.user_id,
            workspace_id=uuid.UUID(workspace),
            type=batch.model.type,
            model_id=batch.model.id,
            model_name=batch.model.name,
            prompt=prompt.strip(),
            options={
                **batch.options,
                "num_images": str(batch.count),
                "inputImages": display_images,
                "imageIndex": index,
                "creditSource": payer.source,
            },
            image_index=index,
            credits_micros=shares[index],
            payer_type=payer.owner_type,
            payer_id=uuid.UUID(payer.owner_id),
            credit_source=payer.source,
            max_wait_seconds=wait,
            status="pending",
            started_at=now,
        )
        for index in range(batch.count)
    ]
    return job, rows


def _new_upscale(
    user_id: str, batch: Batch, workspace: str, payer: ChosenPayer, source: Generation
) -> tuple[Job, list[Generation]]:
    now = datetime.now(UTC)
    wait = batch.model.max_wait_seconds or DEFAULT_WAIT["upscale"]
    job = Job(
        id=uuid.uuid4(),
        user_id=uuid.UUID(user_id),
        kind="upscale",
        model_id=batch.model.id,
        endpoint=batch.endpoint,
        payload=batch.payload,
        state="holding",
        due_at=now + timedelta(seconds=HOLDING_GRACE_SECONDS),
        deadline_at=now + timedelta(seconds=wait),
        trace_context=current_traceparent(),
    )
    row = Generation(
        id=uuid.uuid4(),
        job_id=job.id,
        user_id=job.user_id,
        workspace_id=uuid.UUID(workspace),
        type="upscale",
        model_id=batch.model.id,
        model_name=batch.model.name,
        prompt=f"Upscale: {source.model_name}",
        options={**batch.options, "creditSource": payer.source},
        image_index=0,
        credits_micros=batch.quote.price_micros,
        payer_type=payer.owner_type,
        payer_id=uuid.UUID(payer.owner_id),
        credit_source=payer.source,
        max_wait_seconds=wait,
        source_generation_id=source.id,
        status="pending",
        started_at=now,
    )
    return job, [row]


def _split(total: int, count: int) -> list[int]:
    """Split a price over the images; the first carries the remainder."""
    share, rest = divmod(total, count)
    return [share + (rest if index == 0 else 0) for index in range(count)]
