"""deploy/healthcheck.py: the check each OmniHub process gets, and each check
run for real against a running service, gateway and process."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path

import pytest

from deploy.healthcheck import (
    Check,
    Invocation,
    Kind,
    check_for,
    container_check,
    invocation_of,
    passes,
)
from libs.config import Settings
from services.catalog.main import CatalogProcess
from tests.suite import ServedApp, free_port

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_SECONDS = 30


def _settings() -> Settings:
    return Settings(chat_address="dns:///chat:6054", port=8080)


def _python_m(module: str, *args: str) -> Invocation:
    found = invocation_of(["/usr/local/bin/python", "-m", module, *args])
    assert found is not None
    return found


async def _healthcheck(*args: str) -> int:
    """`python -m deploy.healthcheck ARGS` as a container runtime runs it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "deploy.healthcheck",
        *args,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'protos'}"},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(process.wait(), TIMEOUT_SECONDS)


class TestInvocationOf:
    def test_reads_the_module_and_its_arguments(self) -> None:
        found = invocation_of(["python3", "-u", "-m", "services.auth.main", "serve"])
        assert found == Invocation("services.auth.main", ("serve",))

    def test_ignores_a_command_without_a_module(self) -> None:
        assert invocation_of(["/bin/sh", "-c", "sleep 5"]) is None
        assert invocation_of(["python", "-m"]) is None


class TestCheckFor:
    def test_a_service_is_asked_over_grpc_on_the_port_of_its_address(self) -> None:
        check = check_for(_python_m("services.chat.main", "serve"), _settings())
        assert check == Check("grpc", "localhost:6054")

    def test_a_service_started_without_a_command_serves(self) -> None:
        check = check_for(_python_m("services.auth.main"), _settings())
        assert check == Check("grpc", "localhost:50051")

    @pytest.mark.parametrize("command", ["migrate", "ensure-admin", "reconcile"])
    def test_one_off_commands_need_no_check(self, command: str) -> None:
        check = check_for(_python_m("services.billing.main", command), _settings())
        assert check is not None
        assert check.kind == "one-off"

    def test_the_gateway_is_asked_for_healthz_on_its_port(self) -> None:
        check = check_for(_python_m("gateway.main"), _settings())
        assert check == Check("http", "http://127.0.0.1:8080/healthz")

    def test_the_worker_is_checked_by_its_process(self) -> None:
        check = check_for(_python_m("services.generation.worker"), _settings())
        assert check == Check("process", "services.generation.worker")

    def test_a_simulator_is_asked_on_its_last_port(self) -> None:
        invocation = _python_m(
            "deploy.simulators.fal", "--port", "3102", "--port", "4000"
        )
        check = check_for(invocation, _settings())
        assert check == Check("answers", "http://127.0.0.1:4000/")

    def test_anything_else_is_not_ours(self) -> None:
        assert check_for(_python_m("pytest"), _settings()) is None
        assert check_for(_python_m("services.ledger.main"), _settings()) is None

    def test_the_container_check_follows_the_first_omnihub_process(self) -> None:
        processes = [
            _python_m("deploy.healthcheck"),
            _python_m("gateway.main"),
            _python_m("services.auth.main", "serve"),
        ]
        check = container_check(processes, _settings())
        assert check == Check("http", "http://127.0.0.1:8080/healthz")
        assert container_check(processes[:1], _settings()) is None


async def _passes(kind: Kind, target: str) -> bool:
    # In a thread: the checks block, and the servers run in this loop.
    return await asyncio.to_thread(passes, Check(kind, target))


class TestGrpc:
    async def test_a_serving_service_is_healthy(
        self, settings: Settings, catalog_service: CatalogProcess
    ) -> None:
        assert await _passes("grpc", settings.catalog_address)

    async def test_nothing_listening_is_unhealthy(self) -> None:
        assert not await _passes("grpc", f"127.0.0.1:{free_port()}")


class TestHttp:
    async def test_healthz_answering_200_is_healthy(self, gateway: ServedApp) -> None:
        assert await _passes("http", f"{gateway.url}/healthz")

    async def test_another_status_is_unhealthy(self, gateway: ServedApp) -> None:
        assert not await _passes("http", f"{gateway.url}/no-such-page")

    async def test_any_answer_is_enough_for_answers(self, gateway: ServedApp) -> None:
        assert await _passes("answers", f"{gateway.url}/no-such-page")

    async def test_nothing_listening_is_unhealthy(self) -> None:
        url = f"http://127.0.0.1:{free_port()}/healthz"
        assert not await _passes("http", url)
        assert not await _passes("answers", url)


class TestProcess:
    async def test_healthy_while_the_process_runs(self) -> None:
        module = f"omnihub_probe_{uuid.uuid4().hex}"
        # `-m module` after `-c` is only an argument: a process that looks
        # like `python -m module` without such a module existing.
        sleeper = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import time; time.sleep(60)", "-m", module
        )
        try:
            assert await _passes("process", module)
        finally:
            sleeper.kill()
            await sleeper.wait()
        assert not await _passes("process", module)


async def test_exit_status_says_healthy_unhealthy_or_bad_usage(
    settings: Settings, catalog_service: CatalogProcess
) -> None:
    codes = await asyncio.gather(
        _healthcheck("grpc", settings.catalog_address),
        _healthcheck("grpc", f"127.0.0.1:{free_port()}"),
        _healthcheck("tcp", "localhost:1"),
    )
    assert list(codes) == [0, 1, 2]
