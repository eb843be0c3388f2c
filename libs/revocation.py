"""The revocation list: sessions that ended before their access tokens expire.

Access tokens are verified locally (no database round trip per request), so
each process keeps the ids of recently revoked sessions in memory and polls
the auth service's revocation feed for new ones every
`REVOCATION_POLL_INTERVAL` seconds. A logout therefore stops its access
tokens everywhere within about one poll interval. Entries are forgotten once
every token of that session must have expired anyway.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from omnihub.auth.v1 import auth_pb2

from libs.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class RevocationBatch:
    session_ids: list[str]
    # The source's clock when it answered; the next poll asks from here.
    as_of: datetime


# revoked_after (None on the first call) -> sessions revoked since then
RevocationSource = Callable[[datetime | None], Awaitable[RevocationBatch]]


class RevocationList:
    def __init__(
        self,
        source: RevocationSource,
        *,
        poll_interval: float,
        retention_seconds: float,
    ) -> None:
        self._source = source
        self._poll_interval = poll_interval
        self._retention = retention_seconds
        self._revoked: dict[str, float] = {}
        self._cursor: datetime | None = None
        self._task: asyncio.Task[None] | None = None
        self.last_synced_at: float | None = None

    def is_revoked(self, session_id: str) -> bool:
        return session_id in self._revoked

    def add(self, session_id: str) -> None:
        """Record a revocation this process made itself, before the feed has it."""
        self._revoked[session_id] = time.monotonic()

    async def sync(self) -> None:
        """Pull every revocation since the last poll."""
        batch = await self._source(self._cursor)
        now = time.monotonic()
        for session_id in batch.session_ids:
            self._revoked.setdefault(session_id, now)
        self._cursor = batch.as_of
        self.last_synced_at = now
        self._forget_expired()

    def _forget_expired(self) -> None:
        horizon = time.monotonic() - self._retention
        stale = [sid for sid, seen in self._revoked.items() if seen < horizon]
        for session_id in stale:
            del self._revoked[session_id]

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._poll(), name="revocation-poll")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _poll(self) -> None:
        failures = 0
        while True:
            try:
                await self.sync()
                if failures:
                    log.info("revocation.feed_recovered", failures=failures)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                if failures in {1, 10} or failures % 100 == 0:
                    log.warning(
                        "revocation.feed_failed",
                        failures=failures,
                        error=error_summary(exc),
                    )
            await asyncio.sleep(self._poll_interval)


def error_summary(exc: Exception) -> str:
    """One line for the log: a gRPC status name rather than its whole repr."""
    code = getattr(exc, "code", None)
    return str(code().name) if callable(code) else type(exc).__name__


def auth_service_source(
    fetch: Callable[
        [auth_pb2.ListRevokedSessionsRequest],
        Awaitable[auth_pb2.ListRevokedSessionsResponse],
    ],
) -> RevocationSource:
    """A source that reads the auth service's feed through `fetch` (a bound
    AuthService.ListRevokedSessions call with metadata and deadline)."""

    async def source(revoked_after: datetime | None) -> RevocationBatch:
        request = auth_pb2.ListRevokedSessionsRequest()
        if revoked_after is not None:
            request.revoked_after.FromDatetime(revoked_after)
        response = await fetch(request)
        return RevocationBatch(
            session_ids=list(response.session_ids),
            as_of=response.as_of.ToDatetime(tzinfo=UTC),
        )

    return source
