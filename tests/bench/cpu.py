"""Where the machine's cores went during one wrk run.

On a small machine the load generator, the database and the processes under
test share the same cores, so a throughput figure means little without the
split. Linux only: read from /proc, and from this process's rusage for wrk
(a child that exits inside the window). Elsewhere the split is left out.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def _process_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (all its threads) so far."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    # utime and stime are the 14th and 15th fields; the first two (pid and
    # the parenthesised name) are cut off above.
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_SECOND


def _machine_seconds() -> float | None:
    """Busy CPU seconds of the whole machine (every core) so far."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    ticks = [int(value) for value in first[1:9]]
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / _TICKS_PER_SECOND


def _children_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class CpuSplit:
    """Cores kept busy on average, by process group; `other` is whatever the
    machine did besides (other users of the machine included)."""

    cores: dict[str, float]
    machine: float
    available: int

    @property
    def other(self) -> float:
        return max(0.0, self.machine - sum(self.cores.values()))

    def describe(self) -> str:
        parts = [f"{name} {cores:.2f}" for name, cores in self.cores.items()]
        return (
            ", ".join([*parts, f"other {self.other:.2f}"])
            + f" (machine {self.machine:.2f} of {self.available} cores)"
        )


class CpuMeter:
    """Call start() just before the run and stop() just after it."""

    def __init__(self, pids: dict[str, list[int]], children_label: str) -> None:
        self._pids = pids
        self._children_label = children_label
        self._started: dict[str, float | None] = {}
        self._wall = 0.0
        self._machine: float | None = None
        self._children = 0.0

    def _groups(self) -> dict[str, float | None]:
        totals: dict[str, float | None] = {}
        for name, pids in self._pids.items():
            seconds = [_process_seconds(pid) for pid in pids]
            known = [s for s in seconds if s is not None]
            totals[name] = sum(known) if known else None
        return totals

    def start(self) -> None:
        self._started = self._groups()
        self._machine = _machine_seconds()
        self._children = _children_seconds()
        self._wall = time.monotonic()

    def stop(self, late: dict[str, list[int]] | None = None) -> CpuSplit | None:
        """`late`: processes that started during the run (all of their CPU
        time falls inside it), by the group to add them to."""
        wall = time.monotonic() - self._wall
        machine = _machine_seconds()
        if machine is None or self._machine is None or wall <= 0:
            return None
        cores: dict[str, float] = {}
        for name, seconds in self._groups().items():
            before = self._started.get(name)
            if seconds is not None and before is not None:
                cores[name] = (seconds - before) / wall
        for name, pids in (late or {}).items():
            known = [s for s in map(_process_seconds, pids) if s is not None]
            if known and name in cores:
                cores[name] += sum(known) / wall
        cores[self._children_label] = (_children_seconds() - self._children) / wall
        return CpuSplit(cores, (machine - self._machine) / wall, os.cpu_count() or 1)
