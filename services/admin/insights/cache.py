"""Figures kept for a few seconds in the admin process.

The dashboard's figures cost a round of aggregate queries in three
services; operators reload pages, and several may watch the same
dashboard. An answer is therefore kept for ADMIN_INSIGHTS_CACHE_SECONDS
per key (the dashboard, each analytics range), and callers who ask while
it is being computed wait for that computation instead of starting their
own. Each admin replica keeps its own; a failure is never kept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

ValueT = TypeVar("ValueT")


class FigureCache(Generic[ValueT]):
    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._kept: dict[str, tuple[float, ValueT]] = {}
        self._computing: dict[str, asyncio.Lock] = {}

    async def get(self, key: str, compute: Callable[[], Awaitable[ValueT]]) -> ValueT:
        """The value kept under `key` while it is fresh, else `compute()`'s."""
        if self._seconds <= 0:
            return await compute()
        kept = self._fresh(key)
        if kept is not None:
            return kept
        async with self._computing.setdefault(key, asyncio.Lock()):
            kept = self._fresh(key)
            if kept is not None:
                return kept
            value = await compute()
            self._kept[key] = (time.monotonic() + self._seconds, value)
            return value

    def _fresh(self, key: str) -> ValueT | None:
        kept = self._kept.get(key)
        if kept is None or kept[0] <= time.monotonic():
            return None
        return kept[1]
