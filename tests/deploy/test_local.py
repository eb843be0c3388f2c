"""`python -m deploy.local` as a developer runs it: the whole suite as child
processes, used over HTTP, then stopped with Ctrl-C (SIGINT)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.suite import SERVICES, free_port

ROOT = Path(__file__).resolve().parents[2]
READY_LINE = "OmniHub is ready"
READY_TIMEOUT_SECONDS = 75  # longer than the runner's own 60 s, so it names the culprit
STOP_TIMEOUT_SECONDS = 30
LONG_RUNNING = {*SERVICES, "gateway"}


@dataclass
class LocalRun:
    """A running `python -m deploy.local` and what it has printed so far."""

    process: asyncio.subprocess.Process
    port: int
    admin_username: str
    admin_password: str
    lines: list[str] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def started_pids(self) -> dict[str, int]:
        """Children the runner reported starting (its own lines are JSON)."""
        pids: dict[str, int] = {}
        for line in self.lines:
            try:  # a child's line is prefixed with its name
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == "process.started":
                pids[event["name"]] = event["pid"]
        return pids

    async def read_output(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            text = line.decode(errors="replace").rstrip("\n")
            self.lines.append(text)
            if text.startswith(READY_LINE):
                self.ready.set()

    def tail(self) -> str:
        return "\n".join(self.lines[-60:])


def runner_environment(database_url: str, port: int, admin: str) -> dict[str, str]:
    addresses = {
        f"{name.upper()}_ADDRESS": f"127.0.0.1:{free_port()}" for name in SERVICES
    }
    return {
        **os.environ,
        **addresses,
        "ENVIRONMENT": "test",
        "DATABASE_URL": database_url,
        "JWT_SECRET": "local-runner-test-" + "x" * 40,
        "PORT": str(port),
        "GRPC_LISTEN_HOST": "127.0.0.1",
        "ADMIN_USERNAME": admin,
        "ADMIN_PASSWORD": "operator-password-123",
        # The database is shared with the rest of the run; its rate buckets too.
        "AUTH_RATE_LIMIT_ACCOUNT": "1000/60s",
        "AUTH_RATE_LIMIT_ADDRESS": "10000/60s",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "protos")]),
    }


@pytest.fixture
async def local_run(database_url: str) -> AsyncIterator[LocalRun]:
    port = free_port()
    admin = f"operator{uuid.uuid4().hex[:8]}"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "deploy.local",
        cwd=ROOT,
        env=runner_environment(database_url, port, admin),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        limit=1024 * 1024,
    )
    run = LocalRun(process, port, admin, "operator-password-123")
    reader = asyncio.create_task(run.read_output())
    try:
        yield run
    finally:
        if process.returncode is None:  # the test failed before stopping it
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT_SECONDS)
            except TimeoutError:
                process.kill()
                await process.wait()
        await reader


async def wait_ready(run: LocalRun) -> None:
    stopped = asyncio.ensure_future(run.process.wait())
    ready = asyncio.ensure_future(run.ready.wait())
    await asyncio.wait(
        {stopped, ready},
        timeout=READY_TIMEOUT_SECONDS,
        return_when=asyncio.FIRST_COMPLETED,
    )
    stopped.cancel()
    ready.cancel()
    assert run.ready.is_set(), f"the runner never got ready:\n{run.tail()}"


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_suite_serves_the_api_then_stops_every_child_on_sigint(
    local_run: LocalRun,
) -> None:
    await wait_ready(local_run)
    children = local_run.started_pids()
    assert children.keys() >= LONG_RUNNING

    async with httpx.AsyncClient(base_url=local_run.url, timeout=15) as http:
        registered = await http.post(
            "/api/auth/register",
            json={
                "email": f"local-{uuid.uuid4().hex[:8]}@example.com",
                "password": "secret123",
                "name": "Local",
            },
        )
        assert registered.status_code == 201, registered.text
        assert registered.json()["accessToken"]
        admin = await http.post(
            "/api/admin/login",
            json={
                "username": local_run.admin_username,
                "password": local_run.admin_password,
            },
        )
        assert admin.status_code == 200, admin.text
        assert admin.json()["admin"]["username"] == local_run.admin_username

    local_run.process.send_signal(signal.SIGINT)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(local_run.process.wait(), STOP_TIMEOUT_SECONDS)
    assert local_run.process.returncode == 0, local_run.tail()
    still_running = [name for name, pid in children.items() if is_alive(pid)]
    assert still_running == [], local_run.tail()
