"""What the machine did during one run against the suite: the CPU split by
process, and the PostgreSQL connections the services opened meanwhile."""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.bench.cpu import CpuMeter, CpuSplit, Watched
from tests.bench.deployment import DatabaseActivity, Deployment, database_activity


@dataclass
class SuiteMeter:
    """Call start() just before the run and stop() just after it.

    `extra` adds process groups to the suite's own (the harness itself when
    it is the load generator); `children_label` names what this process's
    exited children used (wrk, py-spy), or None when none run."""

    deployment: Deployment
    children_label: str | None
    extra: dict[str, list[Watched]] = field(default_factory=dict)
    _meter: CpuMeter | None = None
    _before: DatabaseActivity | None = None

    async def start(self) -> None:
        groups = {
            name: [Watched(child.pid)]
            for name, child in self.deployment.children.items()
        }
        database = self.deployment.database_url
        self._before = await database_activity(database) if database else None
        if self._before is not None:
            groups["postgres"] = _postgres_processes(self._before)
        self._meter = CpuMeter({**groups, **self.extra}, self.children_label)
        self._meter.start()

    async def stop(self) -> tuple[CpuSplit | None, list[str]]:
        """The CPU split, and notes on what disturbed the run."""
        assert self._meter is not None
        database = self.deployment.database_url
        if self._before is None or database is None:
            return self._meter.stop(), []
        after = await database_activity(database)
        late = set(after.backend_pids) - set(self._before.backend_pids)
        split = self._meter.stop({"postgres": [Watched(pid) for pid in late]})
        return split, _connection_notes(self._before, after)


def _postgres_processes(activity: DatabaseActivity) -> list[Watched]:
    """The backends serving the suite's connections, and the server process,
    which reaps the backends of connections closed during the run."""
    backends = [Watched(pid) for pid in activity.backend_pids]
    if activity.server_pid is None:
        return backends
    return [*backends, Watched(activity.server_pid, reaped=True)]


def _connection_notes(before: DatabaseActivity, after: DatabaseActivity) -> list[str]:
    if before.connections_opened is None or after.connections_opened is None:
        return []
    # Less the connection that took `before`: it closed during the run.
    opened = after.connections_opened - before.connections_opened - 1
    if opened <= 0:
        return []
    return [
        f"{opened} new PostgreSQL connections were opened during the run "
        "(the pool closes what it cannot keep and reopens under load)"
    ]
