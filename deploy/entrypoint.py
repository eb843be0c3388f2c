"""The container image's entry point: the first argument picks the process.

    python -m deploy.entrypoint [--dry-run] COMMAND [ARGS...]

    gateway                    the REST gateway (listens on PORT, 3001)
    worker                     the generation worker
    auth, catalog, generation, chat, workspace, billing, admin
                               that gRPC service (its port is in *_ADDRESS)
    migrate SERVICE            bring one service's schema up to date
    migrate all                every schema, one after another
    ensure-admin               create the operator account (ADMIN_USERNAME)
    reconcile                  check billing's ledger; exits 1 if it disagrees
    simulator fal|openrouter|razorpay [ARGS...]
                               a provider simulator on all interfaces, on
                               its usual port unless ARGS say --port

`--dry-run` prints the commands instead of running them. A single command
replaces this process, so the container's stop signal reaches it directly;
`migrate all` runs its commands in turn and stops at the first that fails.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Sequence
from types import FrameType

SERVICES = ("auth", "catalog", "generation", "chat", "workspace", "billing", "admin")

# The ports `make run` gives the simulators too (deploy/local.py).
SIMULATOR_PORTS = {"razorpay": 3101, "fal": 3102, "openrouter": 3103}

USAGE = __doc__ or ""

Command = list[str]


class UsageError(Exception):
    """The arguments name no command of the image."""


def _python(module: str, *args: str) -> Command:
    return [sys.executable, "-m", module, *args]


def _no_more(command: str, extra: Sequence[str]) -> None:
    if extra:
        raise UsageError(f"{command} takes no arguments, got {' '.join(extra)}")


def _migrations(target: Sequence[str]) -> list[Command]:
    if len(target) != 1:
        raise UsageError("migrate needs one service name or `all`")
    names = SERVICES if target[0] == "all" else target
    if names[0] not in SERVICES:
        raise UsageError(f"migrate: no service {names[0]!r}")
    return [_python(f"services.{name}.main", "migrate") for name in names]


def _simulator(args: Sequence[str]) -> Command:
    if not args or args[0] not in SIMULATOR_PORTS:
        raise UsageError("simulator needs one of: " + ", ".join(SIMULATOR_PORTS))
    name, extra = args[0], list(args[1:])
    # In a container the simulator must answer other containers, not only
    # loopback; arguments given later win, as argparse keeps the last one.
    every_interface = "0.0.0.0"  # noqa: S104
    defaults = ["--host", every_interface, "--port", str(SIMULATOR_PORTS[name])]
    return _python(f"deploy.simulators.{name}", *defaults, *extra)


def commands_for(argv: Sequence[str]) -> list[Command]:
    """The commands, run in order, that `argv` asks for."""
    if not argv:
        raise UsageError("no command given")
    command, rest = argv[0], argv[1:]
    if command == "migrate":
        return _migrations(rest)
    if command == "simulator":
        return [_simulator(rest)]
    single = {
        "gateway": _python("gateway.main"),
        "worker": _python("services.generation.worker"),
        "ensure-admin": _python("services.auth.main", "ensure-admin"),
        "reconcile": _python("services.billing.main", "reconcile"),
        **{name: _python(f"services.{name}.main", "serve") for name in SERVICES},
    }
    if command not in single:
        raise UsageError(f"unknown command {command!r}")
    _no_more(command, rest)
    return [single[command]]


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # As PID 1 this process would ignore SIGTERM by default; exiting kills
    # the running child (subprocess.run does that on the way out).
    raise SystemExit(128 + signum)


def run_in_turn(commands: list[Command]) -> int:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    for command in commands:
        code = subprocess.run(command, check=False).returncode  # noqa: S603
        if code != 0:
            print(f"entrypoint: {shlex.join(command)} failed", file=sys.stderr)
            return code
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    dry_run = args[:1] == ["--dry-run"]
    if dry_run:
        args = args[1:]
    if args[:1] in (["-h"], ["--help"], ["help"]):
        print(USAGE)
        return
    try:
        commands = commands_for(args)
    except UsageError as error:
        print(f"entrypoint: {error}\n{USAGE}", file=sys.stderr)
        sys.exit(2)
    if dry_run:
        for command in commands:
            print(shlex.join(command))
        return
    if len(commands) == 1:
        os.execv(commands[0][0], commands[0])  # noqa: S606
    sys.exit(run_in_turn(commands))


if __name__ == "__main__":
    main()
