"""deploy/entrypoint.py: which process each argument of the image starts, and
how it starts it (replacing itself, or one command after another)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

from deploy.entrypoint import SERVICES, SIMULATOR_PORTS, UsageError, commands_for
from tests.suite import free_port

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
START_TIMEOUT_SECONDS = 20


def _environment(**extra: str) -> dict[str, str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key != "DATABASE_URL" and not key.startswith("RAZORPAY_")
    }
    return {
        **environment,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "protos")]),
        **extra,
    }


async def _entrypoint(*args: str, **env: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        PYTHON,
        "-m",
        "deploy.entrypoint",
        *args,
        cwd=ROOT,
        env=_environment(**env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), START_TIMEOUT_SECONDS)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


class TestCommandsFor:
    @pytest.mark.parametrize("service", SERVICES)
    def test_a_service_name_serves_that_service(self, service: str) -> None:
        assert commands_for([service]) == [
            [PYTHON, "-m", f"services.{service}.main", "serve"]
        ]

    def test_gateway(self) -> None:
        assert commands_for(["gateway"]) == [[PYTHON, "-m", "gateway.main"]]

    def test_worker(self) -> None:
        assert commands_for(["worker"]) == [
            [PYTHON, "-m", "services.generation.worker"]
        ]

    def test_ensure_admin_is_auths_command(self) -> None:
        assert commands_for(["ensure-admin"]) == [
            [PYTHON, "-m", "services.auth.main", "ensure-admin"]
        ]

    def test_reconcile_is_billings_command(self) -> None:
        assert commands_for(["reconcile"]) == [
            [PYTHON, "-m", "services.billing.main", "reconcile"]
        ]

    def test_migrate_all_migrates_every_service_in_turn(self) -> None:
        assert commands_for(["migrate", "all"]) == [
            [PYTHON, "-m", f"services.{service}.main", "migrate"]
            for service in SERVICES
        ]

    def test_migrate_one_service(self) -> None:
        assert commands_for(["migrate", "billing"]) == [
            [PYTHON, "-m", "services.billing.main", "migrate"]
        ]

    @pytest.mark.parametrize(("name", "port"), sorted(SIMULATOR_PORTS.items()))
    def test_a_simulator_listens_on_every_interface(self, name: str, port: int) -> None:
        assert commands_for(["simulator", name]) == [
            [
                PYTHON,
                "-m",
                f"deploy.simulators.{name}",
                "--host",
                "0.0.0.0",  # noqa: S104
                "--port",
                str(port),
            ]
        ]

    def test_simulator_arguments_come_last_so_they_win(self) -> None:
        (command,) = commands_for(["simulator", "fal", "--port", "9000", "-x"])
        assert command[-3:] == ["--port", "9000", "-x"]

    @pytest.mark.parametrize(
        "argv",
        [
            [],
            ["serve"],
            ["auth", "migrate"],
            ["gateway", "--port", "1"],
            ["migrate"],
            ["migrate", "auth", "chat"],
            ["migrate", "ledger"],
            ["simulator"],
            ["simulator", "stripe"],
        ],
        ids=repr,
    )
    def test_refuses_anything_else(self, argv: list[str]) -> None:
        with pytest.raises(UsageError):
            commands_for(argv)


class TestCommandLine:
    async def test_dry_run_prints_the_commands(self) -> None:
        code, out, _ = await _entrypoint("--dry-run", "migrate", "all")
        assert code == 0
        lines = out.splitlines()
        assert len(lines) == len(SERVICES)
        assert lines[0].endswith("-m services.auth.main migrate")

    async def test_bad_usage_exits_2_and_says_why(self) -> None:
        code, out, err = await _entrypoint("launch")
        assert code == 2
        assert out == ""
        assert "unknown command 'launch'" in err
        assert "migrate all" in err  # the usage follows

    async def test_help_lists_the_commands(self) -> None:
        code, out, _ = await _entrypoint("--help")
        assert code == 0
        assert "simulator fal|openrouter|razorpay" in out

    async def test_stops_at_the_first_command_that_fails(self) -> None:
        # Without DATABASE_URL auth's migration fails; none after it runs.
        code, _, err = await _entrypoint("migrate", "all")
        assert code != 0
        assert "services.auth.main migrate failed" in err
        assert "services.catalog.main" not in err

    async def test_one_command_replaces_the_entry_point(self) -> None:
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            PYTHON,
            "-m",
            "deploy.entrypoint",
            "simulator",
            "razorpay",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            cwd=ROOT,
            env=_environment(
                RAZORPAY_KEY_ID="rzp_test_entrypoint",
                RAZORPAY_KEY_SECRET="entrypoint-secret",
                RAZORPAY_WEBHOOK_SECRET="entrypoint-webhook",
            ),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            await _until_answering(f"http://127.0.0.1:{port}/v1/orders/none")
            # The same process now is the simulator: a container's stop
            # signal reaches it, not a wrapper.
            proc = Path(f"/proc/{process.pid}/cmdline")
            cmdline = (await asyncio.to_thread(proc.read_bytes)).split(b"\0")
            assert b"deploy.simulators.razorpay" in cmdline
            assert b"deploy.entrypoint" not in cmdline
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), START_TIMEOUT_SECONDS)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def _until_answering(url: str) -> None:
    async with httpx.AsyncClient() as http, asyncio.timeout(START_TIMEOUT_SECONDS):
        while True:
            try:
                await http.get(url)
            except httpx.TransportError:
                await asyncio.sleep(0.1)
            else:
                return
