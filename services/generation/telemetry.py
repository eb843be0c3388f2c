"""What the generation worker tells operators: the job backlog, the steps it
takes, and a span per step in the trace of the request that made the job.

The backlog is read with one query every BACKLOG_INTERVAL_SECONDS, never per
job: unfinished jobs by state, and by state how long the job that has waited
longest for a worker has been due (0 when none waits). Every worker reports
the same figures, so read them with max(), not sum(); a wait that keeps
growing means too few workers (WORKER_CONCURRENCY, or more of them).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from prometheus_client import Counter, Gauge
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.logs import get_logger
from libs.tracing import context_of, start_span
from services.generation.models import ACTIVE_JOB_STATES, Job

log = get_logger(__name__)

BACKLOG_INTERVAL_SECONDS = 15.0

JOBS = Gauge(
    "omnihub_generation_jobs",
    "Unfinished generation jobs, by state.",
    ["state"],
)
JOB_WAIT_SECONDS = Gauge(
    "omnihub_generation_job_wait_seconds",
    "How long the job waiting longest for a worker has been due, by state.",
    ["state"],
)
JOB_STEPS = Counter(
    "omnihub_generation_job_steps",
    "Job steps workers took, by the job's state before the step and how the "
    "step ended: advanced, failed (a refusal or provider error, logged), "
    "crashed (a bug, logged with its traceback) or cancelled (the worker "
    "stopped; another takes the job over).",
    ["state", "outcome"],
)


@dataclass(frozen=True)
class Backlog:
    state: str
    jobs: int
    wait_seconds: float


async def read_backlog(db: AsyncSession) -> list[Backlog]:
    """Unfinished jobs by state, with the longest wait for a worker."""
    waiting = (Job.due_at <= func.now()) & or_(
        Job.lease_expires_at.is_(None), Job.lease_expires_at < func.now()
    )
    longest_wait = func.extract(
        "epoch", func.now() - func.min(Job.due_at).filter(waiting)
    )
    rows = await db.execute(
        select(Job.state, func.count(), func.coalesce(longest_wait, 0))
        .where(Job.state.in_(ACTIVE_JOB_STATES))
        .group_by(Job.state)
    )
    return [Backlog(state, int(jobs), float(wait)) for state, jobs, wait in rows]


def publish_backlog(backlog: list[Backlog]) -> None:
    """Set the gauges; a state without jobs reads 0."""
    by_state = {entry.state: entry for entry in backlog}
    for state in ACTIVE_JOB_STATES:
        entry = by_state.get(state, Backlog(state, 0, 0.0))
        JOBS.labels(state).set(entry.jobs)
        JOB_WAIT_SECONDS.labels(state).set(entry.wait_seconds)


async def publish_backlog_forever(
    sessions: async_sessionmaker[AsyncSession],
    interval: float = BACKLOG_INTERVAL_SECONDS,
) -> None:
    while True:
        try:
            async with sessions() as db:
                backlog = await read_backlog(db)
            publish_backlog(backlog)
        except Exception as error:  # the database is away: next time
            log.warning("backlog.read_failed", error=type(error).__name__)
        await asyncio.sleep(interval)


def start_step(job: Job) -> Span:
    """The span of one step of `job`, a child of the creating request's."""
    span = start_span(
        "generation.job.step", SpanKind.CONSUMER, context_of(job.trace_context)
    )
    if span.is_recording():
        span.set_attributes(
            {
                "omnihub.job_id": str(job.id),
                "omnihub.job_state": job.state,
                "omnihub.job_kind": job.kind,
                "omnihub.model_id": job.model_id,
            }
        )
    return span


def end_step(span: Span, state: str, outcome: str) -> None:
    """Count the step (by the state it started in) and end its span."""
    JOB_STEPS.labels(state, outcome).inc()
    if outcome != "advanced":
        span.set_status(Status(StatusCode.ERROR, outcome))
    span.end()
