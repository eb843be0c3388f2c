"""Container health checks: exit 0 when healthy, 1 when not, 2 on bad usage.

    python -m deploy.healthcheck                   what this container runs
    python -m deploy.healthcheck grpc HOST:PORT    grpc.health.v1 says SERVING
    python -m deploy.healthcheck http URL          URL answers 200
    python -m deploy.healthcheck answers URL       URL answers HTTP at all
    python -m deploy.healthcheck process MODULE    `python -m MODULE` is running

Without arguments (the image's HEALTHCHECK) the check follows from the
OmniHub process found among the container's processes: a service's gRPC
health on the port of its *_ADDRESS, the gateway's /healthz on PORT, the
worker's process (it has no port), a simulator's HTTP port. One-off commands
(migrate, ensure-admin, reconcile) are healthy while they run. Kubernetes
uses its own probes instead (deploy/kubernetes/).
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from libs.config import Settings

SERVICES = ("auth", "catalog", "generation", "chat", "workspace", "billing", "admin")
TIMEOUT_SECONDS = 2.0

Kind = Literal["grpc", "http", "answers", "process", "one-off"]
KINDS: dict[str, Kind] = {
    "grpc": "grpc",
    "http": "http",
    "answers": "answers",
    "process": "process",
}


@dataclass(frozen=True)
class Check:
    kind: Kind
    target: str


@dataclass(frozen=True)
class Invocation:
    """A running `python -m module args...`."""

    module: str
    args: tuple[str, ...]


def invocation_of(argv: Sequence[str]) -> Invocation | None:
    for index, arg in enumerate(argv[:-1]):
        if arg == "-m":
            return Invocation(argv[index + 1], tuple(argv[index + 2 :]))
    return None


def running(proc: Path = Path("/proc")) -> Iterator[Invocation]:
    """Every live `python -m ...` process (a zombie's command line is empty)."""
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:  # it ended while we looked
            continue
        found = invocation_of(raw.decode(errors="replace").split("\0"))
        if found is not None:
            yield found


def _port_of(address: str) -> str:
    return address.rsplit(":", 1)[1]


def _last_option(args: Sequence[str], option: str) -> str | None:
    values = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == option]
    return values[-1] if values else None


def check_for(invocation: Invocation, settings: Settings) -> Check | None:
    """The check for one OmniHub process, or None for anything else."""
    module, args = invocation.module, invocation.args
    if module == "services.generation.worker":
        return Check("process", module)
    if module == "gateway.main":
        return Check("http", f"http://127.0.0.1:{settings.port}/healthz")
    parts = module.split(".")
    if len(parts) == 3 and parts[0] == "services" and parts[1] in SERVICES:
        if args[:1] not in ((), ("serve",)):
            return Check("one-off", module)
        port = _port_of(settings.address_of(parts[1]))
        return Check("grpc", f"localhost:{port}")
    if module.startswith("deploy.simulators."):
        listening = _last_option(args, "--port")
        if listening is None:
            return None
        return Check("answers", f"http://127.0.0.1:{listening}/")
    if module == "deploy.entrypoint":  # runs `migrate all`
        return Check("one-off", module)
    return None


def container_check(
    processes: Iterable[Invocation], settings: Settings
) -> Check | None:
    for invocation in processes:
        check = check_for(invocation, settings)
        if check is not None:
            return check
    return None


def serving(target: str, timeout: float = TIMEOUT_SECONDS) -> bool:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def http_status(url: str, timeout: float = TIMEOUT_SECONDS) -> int | None:
    """The status `url` answers with, or None when nothing answers."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an HTTP URL: {url}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError):
        return None


def passes(check: Check) -> bool:
    if check.kind == "grpc":
        return serving(check.target)
    if check.kind == "http":
        return http_status(check.target) == 200
    if check.kind == "answers":
        return http_status(check.target) is not None
    if check.kind == "process":
        return any(found.module == check.target for found in running())
    return True


def main(argv: Sequence[str]) -> int:
    if not argv:
        check = container_check(running(), Settings())
        if check is None:
            print("healthcheck: no OmniHub process is running", file=sys.stderr)
            return 1
    elif len(argv) == 2 and argv[0] in KINDS:
        check = Check(KINDS[argv[0]], argv[1])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    if passes(check):
        return 0
    print(f"healthcheck: {check.kind} {check.target} failed", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
