"""Changes to generations as they happen (for WatchGeneration), and jobs
becoming due (for the workers).

Every transition sends `pg_notify('generation_events', <id>)` in its
transaction (lifecycle.notify). One connection per process LISTENs and wakes
the watchers of that id; a watcher also re-reads every few seconds, so a
notification lost while the connection was being replaced costs a few seconds,
not an event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from libs.logs import get_logger
from services.generation.lifecycle import EVENTS_CHANNEL

log = get_logger(__name__)

RECONNECT_SECONDS = 2.0


class Listener:
    """LISTENs on one PostgreSQL channel and hands each payload to a callback,
    reconnecting when the connection breaks."""

    def __init__(
        self, engine: AsyncEngine, channel: str, received: Callable[[str], None]
    ) -> None:
        self._engine = engine
        self._channel = channel
        self._received = received
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name=f"listen-{self._channel}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self) -> None:
        while True:
            try:
                await self._listen_once()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning(
                    "events.listen_failed",
                    channel=self._channel,
                    error=type(error).__name__,
                )
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _listen_once(self) -> None:
        async with self._engine.connect() as connection:
            raw = await connection.get_raw_connection()
            driver: Any = raw.driver_connection

            def received(_conn: object, _pid: int, _channel: str, payload: str) -> None:
                self._received(payload)

            await driver.add_listener(self._channel, received)
            try:
                while not driver.is_closed():  # noqa: ASYNC110 - asyncpg has no event
                    await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await driver.remove_listener(self._channel, received)


class EventHub:
    """Wakes the watchers of a generation when it changes."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._listener = Listener(engine, EVENTS_CHANNEL, self._wake)

    def start(self) -> None:
        self._listener.start()

    async def close(self) -> None:
        await self._listener.close()

    @contextlib.contextmanager
    def subscription(self, generation_id: str) -> Any:
        event = asyncio.Event()
        self._waiters[generation_id].add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(generation_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[generation_id]

    def _wake(self, generation_id: str) -> None:
        for event in self._waiters.get(generation_id, ()):
            event.set()
