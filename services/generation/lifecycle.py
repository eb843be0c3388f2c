"""How a generation ends and how its credits follow.

Every end is a conditional update from an unfinished status, so of a webhook,
a poll, a timeout, a cancel and a second worker racing, exactly one moves a
generation; the winner records the settlement it owes (capture on
completion, release otherwise) in the same transaction, and `settle` then
asks billing, with keys made from the generation id. If billing does not
answer, the row stays unsettled and the worker's sweep settles it later.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.errors import DomainError, InsufficientCredits
from libs.logs import get_logger
from services.generation import repository
from services.generation.fal import FalError, Outputs
from services.generation.models import Generation, Job
from services.generation.repository import UNFINISHED
from services.generation.storage import MediaStore
from services.generation.upstream import ChosenPayer, Platform

log = get_logger(__name__)

EVENTS_CHANNEL = "generation_events"
# Rung when a job becomes due now, so that an idle worker claims it at once.
JOBS_CHANNEL = "generation_jobs"
REFUNDED = "Your credits were refunded."
# Failures that are the provider's doing, reported to the error log.
PROVIDER_FAULTS = frozenset({"api_error", "rate_limit", "timeout", "unknown"})
FAILURE_MESSAGES = {
    "content_violation": "The provider refused this request under its content policy.",
    "timeout": "The generation took too long and was stopped.",
    "cancelled": "The generation was cancelled.",
    "rate_limit": "The provider is busy right now; try again in a moment.",
    "api_error": "The provider could not complete the generation.",
    "invalid_input": "The provider refused the request's options or images.",
    "insufficient_credits": "There were not enough credits to start it.",
    "unknown": "The generation failed.",
}


def failure_message(error_type: str, detail: str = "") -> str:
    sentence = FAILURE_MESSAGES.get(error_type, FAILURE_MESSAGES["unknown"])
    if detail and error_type == "invalid_input":
        sentence = f"{sentence[:-1]}: {detail[:200]}"
    return f"{sentence} {REFUNDED}"


@dataclass(frozen=True)
class Failure:
    error_type: str
    message: str

    @classmethod
    def from_fal(cls, error: FalError) -> Failure:
        return cls(error.error_type, failure_message(error.error_type, error.detail))

    @classmethod
    def of(cls, error_type: str) -> Failure:
        return cls(error_type, failure_message(error_type))


async def ring_workers(db: AsyncSession) -> None:
    """Wake idle workers when this transaction commits."""
    await db.execute(text("SELECT pg_notify(:channel, '')"), {"channel": JOBS_CHANNEL})


async def notify(db: AsyncSession, ids: Sequence[uuid.UUID]) -> None:
    """Tell watchers (WatchGeneration) that these rows changed; delivered on
    commit."""
    for generation_id in ids:
        await db.execute(
            text("SELECT pg_notify(:channel, :id)"),
            {"channel": EVENTS_CHANNEL, "id": str(generation_id)},
        )


class Lifecycle:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        platform: Platform,
        store: MediaStore,
    ) -> None:
        self._sessions = sessions
        self._platform = platform
        self._store = store

    async def place_holds(self, job_id: uuid.UUID, payer: ChosenPayer) -> int:
        """Hold each generation's credits, then let the worker have the job.
        Returns the payer's balance afterwards. On InsufficientCredits every
        hold made is released and the job is removed before it re-raises."""
        async with self._sessions() as db:
            generations = await repository.generations_of_job(db, job_id)
        balance = payer.balance
        try:
            for generation in generations:
                if generation.credits_micros == 0:
                    continue
                reply = await self._platform.hold(
                    str(generation.id),
                    payer,
                    generation.credits_micros,
                    generation.type,
                )
                balance = reply.balance_after_micros
                async with self._sessions.begin() as db:
                    await repository.set_hold(db, generation.id, reply.hold_id)
        except InsufficientCredits:
            await self.drop(job_id)
            raise
        async with self._sessions.begin() as db:
            await repository.move_job(
                db, job_id, from_states=("holding",), state="queued", due_at=func.now()
            )
            await ring_workers(db)
            await repository.transition(
                db,
                [g.id for g in generations],
                allowed=("pending",),
                values={"queued_at": func.now()},
            )
        return balance

    async def drop(self, job_id: uuid.UUID) -> None:
        """Release a job's holds and remove it: it was never paid for."""
        async with self._sessions() as db:
            generations = await repository.generations_of_job(db, job_id)
        for generation in generations:
            if generation.hold_id:
                await self._platform.release(str(generation.id), generation.hold_id)
        async with self._sessions.begin() as db:
            await repository.delete_job(db, job_id)
        log.info("generation.abandoned", job_id=str(job_id))

    async def start_processing(self, job: Job) -> None:
        async with self._sessions.begin() as db:
            moved = await repository.transition(
                db,
                [g.id for g in await repository.generations_of_job(db, job.id)],
                allowed=("pending",),
                values={"status": "processing"},
            )
            await notify(db, [g.id for g in moved])

    async def complete(self, job: Job, outputs: Outputs, simulated: bool) -> bool:
        """Store the outputs and complete what is still unfinished; False when
        nothing was left to complete (a late or repeated result)."""
        async with self._sessions() as db:
            waiting = [
                g
                for g in await repository.generations_of_job(db, job.id)
                if g.status in UNFINISHED
            ]
        if not waiting:
            return False
        completed: list[uuid.UUID] = []
        for generation in waiting:
            index = generation.image_index
            source = (
                outputs.urls[index] if index < len(outputs.urls) else outputs.urls[0]
            )
            stored = await self._store.copy_from(
                source,
                f"generations/{generation.id}",
                thumbnail_source=outputs.thumbnail_url,
            )
            async with self._sessions.begin() as db:
                moved = await repository.transition(
                    db,
                    [generation.id],
                    allowed=UNFINISHED,
                    values={
                        "status": "completed",
                        "result_url": stored.url,
                        "thumbnail_url": stored.thumbnail_url,
                        "provider_url": source,
                        "simulated": simulated,
                        "completed_at": func.now(),
                        "settlement": "capture",
                    },
                )
                await repository.job_finished_if_done(db, job.id)
                await notify(db, [g.id for g in moved])
            completed.extend(g.id for g in moved)
        await self.settle(completed)
        log.info("generation.completed", job_id=str(job.id), count=len(completed))
        return bool(completed)

    async def fail(self, job: Job, failure: Failure) -> bool:
        async with self._sessions.begin() as db:
            ids = [g.id for g in await repository.generations_of_job(db, job.id)]
            moved = await repository.transition(
                db,
                ids,
                allowed=UNFINISHED,
                values={
                    "status": "failed",
                    "error": failure.message,
                    "error_type": failure.error_type,
                    "completed_at": func.now(),
                    "settlement": "release",
                },
            )
            await repository.job_finished_if_done(db, job.id)
            await notify(db, [g.id for g in moved])
        await self.settle([g.id for g in moved])
        if moved:
            log.info(
                "generation.failed", job_id=str(job.id), error_type=failure.error_type
            )
            await self._report(job, failure)
        return bool(moved)

    async def _report(self, job: Job, failure: Failure) -> None:
        """Tell the operators when the provider (not the user's request) was
        at fault."""
        if failure.error_type not in PROVIDER_FAULTS:
            return
        await self._platform.errors.send(
            "provider",
            failure.message,
            severity="warning" if failure.error_type == "rate_limit" else "error",
            code=failure.error_type,
            user_id=str(job.user_id),
            reference_id=str(job.id),
            details={"model_id": job.model_id, "endpoint": job.endpoint},
        )

    async def cancel(self, generation: Generation) -> Generation | None:
        """Cancel one unfinished generation; None when it had already ended."""
        async with self._sessions.begin() as db:
            moved = await repository.transition(
                db,
                [generation.id],
                allowed=UNFINISHED,
                values={
                    "status": "cancelled",
                    "error": failure_message("cancelled"),
                    "error_type": "cancelled",
                    "cancelled_at": func.now(),
                    "completed_at": func.now(),
                    "settlement": "release",
                },
            )
            if moved:
                await repository.update_job(
                    db, generation.job_id, cancel_requested=True, due_at=func.now()
                )
                await ring_workers(db)
                await notify(db, [generation.id])
        if not moved:
            return None
        await self.settle([generation.id])
        return moved[0]

    async def settle(self, ids: Sequence[uuid.UUID]) -> None:
        """Capture or release what each generation owes; billing down leaves
        them for the sweep."""
        if not ids:
            return
        async with self._sessions() as db:
            rows = await repository.generations_by_ids(db, ids)
        for generation in rows:
            try:
                await self._settle_one(generation)
            except DomainError as error:
                log.warning(
                    "generation.settle_deferred",
                    generation_id=str(generation.id),
                    error=error.code,
                )

    async def settle_pending(self, limit: int = 100) -> int:
        async with self._sessions() as db:
            rows = await repository.unsettled(db, limit)
        for generation in rows:
            await self._settle_one(generation)
        return len(rows)

    async def _settle_one(self, generation: Generation) -> None:
        if generation.settlement is None or generation.settled_at is not None:
            return
        hold = generation.hold_id
        if hold and generation.settlement == "capture":
            await self._platform.capture(
                str(generation.id), hold, generation.credits_micros
            )
        elif hold:
            await self._platform.release(str(generation.id), hold)
        async with self._sessions.begin() as db:
            await repository.mark_settled(db, [generation.id])
