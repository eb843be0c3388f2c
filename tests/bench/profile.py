"""Where a process spends its time under load, sampled with py-spy.

`py-spy record --format raw` writes one line per distinct stack: frames
joined by `;`, outermost first, then the number of samples. With `--gil`
only the thread holding the GIL is sampled, so the samples are the process's
Python-level CPU time: a share of samples is a share of that time, and
samples over the wall time's worth of samples is how busy the GIL was (1.0
means a single-process server can go no faster). Time spent with the GIL
released (sockets, gRPC's C core, PostgreSQL's wire protocol in C) is not in
these samples; the CPU split in the results covers it.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

SAMPLES_PER_SECOND = 100


class PySpyMissing(RuntimeError):
    pass


def find_py_spy() -> str:
    beside_python = Path(sys.executable).parent / "py-spy"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("py-spy")
    if not found:
        raise PySpyMissing(
            "--profile needs py-spy: `.venv/bin/pip install py-spy` (sampling "
            "another process also needs root or CAP_SYS_PTRACE)"
        )
    return found


@dataclass(frozen=True)
class Cost:
    frame: str
    share: float


@dataclass(frozen=True)
class Profile:
    process: str
    raw_path: Path
    samples: int
    seconds: int
    # Share of the wall time the GIL was held by sampled Python code.
    gil_busy: float
    # Where the samples were: the frame on top of the stack, the same by
    # package, and OmniHub's own frames anywhere in the stack.
    self_costs: list[Cost]
    package_costs: list[Cost]
    omnihub_costs: list[Cost]


async def record(py_spy: str, pid: int, seconds: int, output: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        py_spy,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(seconds),
        "--rate",
        str(SAMPLES_PER_SECOND),
        "--format",
        "raw",
        "--nolineno",
        "--gil",
        "--nonblocking",
        "--output",
        str(output),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        text, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"py-spy failed on pid {pid}: {text.decode()[-2000:]}")


OMNIHUB_PACKAGES = ("libs", "gateway", "services")


def _file_of(frame: str) -> str:
    """`Class.method (package/module.py)` -> `package/module.py`."""
    return frame.rpartition(" (")[2].rstrip(")")


def _package_of(frame: str) -> str:
    parts = _file_of(frame).split("/")
    if parts[0] in OMNIHUB_PACKAGES and len(parts) > 2:
        return "/".join(parts[:2])
    return parts[0].removesuffix(".py")


def summarise(process: str, raw_path: Path, seconds: int, top: int = 10) -> Profile:
    leaves: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    omnihub: Counter[str] = Counter()
    total = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count, frames = int(count_text), stack.split(";")
        total += count
        leaves[frames[-1]] += count
        packages[_package_of(frames[-1])] += count
        for frame in set(frames):
            if _file_of(frame).startswith(OMNIHUB_PACKAGES):
                omnihub[frame] += count

    def costs(counter: Counter[str]) -> list[Cost]:
        if not total:
            return []
        return [Cost(frame, n / total) for frame, n in counter.most_common(top)]

    return Profile(
        process=process,
        raw_path=raw_path,
        samples=total,
        seconds=seconds,
        gil_busy=total / (seconds * SAMPLES_PER_SECOND) if seconds else 0.0,
        self_costs=costs(leaves),
        package_costs=costs(packages),
        omnihub_costs=costs(omnihub),
    )
