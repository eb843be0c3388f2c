"""Running wrk and reading its report.

wrk is a C load generator: it keeps a fixed number of connections busy for a
fixed time and records every response's latency, so its figures are not
limited by a Python client. Its report is plain text; `parse_report` reads
the lines this harness needs (run with `--latency`).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

SCRIPTS_DIR = Path(__file__).resolve().parent / "scripts"
REQUEST_TIMEOUT = "10s"

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_PERCENTILE = re.compile(r"^\s*(50|75|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$")
_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)")
_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)")
_NON_2XX = re.compile(r"^\s*Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET = re.compile(
    r"^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
)


class WrkMissing(RuntimeError):
    pass


class WrkFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Load:
    """How hard to push: wrk's -t, -c and -d."""

    threads: int
    connections: int
    seconds: int

    def arguments(self) -> list[str]:
        return [
            f"-t{self.threads}",
            f"-c{self.connections}",
            f"-d{self.seconds}s",
            f"--timeout={REQUEST_TIMEOUT}",
            "--latency",
        ]


@dataclass
class Report:
    requests: int
    seconds: float
    requests_per_second: float
    percentiles_ms: dict[int, float]
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    script_lines: list[str] = field(default_factory=list)
    text: str = ""

    @property
    def p50_ms(self) -> float:
        return self.percentiles_ms[50]

    @property
    def p99_ms(self) -> float:
        return self.percentiles_ms[99]

    @property
    def socket_error_count(self) -> int:
        return sum(self.socket_errors.values())


def _milliseconds(amount: str, unit: str) -> float:
    return float(amount) * _UNIT_MS[unit]


def parse_report(text: str, script_prefix: str | None = None) -> Report:
    """Read wrk's text report. Lines starting with `script_prefix` are what a
    Lua script's done() printed, kept for the caller to read."""
    percentiles: dict[int, float] = {}
    requests, seconds, rate, non_2xx = 0, 0.0, 0.0, 0
    socket_errors: dict[str, int] = {}
    script_lines: list[str] = []
    for line in text.splitlines():
        if script_prefix and line.startswith(script_prefix):
            script_lines.append(line[len(script_prefix) :].strip())
        elif match := _PERCENTILE.match(line):
            percentiles[int(match[1])] = _milliseconds(match[2], match[3])
        elif match := _TOTAL.match(line):
            requests = int(match[1])
            seconds = _milliseconds(match[2], match[3]) / 1000
        elif match := _RATE.match(line):
            rate = float(match[1])
        elif match := _NON_2XX.match(line):
            non_2xx = int(match[1])
        elif match := _SOCKET.match(line):
            socket_errors = dict(
                zip(
                    ("connect", "read", "write", "timeout"),
                    map(int, match.groups()),
                    strict=True,
                )
            )
    if 50 not in percentiles or 99 not in percentiles or not requests:
        raise WrkFailed(f"could not read wrk's report:\n{text}")
    return Report(
        requests, seconds, rate, percentiles, non_2xx, socket_errors, script_lines, text
    )


def ensure_wrk() -> str:
    """The path of wrk, installing the Debian package when running as root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise WrkMissing(
            "wrk is not on PATH. Install it (Debian/Ubuntu: "
            "`sudo apt-get install -y wrk`, macOS: `brew install wrk`) and rerun."
        )
    print("wrk is not installed; installing the Debian package `wrk` ...", flush=True)
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "wrk"]):
        completed = subprocess.run(  # noqa: S603 - fixed arguments
            command,
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        if completed.returncode != 0:
            raise WrkMissing(
                f"`{' '.join(command)}` failed ({completed.returncode}):\n"
                f"{completed.stderr[-2000:]}"
            )
    found = shutil.which("wrk")
    if not found:
        raise WrkMissing("apt-get installed `wrk` but it is still not on PATH")
    return found


async def run(
    wrk: str,
    url: str,
    load: Load,
    *,
    headers: dict[str, str] | None = None,
    script: Path | None = None,
    script_args: list[str] | None = None,
    script_prefix: str | None = None,
) -> Report:
    command = [wrk, *load.arguments()]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    if script is not None:
        command += ["-s", str(script)]
    command.append(url)
    if script_args:
        command += ["--", *script_args]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        output, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = output.decode(errors="replace")
    if process.returncode != 0:
        raise WrkFailed(f"wrk exited with {process.returncode}:\n{text}")
    return parse_report(text, script_prefix)
