"""Recent answers of GET /api/auth/me, kept per session for a moment.

The web client asks for /me on every page it opens, and answering it fresh
takes three services (auth for the user, billing for the credits, workspace
for the workspaces). A gateway keeps each session's last answer, already
encoded, for ME_CACHE_SECONDS (2 by default; 0 keeps nothing):

- the caller's token is checked (signature, audience, revocation) before the
  kept answer is looked at, so a signed-out session never sees one;
- any write the user sends through this gateway (a request other than GET,
  HEAD or OPTIONS) drops every answer kept for that user first, so a user
  reads their own changes at once;
- a change made elsewhere (another replica, the generation worker capturing
  credits, another workspace member) shows within the lifetime;
- an answer in which billing or workspace could not be reached is not kept;
- when a session's answer is missing, one request reads it and the others
  for that session that arrive meanwhile wait for that read instead of
  each asking the three services (a client with many connections would
  otherwise send a burst of reads every lifetime), unless a write by the
  user began or ended since that read started.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

MAX_SESSIONS = 50_000


@dataclass(frozen=True)
class KeptAnswer:
    user_id: str
    body: bytes
    expires_at: float


# Reads the answer: its encoded body, and whether every service contributed.
Reader = Callable[[], Awaitable[tuple[bytes, bool]]]


@dataclass(frozen=True)
class Reading:
    writes: int
    task: asyncio.Future[bytes]


class MeAnswers:
    """Encoded /me bodies by session id, oldest dropped first past
    `max_sessions`."""

    def __init__(self, lifetime: float, max_sessions: int = MAX_SESSIONS) -> None:
        self.lifetime = lifetime
        self._max_sessions = max_sessions
        self._answers: OrderedDict[str, KeptAnswer] = OrderedDict()
        self._sessions_by_user: dict[str, set[str]] = {}
        # Counts the writes each user has begun or ended here: an answer
        # read while one was under way is not kept (it may predate it).
        self._writes: dict[str, int] = {}
        self._readings: dict[str, Reading] = {}

    @property
    def enabled(self) -> bool:
        return self.lifetime > 0

    def get(self, session_id: str) -> bytes | None:
        kept = self._answers.get(session_id)
        if kept is None:
            return None
        if kept.expires_at <= time.monotonic():
            self._drop(session_id)
            return None
        return kept.body

    async def answer(self, session_id: str, user_id: str, read: Reader) -> bytes:
        """The session's kept answer, or one read now (at most one read per
        session at a time) and kept if complete."""
        if not self.enabled:
            body, _ = await read()
            return body
        kept = self.get(session_id)
        if kept is not None:
            return kept
        writes = self.writes(user_id)
        reading = self._readings.get(session_id)
        if reading is None or reading.writes != writes:
            reading = Reading(
                writes,
                asyncio.ensure_future(self._read(session_id, user_id, read, writes)),
            )
            self._readings[session_id] = reading
            # Its failure is retrieved even if every caller went away.
            reading.task.add_done_callback(_retrieve)
        # Shielded: a caller that goes away does not end the read the others
        # are waiting for.
        return await asyncio.shield(reading.task)

    async def _read(
        self, session_id: str, user_id: str, read: Reader, writes: int
    ) -> bytes:
        try:
            body, complete = await read()
        finally:
            reading = self._readings.get(session_id)
            if reading is not None and reading.writes == writes:
                del self._readings[session_id]
        if complete:
            self.keep(session_id, user_id, body, writes)
        return body

    def writes(self, user_id: str) -> int:
        """Taken before reading an answer and handed to `keep`."""
        return self._writes.get(user_id, 0)

    def keep(self, session_id: str, user_id: str, body: bytes, writes: int) -> None:
        if not self.enabled or self.writes(user_id) != writes:
            return
        self._drop(session_id)
        self._answers[session_id] = KeptAnswer(
            user_id, body, time.monotonic() + self.lifetime
        )
        self._sessions_by_user.setdefault(user_id, set()).add(session_id)
        while len(self._answers) > self._max_sessions:
            self._drop(next(iter(self._answers)))

    def forget_user(self, user_id: str) -> None:
        """Called as a write by the user begins and again when it ends."""
        if len(self._writes) >= self._max_sessions:
            self._writes.clear()
        self._writes[user_id] = self._writes.get(user_id, 0) + 1
        for session_id in self._sessions_by_user.pop(user_id, ()):
            self._answers.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._answers)

    def _drop(self, session_id: str) -> None:
        kept = self._answers.pop(session_id, None)
        if kept is None:
            return
        sessions = self._sessions_by_user.get(kept.user_id)
        if sessions is not None:
            sessions.discard(session_id)
            if not sessions:
                del self._sessions_by_user[kept.user_id]


def _retrieve(task: asyncio.Future[bytes]) -> None:
    if not task.cancelled():
        task.exception()
