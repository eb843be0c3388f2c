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
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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
    seconds: float
    # Share of the wall time the GIL was held by sampled Python code.
    gil_busy: float
    # Where the samples were: the frame on top of the stack, the same by
    # package, and OmniHub's own frames anywhere in the stack.
    self_costs: list[Cost]
    package_costs: list[Cost]
    omnihub_costs: list[Cost]


# How long py-spy may take to attach to a process before it starts sampling.
ATTACH_TIMEOUT_SECONDS = 30.0


class Recording:
    """py-spy sampling one process from start() until stop(): the load, not
    a fixed duration, decides how long. The clock starts when py-spy says
    it has attached, so the wall time counts only sampled time."""

    def __init__(self, py_spy: str, process: str, pid: int, output: Path) -> None:
        self.py_spy = py_spy
        self.process = process
        self.pid = pid
        self.output = output
        self._child: asyncio.subprocess.Process | None = None
        self._started = 0.0
        self._log: list[bytes] = []

    async def start(self) -> None:
        self._child = await asyncio.create_subprocess_exec(
            self.py_spy,
            "record",
            "--pid",
            str(self.pid),
            "--rate",
            str(SAMPLES_PER_SECOND),
            "--format",
            "raw",
            "--nolineno",
            "--gil",
            "--nonblocking",
            "--output",
            str(self.output),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        await asyncio.wait_for(self._attached(), ATTACH_TIMEOUT_SECONDS)
        self._started = time.monotonic()

    async def _attached(self) -> None:
        assert self._child is not None
        assert self._child.stdout is not None
        while line := await self._child.stdout.readline():
            self._log.append(line)
            if b"Sampling process" in line:
                return
        await self._child.wait()
        raise self._failure()

    async def stop(self) -> Profile:
        """Stop sampling (py-spy writes its file on SIGINT) and summarise."""
        assert self._child is not None
        seconds = time.monotonic() - self._started
        self._child.send_signal(signal.SIGINT)
        rest, _ = await self._child.communicate()
        self._log.append(rest)
        if self._child.returncode != 0:
            raise self._failure()
        return summarise(self.process, self.output, seconds)

    async def kill(self) -> None:
        """Make sure py-spy is gone, however the run ended."""
        if self._child is not None and self._child.returncode is None:
            self._child.kill()
            await self._child.wait()

    def _failure(self) -> RuntimeError:
        text = b"".join(self._log).decode(errors="replace")
        return RuntimeError(f"py-spy failed on pid {self.pid}: {text[-2000:]}")


@asynccontextmanager
async def sampled(
    py_spy: str, pids: dict[str, int], paths: dict[str, Path]
) -> AsyncIterator[list[Profile]]:
    """Sample each named process while the block runs; the list it yields is
    filled with their profiles when the block ends without an error."""
    recordings = [
        Recording(py_spy, name, pid, paths[name]) for name, pid in pids.items()
    ]
    profiles: list[Profile] = []
    try:
        for recording in recordings:
            await recording.start()
        yield profiles
        for recording in recordings:
            profiles.append(await recording.stop())
    finally:
        for recording in recordings:
            await recording.kill()


OMNIHUB_PACKAGES = ("libs", "gateway", "services")
# A frame in at least this share of the busiest frame's samples is taken for
# part of the process's entry chain.
ENTRY_CHAIN_SHARE = 0.98


def _file_of(frame: str) -> str:
    """`Class.method (package/module.py)` -> `package/module.py`."""
    return frame.rpartition(" (")[2].rstrip(")")


def _package_of(frame: str) -> str:
    parts = _file_of(frame).split("/")
    if parts[0] in OMNIHUB_PACKAGES and len(parts) > 2:
        return "/".join(parts[:2])
    return parts[0].removesuffix(".py")


def summarise(process: str, raw_path: Path, seconds: float, top: int = 10) -> Profile:
    leaves: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    omnihub: Counter[str] = Counter()
    total = 0
    # py-spy writes no file when it caught no samples at all.
    text = raw_path.read_text() if raw_path.exists() else ""
    for line in text.splitlines():
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
        omnihub_costs=costs(_without_entry_chain(omnihub)),
    )


def _without_entry_chain(frames: Counter[str]) -> Counter[str]:
    """Drop the frames nearly every busy stack passes through (the process's
    main(), the event loop's runner): they say nothing about where time goes."""
    if not frames:
        return frames
    busiest = max(frames.values())
    return Counter(
        {frame: n for frame, n in frames.items() if n < ENTRY_CHAIN_SHARE * busiest}
    )
