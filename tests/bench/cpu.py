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
from dataclasses import dataclass, field
from pathlib import Path

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Watched:
    """A process to charge to a group. With `reaped`, the CPU time of its
    children that have exited counts too: how the PostgreSQL server's
    short-lived connection processes are caught."""

    pid: int
    reaped: bool = False


def process_seconds(watched: Watched) -> float | None:
    """CPU seconds (user + system, all threads) a process has used so far."""
    try:
        stat = Path(f"/proc/{watched.pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the parenthesised name, which may contain spaces:
    # utime, stime, cutime and cstime are the 12th to 15th of these.
    fields = stat.rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])
    if watched.reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICKS_PER_SECOND


def parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])


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


@dataclass
class CpuMeter:
    """Call start() just before the run and stop() just after it. A process
    that exits in between is charged only what its parent reaps (see
    Watched.reaped)."""

    groups: dict[str, list[Watched]]
    # What this process's exited children used (wrk, py-spy), charged under
    # this name; None when no child runs during the measurement.
    children_label: str | None
    _started: dict[Watched, float] = field(default_factory=dict)
    _machine: float | None = None
    _children: float = 0.0
    _wall: float = 0.0

    def start(self) -> None:
        self._started = {}
        for watched in (w for group in self.groups.values() for w in group):
            seconds = process_seconds(watched)
            if seconds is not None:
                self._started[watched] = seconds
        self._machine = _machine_seconds()
        self._children = _children_seconds()
        self._wall = time.monotonic()

    def stop(self, late: dict[str, list[Watched]] | None = None) -> CpuSplit | None:
        """`late`: processes that started during the run, all of whose CPU
        time falls inside it, by the group to charge them to."""
        wall = time.monotonic() - self._wall
        machine = _machine_seconds()
        if machine is None or self._machine is None or wall <= 0:
            return None
        cores = {name: self._used(group) / wall for name, group in self.groups.items()}
        for name, group in (late or {}).items():
            used = (process_seconds(w) for w in group)
            cores[name] = cores.get(name, 0.0) + sum(u or 0.0 for u in used) / wall
        if self.children_label is not None:
            children = _children_seconds() - self._children
            cores[self.children_label] = children / wall
        return CpuSplit(cores, (machine - self._machine) / wall, os.cpu_count() or 1)

    def _used(self, group: list[Watched]) -> float:
        total = 0.0
        for watched in group:
            before = self._started.get(watched)
            after = process_seconds(watched)
            if before is not None and after is not None:
                total += after - before
        return total
