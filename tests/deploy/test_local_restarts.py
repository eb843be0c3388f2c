"""deploy/local.py's Suite when a child dies on its own: the whole run stops,
or, with RUN_RESTART_CRASHED, that child is started again."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from deploy.local import Program, Suite, SuiteFailed
from tests.suite import free_port

WAIT_SECONDS = 30.0


def long_running() -> Program:
    """A stand-in child that runs until it is stopped."""
    port = str(free_port())
    return Program("web", "http.server", (port, "--bind", "127.0.0.1"))


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


async def new_pid(suite: Suite, name: str, old: int) -> int:
    async with asyncio.timeout(WAIT_SECONDS):
        while True:
            pid = suite.pids[name]
            if pid != old:
                return pid
            await asyncio.sleep(0.05)


async def test_a_killed_child_is_started_again_when_restarts_are_on() -> None:
    suite = Suite(environment(), restart_crashed=True)
    try:
        await suite.start((long_running(),))
        first = suite.pids["web"]

        os.kill(first, signal.SIGKILL)

        second = await new_pid(suite, "web", first)
        assert second != first
        os.kill(second, 0)  # running
    finally:
        await suite.stop()


async def test_a_killed_child_stops_the_run_without_restarts() -> None:
    suite = Suite(environment())
    try:
        await suite.start((long_running(),))

        os.kill(suite.pids["web"], signal.SIGKILL)

        with pytest.raises(SuiteFailed, match="web stopped unexpectedly"):
            async with asyncio.timeout(WAIT_SECONDS):
                await suite.until_stopped()
    finally:
        await suite.stop()


async def test_stopping_leaves_no_restarted_child_behind() -> None:
    suite = Suite(environment(), restart_crashed=True)
    await suite.start((long_running(),))
    first = suite.pids["web"]
    os.kill(first, signal.SIGKILL)
    second = await new_pid(suite, "web", first)

    await suite.stop()

    with pytest.raises(ProcessLookupError):
        os.kill(second, 0)
