"""Delivers outbox events to the services that act on them.

At least once: an event stays due until every handler for its topic has
succeeded, with growing pauses between attempts, so a billing or workspace
outage at sign-up time delays the free credits or the personal workspace but
never loses them. Several auth replicas may run this; `FOR UPDATE SKIP
LOCKED` gives each event to one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta

from omnihub.billing.v1 import billing_pb2, billing_pb2_grpc
from omnihub.workspace.v1 import workspace_pb2, workspace_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.grpc.client import Upstreams
from libs.logs import get_logger
from libs.revocation import error_summary
from services.auth import repository

log = get_logger(__name__)

USER_REGISTERED = "user.registered"
BATCH_SIZE = 50
POLL_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 300
FLUSH_TIMEOUT_SECONDS = 1.5

Handler = Callable[[dict[str, str]], Awaitable[None]]


class OutboxRelay:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        handlers: Mapping[str, Sequence[Handler]],
    ) -> None:
        self._sessions = sessions
        self._handlers = handlers
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def flush(self, event_id: int) -> None:
        """Deliver one event now, within a short time; if that fails it stays
        due and the background loop retries it."""
        try:
            async with asyncio.timeout(FLUSH_TIMEOUT_SECONDS):
                await self.deliver_due(only_ids=[event_id])
        except Exception as exc:
            log.warning("outbox.flush_incomplete", error=str(exc) or type(exc).__name__)

    async def run(self) -> None:
        while True:
            try:
                await self.deliver_due()
            except Exception:
                log.exception("outbox.delivery_loop_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
            self._wake.clear()

    async def deliver_due(self, only_ids: list[int] | None = None) -> int:
        """Deliver one batch of due events; returns how many succeeded."""
        delivered = 0
        async with self._sessions.begin() as db:
            events = await repository.claim_due_events(db, BATCH_SIZE, only_ids)
            for event in events:
                try:
                    for handler in self._handlers.get(event.topic, ()):
                        await handler(event.payload)
                except Exception as exc:
                    delay = min(2 ** (event.attempts + 1), MAX_BACKOFF_SECONDS)
                    await repository.postpone_event(
                        db, event.id, timedelta(seconds=delay), str(exc) or repr(exc)
                    )
                    log.warning(
                        "outbox.delivery_failed",
                        event_id=event.id,
                        topic=event.topic,
                        attempts=event.attempts + 1,
                        retry_in_s=delay,
                        error=error_summary(exc),
                    )
                    continue
                await repository.mark_event_delivered(db, event.id)
                delivered += 1
        return delivered


def signup_handlers(
    billing: billing_pb2_grpc.BillingServiceAsyncStub,
    workspace: workspace_pb2_grpc.WorkspaceServiceAsyncStub,
    upstreams: Upstreams,
) -> dict[str, list[Handler]]:
    """What a new account sets off in other services."""

    async def grant_signup_credits(payload: dict[str, str]) -> None:
        await billing.GrantSignupCredits(
            billing_pb2.GrantSignupCreditsRequest(user_id=payload["user_id"]),
            timeout=upstreams.timeout(),
            metadata=upstreams.metadata(),
            # Nobody is waiting on an error here: ride out a reconnect
            # instead of failing while the channel backs off.
            wait_for_ready=True,
        )

    async def ensure_personal_workspace(payload: dict[str, str]) -> None:
        await workspace.EnsurePersonalWorkspace(
            workspace_pb2.EnsurePersonalWorkspaceRequest(user_id=payload["user_id"]),
            timeout=upstreams.timeout(),
            metadata=upstreams.metadata(),
            wait_for_ready=True,
        )

    return {USER_REGISTERED: [grant_signup_credits, ensure_personal_workspace]}
