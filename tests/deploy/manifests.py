"""The deployment files as data: the Kubernetes manifests, the compose file
and .env.example, read the way kubectl, docker compose and the processes
read them."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from libs.config import Settings

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"

SERVICES = ("auth", "catalog", "generation", "chat", "workspace", "billing", "admin")
IMAGE = "omnihub:0.1.0"
SECRET = "omnihub-secrets"
CONFIG = "omnihub-config"

# Every variable a process reads through libs/config.py.
SETTINGS = frozenset(name.upper() for name in Settings.model_fields)

Manifest = dict[str, Any]


def default_port(service: str) -> int:
    """The port a service listens on unless told otherwise (its *_ADDRESS)."""
    address = str(Settings.model_fields[f"{service}_address"].default)
    return int(address.rsplit(":", 1)[1])


def manifest_files() -> list[Path]:
    return sorted(
        p for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml"
    )


@cache
def documents(path: Path) -> tuple[Manifest, ...]:
    with path.open() as file:
        return tuple(doc for doc in yaml.safe_load_all(file) if doc)


@cache
def kustomization() -> Manifest:
    loaded: Manifest = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    return loaded


def applied() -> list[Manifest]:
    """Every object `kubectl apply -k deploy/kubernetes` creates."""
    return [
        doc
        for name in kustomization()["resources"]
        for doc in documents(KUBERNETES / name)
    ]


def objects(kind: str) -> dict[str, Manifest]:
    return {doc["metadata"]["name"]: doc for doc in applied() if doc["kind"] == kind}


def the(kind: str, name: str) -> Manifest:
    found = objects(kind)
    assert name in found, f"no {kind} named {name} in deploy/kubernetes"
    return found[name]


def pod_spec(workload: Manifest) -> Manifest:
    spec: Manifest = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: Manifest) -> list[Manifest]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def main_container(workload: Manifest) -> Manifest:
    (container,) = pod_spec(workload)["containers"]
    return dict(container)


def workloads() -> dict[str, Manifest]:
    return {**objects("Deployment"), **objects("Job")}


def config_map() -> dict[str, str]:
    data: dict[str, str] = the("ConfigMap", CONFIG)["data"]
    return data


def secret_template() -> Manifest:
    (secret,) = documents(KUBERNETES / "secret.example.yaml")
    return secret


@cache
def compose() -> Manifest:
    loaded: Manifest = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


def compose_services() -> dict[str, Manifest]:
    services: dict[str, Manifest] = compose()["services"]
    return services


_VARIABLE = re.compile(r"^#?([A-Z][A-Z0-9_]*)=", re.MULTILINE)


def env_example_names() -> list[str]:
    """Variables .env.example sets (`NAME=`) or shows unset (`#NAME=`)."""
    return _VARIABLE.findall(ENV_EXAMPLE.read_text())
