"""The generation worker: `python -m services.generation.worker`.

Several may run. Each leases due jobs from PostgreSQL (`FOR UPDATE SKIP
LOCKED`, a lease that expires), takes one step of each, and hands it back with
the time it is next due:

    holding     a create request stopped before its holds were placed:
                place them (keyed, so none twice) or drop the job
    queued      post to fal; the request id and URLs are stored before
                anything else is done with the answer
    submitting  a worker died or lost the connection while posting: fal may
                or may not have it, so it is never posted again; it ends at
                its timeout with the credits released
    submitted   poll fal (webhooks usually finish it first), fetch the
                result, store outputs, capture; or fail and release

A job past its deadline is cancelled at fal and failed with a timeout. A
killed worker's lease runs out and another worker carries on from the state
stored, so nothing is posted or charged twice.

Each step is a span in the trace of the request that created the job, and
is counted by state and outcome; the worker serves its metrics, the job
backlog among them, on METRICS_PORT (services/generation/telemetry.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import uuid
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.config import Settings, get_settings
from libs.db import create_engine, session_factory
from libs.errors import DomainError, InsufficientCredits
from libs.logs import configure_logging, get_logger
from libs.metrics import MetricsListener
from libs.process import run_event_loop
from libs.runtime import Runtime
from libs.tracing import make_current
from services.generation import repository
from services.generation.events import Listener
from services.generation.fal import FalClient, FalError
from services.generation.lifecycle import JOBS_CHANNEL, Failure, Lifecycle, notify
from services.generation.models import SCHEMA, Generation, Job
from services.generation.service import HOLDING_GRACE_SECONDS
from services.generation.storage import LocalMediaStore, MediaStoreError
from services.generation.telemetry import (
    end_step,
    publish_backlog_forever,
    start_step,
)
from services.generation.upstream import ChosenPayer, Platform

log = get_logger(__name__)

# Posting again after fal answered 429 or 5xx (it did not take the job).
SUBMIT_RETRIES = 3
SUBMIT_RETRY_DELAY = 2.0
SETTLE_EVERY_SECONDS = 5.0
# fal retries its own side; after this many bad answers in a row, give up.
PROVIDER_ERRORS_TOLERATED = 4
STOP_GRACE_SECONDS = 20.0
FIRST_POLL_SECONDS = 0.3


def _seconds_until(moment: datetime) -> float:
    return (moment - datetime.now(UTC)).total_seconds()


def _recorded_payer(generation: Generation) -> ChosenPayer:
    """The payer the create request chose, as its generation recorded it.
    The tags are those ResolvePayer gives every payment in a workspace: the
    create request may have placed a hold before it died, and billing
    refuses a key asked for again with anything different."""
    tags = {
        "workspace_id": str(generation.workspace_id),
        "member_id": str(generation.user_id),
    }
    return ChosenPayer(
        generation.payer_type,
        str(generation.payer_id),
        generation.credit_source,
        0,
        tags,
    )


class Worker:
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        platform: Platform,
        lifecycle: Lifecycle,
        fal: FalClient,
        name: str | None = None,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._platform = platform
        self._lifecycle = lifecycle
        self._fal = fal
        self.name = (
            name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        )
        self._running: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._doorbell = asyncio.Event()

    async def run(self) -> None:
        """Lease and advance jobs until cancelled or stopped."""
        settle = asyncio.create_task(self._settle_forever())
        try:
            while not self._stopping.is_set():
                claimed = await self._claim()
                if not claimed:
                    await self._idle()
                for job in claimed:
                    task = asyncio.create_task(self._advance_leased(job))
                    self._running.add(task)
                    task.add_done_callback(self._running.discard)
                if len(self._running) >= self._settings.worker_concurrency:
                    await asyncio.wait(
                        self._running, return_when=asyncio.FIRST_COMPLETED
                    )
            # Stopping: let the steps in hand finish (each is short and
            # bounded by provider timeouts); a step cut off later is
            # resumed by another worker once its lease runs out.
            if self._running:
                await asyncio.wait(self._running, timeout=STOP_GRACE_SECONDS)
        finally:
            settle.cancel()
            for task in [settle, *self._running]:
                task.cancel()
            await asyncio.gather(settle, *self._running, return_exceptions=True)

    def stop(self) -> None:
        """Take no more jobs; run() returns once the current steps end."""
        self._stopping.set()
        self._doorbell.set()

    def wake(self) -> None:
        """A job became due (see lifecycle.ring_workers)."""
        self._doorbell.set()

    async def _idle(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                self._doorbell.wait(), self._settings.worker_idle_interval
            )
        self._doorbell.clear()

    async def _claim(self) -> list[Job]:
        room = self._settings.worker_concurrency - len(self._running)
        if room <= 0:
            return []
        try:
            async with self._sessions.begin() as db:
                return await repository.claim_jobs(
                    db, self.name, room, self._settings.worker_lease
                )
        except Exception as error:  # the database is away: try again shortly
            log.warning("worker.claim_failed", error=str(error)[:300])
            await asyncio.sleep(1.0)
            return []

    async def _advance_leased(self, job: Job) -> None:
        delay = self._settings.fal_poll_interval
        state, outcome = job.state, "cancelled"
        # This task is the step's own: the span is current until it ends.
        span = start_step(job)
        make_current(span)
        try:
            delay = await self.advance(job)
            outcome = "advanced"
        except (DomainError, MediaStoreError) as error:
            outcome = "failed"
            log.warning("worker.step_failed", job_id=str(job.id), error=str(error))
        except Exception:
            outcome = "crashed"
            log.exception("worker.step_crashed", job_id=str(job.id))
        finally:
            end_step(span, state, outcome)
        with contextlib.suppress(Exception):
            async with self._sessions.begin() as db:
                await repository.release_lease(db, job, self.name, delay)

    async def advance(self, job: Job) -> float:
        """Take one step; returns seconds until the job is next due."""
        if job.state == "holding":
            return await self._finish_holding(job)
        async with self._sessions.begin() as db:
            finished = await repository.job_finished_if_done(db, job.id)
        if finished:
            # Every generation of it was cancelled (or ended otherwise): stop
            # the provider's work too. A cancel of one image of several
            # leaves the job running for the others.
            if job.cancel_requested:
                await self._cancel_at_provider(job)
            return 0.0
        if _seconds_until(job.deadline_at) <= 0:
            # Failed first: fal answers the cancel with an ERROR webhook,
            # which must find the generation already ended by the timeout.
            await self._lifecycle.fail(job, Failure.of("timeout"))
            await self._cancel_at_provider(job)
            return 0.0
        if job.state == "queued":
            return await self._submit(job)
        if job.state == "submitted":
            return await self._poll(job)
        # submitting: never posted twice; wait for its deadline.
        return max(0.0, min(_seconds_until(job.deadline_at), 60.0))

    async def _finish_holding(self, job: Job) -> float:
        age = -_seconds_until(job.created_at)
        if age < HOLDING_GRACE_SECONDS:
            return HOLDING_GRACE_SECONDS - age
        async with self._sessions() as db:
            rows = await repository.generations_of_job(db, job.id)
        if not rows:
            async with self._sessions.begin() as db:
                await repository.delete_job(db, job.id)
            return 0.0
        try:
            await self._lifecycle.place_holds(job.id, _recorded_payer(rows[0]))
        except InsufficientCredits:
            log.info("worker.holding_dropped", job_id=str(job.id))
        return 0.0

    async def _submit(self, job: Job) -> float:
        async with self._sessions.begin() as db:
            mine = await repository.move_job(
                db, job.id, from_states=("queued",), state="submitting"
            )
        if not mine:
            return 0.0
        try:
            submission = await self._fal.submit(
                job.endpoint, job.payload, webhook_url=self._settings.fal_webhook_url
            )
        except FalError as error:
            return await self._submit_refused(job, error)
        async with self._sessions.begin() as db:
            await repository.update_job(
                db,
                job.id,
                state="submitted",
                request_id=submission.request_id,
                status_url=submission.status_url,
                response_url=submission.response_url,
                cancel_url=submission.cancel_url,
                queue_position=submission.queue_position,
                simulated=submission.simulated,
                submitted_at=datetime.now(UTC),
            )
        log.info("generation.submitted", job_id=str(job.id), provider="fal")
        await self._lifecycle.start_processing(job)
        # Fast jobs are often done by the first look; slow ones are then
        # polled at the normal interval (webhooks usually come first).
        return min(FIRST_POLL_SECONDS, self._settings.fal_poll_interval)

    async def _submit_refused(self, job: Job, error: FalError) -> float:
        if error.retryable:
            # fal did not take it (no connection, 429, 5xx): post again later.
            if job.attempts < SUBMIT_RETRIES:
                async with self._sessions.begin() as db:
                    await repository.update_job(
                        db, job.id, state="queued", last_error=str(error)[:500]
                    )
                return SUBMIT_RETRY_DELAY * job.attempts
        elif error.status is None:
            # Sent, then the connection broke: fal may have the job. It is
            # never posted again; it ends at its timeout, credits released.
            log.warning("generation.submit_unknown", job_id=str(job.id))
            return max(0.0, _seconds_until(job.deadline_at))
        await self._lifecycle.fail(job, Failure.from_fal(error))
        return 0.0

    async def _poll(self, job: Job) -> float:
        assert job.status_url is not None
        assert job.response_url is not None
        try:
            status = await self._fal.status(job.status_url)
            if status.state != "COMPLETED":
                await self._record_progress(job, status.queue_position, status.progress)
                if job.errors:
                    async with self._sessions.begin() as db:
                        await repository.update_job(db, job.id, errors=0)
                return self._settings.fal_poll_interval
            outputs = await self._fal.result(job.response_url)
        except FalError as error:
            if error.retryable and job.errors + 1 < PROVIDER_ERRORS_TOLERATED:
                async with self._sessions.begin() as db:
                    await repository.update_job(
                        db, job.id, errors=job.errors + 1, last_error=str(error)[:500]
                    )
                return self._settings.fal_poll_interval * (job.errors + 1)
            await self._lifecycle.fail(job, Failure.from_fal(error))
            return 0.0
        try:
            await self._lifecycle.complete(job, outputs, job.simulated)
        except MediaStoreError as error:
            log.warning(
                "generation.output_unavailable", job_id=str(job.id), error=str(error)
            )
            await self._lifecycle.fail(job, Failure.of("api_error"))
        return 0.0

    async def _record_progress(
        self, job: Job, position: int | None, progress: str | None
    ) -> None:
        if position == job.queue_position and progress == job.progress:
            return
        async with self._sessions.begin() as db:
            await repository.update_job(
                db, job.id, queue_position=position, progress=progress
            )
            ids = [g.id for g in await repository.generations_of_job(db, job.id)]
            await notify(db, ids)

    async def _cancel_at_provider(self, job: Job) -> None:
        if job.cancel_url and job.state == "submitted":
            try:
                outcome = await self._fal.cancel(job.cancel_url)
                log.info("generation.cancel_sent", job_id=str(job.id), outcome=outcome)
            except FalError as error:
                log.warning(
                    "generation.cancel_failed", job_id=str(job.id), error=str(error)
                )
        async with self._sessions.begin() as db:
            await repository.update_job(db, job.id, cancel_requested=False)

    async def _settle_forever(self) -> None:
        while True:
            await asyncio.sleep(SETTLE_EVERY_SECONDS)
            try:
                await self._lifecycle.settle_pending()
            except Exception as error:
                log.warning("worker.settle_failed", error=type(error).__name__)


async def run_worker(settings: Settings) -> None:
    engine = create_engine(settings, SCHEMA)
    runtime = Runtime(settings, "generation-worker")
    await runtime.start()
    store = LocalMediaStore.from_settings(settings)
    fal = FalClient.from_settings(settings)
    platform = Platform(runtime.upstreams)
    sessions = session_factory(engine)
    lifecycle = Lifecycle(sessions, platform, store)
    worker = Worker(settings, sessions, platform, lifecycle, fal)
    doorbell = Listener(engine, JOBS_CHANNEL, lambda _payload: worker.wake())
    doorbell.start()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, worker.stop)
    metrics = MetricsListener.from_settings(settings)
    backlog = asyncio.create_task(publish_backlog_forever(sessions))
    log.info("worker.started", worker=worker.name)
    try:
        await worker.run()
        log.info("worker.stopped", worker=worker.name)
    finally:
        backlog.cancel()
        if metrics is not None:
            metrics.stop()
        await doorbell.close()
        await fal.close()
        await store.close()
        await runtime.stop()
        await engine.dispose()


def main() -> None:
    settings = get_settings()
    configure_logging(settings, "generation-worker")
    run_event_loop(run_worker(settings))
    sys.exit(0)


if __name__ == "__main__":
    main()
