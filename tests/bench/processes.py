"""The processes under load: each a real OS process started from this
checkout, the way a deployment starts them, with its output in a log file."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.database import ROOT

STARTUP_TIMEOUT_SECONDS = 60.0
STOP_GRACE_SECONDS = 10.0


class ChildFailed(RuntimeError):
    pass


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def failure(self, what: str) -> ChildFailed:
        return ChildFailed(
            f"{self.name} {what} (exit code {self.process.returncode}); "
            f"last lines of {self.log_path}:\n{self.log_tail()}"
        )

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within the grace time."""
        if not self.running:
            return
        self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), STOP_GRACE_SECONDS)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


def child_environment(values: dict[str, str]) -> dict[str, str]:
    """This environment plus `values`, with the checkout on PYTHONPATH."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "protos")]),
        "PYTHONUNBUFFERED": "1",
        **values,
    }


def _log_path(log_dir: Path, name: str) -> Path:
    log_dir.mkdir(parents=True, exist_ok=True)
    return log_dir / f"{name}.log"


async def start(
    name: str, module_args: list[str], env: dict[str, str], log_dir: Path
) -> Child:
    """`python -m <module_args>` from the checkout, in a session of its own so
    that a Ctrl-C in the terminal reaches only this harness, which then stops
    its children in order."""
    log_path = _log_path(log_dir, name)
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            *module_args,
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    return Child(name, process, log_path)


async def run_to_completion(
    name: str, module_args: list[str], env: dict[str, str], log_dir: Path
) -> None:
    child = await start(name, module_args, env, log_dir)
    try:
        await asyncio.wait_for(child.process.wait(), STARTUP_TIMEOUT_SECONDS)
    finally:
        await child.stop()
    if child.process.returncode != 0:
        raise child.failure("failed")


async def wait_until(child: Child, ready: Callable[[], Awaitable[bool]]) -> None:
    """Poll `ready` until it says yes; fail early if the child exits."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if not child.running:
            raise child.failure("exited during start-up")
        if await ready():
            return
        await asyncio.sleep(0.1)
    raise child.failure(f"was not ready within {STARTUP_TIMEOUT_SECONDS:.0f}s")


def http_ok(url: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        try:
            async with httpx.AsyncClient(timeout=1.0) as http:
                return (await http.get(url)).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def grpc_serving(address: str, service: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                reply = await stub.Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=1.0
                )
            except grpc.aio.AioRpcError:
                return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    return check
