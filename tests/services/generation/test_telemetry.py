"""services/generation/telemetry.py: the job backlog read in one query, the
gauges set from it, and the counted, traced steps of a job.

Backlog scenarios run in one REPEATABLE READ transaction that is rolled
back: both reads see one snapshot (and one now()) plus this test's own jobs,
so differences are exactly this test's, whatever the session's workers do
meanwhile, and no worker ever sees these jobs.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.trace import format_trace_id
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncSession

from libs.config import Settings
from libs.db import create_engine, session_factory
from services.generation.main import GenerationProcess
from services.generation.models import ACTIVE_JOB_STATES, SCHEMA, Job
from services.generation.telemetry import (
    Backlog,
    end_step,
    publish_backlog,
    read_backlog,
    start_step,
)

HOUR = timedelta(hours=1)
A_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
async def db(
    settings: Settings, generation_service: GenerationProcess
) -> AsyncIterator[AsyncSession]:
    engine = create_engine(settings, SCHEMA)
    async with session_factory(engine)() as session:
        await session.connection(
            execution_options={"isolation_level": "REPEATABLE READ"}
        )
        yield session
        await session.rollback()
    await engine.dispose()


def _job(state: str, due_in: timedelta, leased: bool = False) -> Job:
    now = datetime.now(UTC)
    return Job(
        id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        kind="generate",
        model_id="fal-flux-schnell",
        endpoint="fal-ai/flux/schnell",
        payload={"prompt": "a backlog"},
        state=state,
        due_at=now + due_in,
        deadline_at=now + 2 * HOUR,
        lease_owner="another-worker" if leased else None,
        lease_expires_at=now + HOUR if leased else None,
        trace_context=f"00-{A_TRACE_ID}-00f067aa0ba902b7-01",
    )


def _by_state(backlog: list[Backlog]) -> dict[str, Backlog]:
    return {entry.state: entry for entry in backlog}


async def _backlog_after(db: AsyncSession, *jobs: Job) -> dict[str, Backlog]:
    db.add_all(jobs)
    await db.flush()
    return _by_state(await read_backlog(db))


def _jobs(backlog: dict[str, Backlog], state: str) -> int:
    return backlog[state].jobs if state in backlog else 0


def _wait(backlog: dict[str, Backlog], state: str) -> float:
    return backlog[state].wait_seconds if state in backlog else 0.0


class TestReadBacklog:
    async def test_unfinished_jobs_are_counted_by_state(self, db: AsyncSession) -> None:
        before = _by_state(await read_backlog(db))

        after = await _backlog_after(
            db,
            _job("queued", -HOUR),
            _job("queued", HOUR),
            _job("submitted", HOUR),
            _job("finished", -HOUR),
        )

        assert _jobs(after, "queued") - _jobs(before, "queued") == 2
        assert _jobs(after, "submitted") - _jobs(before, "submitted") == 1
        assert "finished" not in after

    async def test_wait_is_how_long_the_oldest_due_job_has_waited(
        self, db: AsyncSession
    ) -> None:
        before = _by_state(await read_backlog(db))

        after = await _backlog_after(db, _job("submitting", -HOUR))

        waited = _wait(after, "submitting")
        assert waited >= max(HOUR.total_seconds() - 5, _wait(before, "submitting"))
        assert waited < HOUR.total_seconds() + 60

    async def test_a_leased_job_is_not_waiting(self, db: AsyncSession) -> None:
        before = _by_state(await read_backlog(db))

        after = await _backlog_after(db, _job("holding", -2 * HOUR, leased=True))

        assert _jobs(after, "holding") - _jobs(before, "holding") == 1
        # One snapshot, one now(): the wait is exactly what it was.
        assert _wait(after, "holding") == _wait(before, "holding")

    async def test_a_job_not_yet_due_is_not_waiting(self, db: AsyncSession) -> None:
        before = _by_state(await read_backlog(db))

        after = await _backlog_after(db, _job("submitted", HOUR))

        assert _wait(after, "submitted") == _wait(before, "submitted")


class TestPublishBacklog:
    def test_states_without_jobs_read_zero(self) -> None:
        publish_backlog([Backlog("queued", 4, 12.5)])

        for state in ACTIVE_JOB_STATES:
            jobs = REGISTRY.get_sample_value(
                "omnihub_generation_jobs", {"state": state}
            )
            wait = REGISTRY.get_sample_value(
                "omnihub_generation_job_wait_seconds", {"state": state}
            )
            assert (jobs, wait) == ((4, 12.5) if state == "queued" else (0, 0))


class TestSteps:
    def test_a_step_continues_the_trace_the_job_was_created_in(self) -> None:
        span = start_step(_job("queued", -HOUR))

        trace_id = format_trace_id(span.get_span_context().trace_id)
        span.end()
        assert trace_id == A_TRACE_ID

    def test_steps_are_counted_by_state_and_outcome(self) -> None:
        labels = {"state": "submitted", "outcome": "failed"}
        before = REGISTRY.get_sample_value("omnihub_generation_job_steps_total", labels)

        end_step(start_step(_job("submitted", -HOUR)), "submitted", "failed")

        after = REGISTRY.get_sample_value("omnihub_generation_job_steps_total", labels)
        assert after == (before or 0) + 1
