"""Admin tasks: changes to data another service owns, carried out until that
service confirms them.

An operator's request writes the task and its pending audit entry in one
transaction, then runs the task at once; if the owning service cannot be
reached, the background loop retries it with backoff. Handlers must be
idempotent (they are given the task id to use as the owning service's
idempotency key), because a task may run again after a crash. A handler
that raises a DomainError other than Unavailable/DeadlineExceeded fails the
task for good and the audit entry says why.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.errors import DeadlineExceeded, DomainError, Unavailable
from libs.logs import get_logger
from services.admin import audit
from services.admin.models import AdminTask

log = get_logger(__name__)

# (task id, payload) -> what to record as the audit entry's `after`.
Handler = Callable[[str, dict[str, Any]], Awaitable[Any]]

POLL_SECONDS = 2.0
MAX_BACKOFF_SECONDS = 300.0
MAX_ATTEMPTS = 50


class TaskFailed(Exception):
    def __init__(self, error: DomainError) -> None:
        super().__init__(error.message)
        self.error = error


class AdminTasks:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._handlers: dict[str, Handler] = {}

    def register(self, kind: str, handler: Handler) -> None:
        self._handlers[kind] = handler

    async def enqueue(
        self,
        db: AsyncSession,
        kind: str,
        payload: dict[str, Any],
        audit_id: int | None,
    ) -> uuid.UUID:
        """Queue a task in the caller's transaction."""
        if kind not in self._handlers:
            raise KeyError(f"no handler for admin task {kind!r}")
        task = AdminTask(id=uuid.uuid4(), kind=kind, payload=payload, audit_id=audit_id)
        db.add(task)
        await db.flush()
        return task.id

    async def run(self, task_id: uuid.UUID) -> Any:
        """Carry out one task now. Returns the handler's result; raises
        TaskFailed when the owning service refused it, and Unavailable when
        it could not be reached (the task stays pending and is retried)."""
        async with self._sessions() as db:
            task = await db.get(AdminTask, task_id)
        if task is None or task.state != "pending":
            return task.result if task else None
        handler = self._handlers[task.kind]
        try:
            result = await handler(str(task.id), task.payload)
        except (Unavailable, DeadlineExceeded) as error:
            await self._postpone(task, error)
            raise
        except DomainError as error:
            await self._finish(task, error=error.message)
            raise TaskFailed(error) from None
        await self._finish(task, result=result)
        return result

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            for task_id in await self._due():
                try:
                    await self.run(task_id)
                except (TaskFailed, Unavailable, DeadlineExceeded):
                    pass
                except Exception:
                    log.exception("admin_task.crashed", task_id=str(task_id))

    async def _due(self) -> list[uuid.UUID]:
        async with self._sessions() as db:
            rows = await db.execute(
                select(AdminTask.id)
                .where(
                    AdminTask.state == "pending",
                    AdminTask.next_attempt_at <= func.now(),
                )
                .order_by(AdminTask.next_attempt_at)
                .limit(50)
            )
            return list(rows.scalars())

    async def _postpone(self, task: AdminTask, error: DomainError) -> None:
        attempts = task.attempts + 1
        delay = min(MAX_BACKOFF_SECONDS, 2.0**attempts)
        async with self._sessions.begin() as db:
            if attempts >= MAX_ATTEMPTS:
                await self._close(db, task, error=error.message)
                return
            await db.execute(
                update(AdminTask)
                .where(AdminTask.id == task.id, AdminTask.state == "pending")
                .values(
                    attempts=attempts,
                    last_error=error.message,
                    next_attempt_at=datetime.now(UTC) + timedelta(seconds=delay),
                )
            )
        log.warning("admin_task.postponed", task_id=str(task.id), kind=task.kind)

    async def _finish(
        self, task: AdminTask, *, result: Any = None, error: str | None = None
    ) -> None:
        async with self._sessions.begin() as db:
            await self._close(db, task, result=result, error=error)

    async def _close(
        self,
        db: AsyncSession,
        task: AdminTask,
        *,
        result: Any = None,
        error: str | None = None,
    ) -> None:
        await db.execute(
            update(AdminTask)
            .where(AdminTask.id == task.id, AdminTask.state == "pending")
            .values(
                state="failed" if error else "done",
                result=result,
                last_error=error,
                attempts=task.attempts + 1,
                done_at=func.now(),
            )
        )
        if task.audit_id is not None:
            await audit.settle(db, task.audit_id, after=result, error=error)
