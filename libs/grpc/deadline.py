"""The deadline of the call being served, passed on to the calls it makes."""

from __future__ import annotations

import time
from contextvars import ContextVar

_deadline: ContextVar[float | None] = ContextVar("omnihub_deadline", default=None)


def set_deadline(seconds_from_now: float) -> None:
    _deadline.set(time.monotonic() + seconds_from_now)


def remaining(default: float) -> float:
    """Seconds an outgoing call may take: the default, capped by what is left
    of the incoming call's deadline."""
    deadline = _deadline.get()
    if deadline is None:
        return default
    return max(0.0, min(default, deadline - time.monotonic()))
