"""deploy/kubernetes/, checked offline: every object against the Kubernetes
API schemas, and each process's manifests against what the process really
listens on, reads and needs to stop cleanly."""

from __future__ import annotations

import inspect
from pathlib import Path

import kubernetes_validate  # type: ignore[import-untyped]
import pytest

from libs.grpc.server import run_until_signalled
from services.generation.worker import STOP_GRACE_SECONDS
from tests.deploy.manifests import (
    CONFIG,
    IMAGE,
    SECRET,
    SERVICES,
    SETTINGS,
    Manifest,
    applied,
    compose_services,
    config_map,
    containers,
    default_port,
    documents,
    kustomization,
    main_container,
    manifest_files,
    objects,
    pod_spec,
    secret_template,
    the,
    workloads,
)

# The oldest Kubernetes the manifests are written for (README.md), and the
# newest the schemas know.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
AUTOSCALED = {"gateway", "worker", "generation", "chat"}
# uvicorn's timeout_graceful_shutdown in gateway/main.py.
GATEWAY_GRACE_SECONDS = 10
MEDIA_USERS = {"generation", "worker", "gateway"}


def _env(container: Manifest) -> dict[str, Manifest]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def _selects(selector: dict[str, str], workload: Manifest) -> bool:
    labels = workload["spec"]["template"]["metadata"]["labels"]
    return all(labels.get(key) == value for key, value in selector.items())


def _service_port(service: str) -> int:
    return int(config_map()[f"{service.upper()}_ADDRESS"].rsplit(":", 1)[1])


class TestSchemas:
    @pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
    @pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
    def test_every_object_is_valid(self, path: Path, version: str) -> None:
        for doc in documents(path):
            # strict: a misspelt field is an error, not silently dropped.
            kubernetes_validate.validate(doc, version, strict=True)

    def test_kustomization_applies_every_manifest_but_the_secret_template(
        self,
    ) -> None:
        listed = set(kustomization()["resources"])
        present = {path.name for path in manifest_files()}
        assert listed == present - {"secret.example.yaml"}

    def test_no_object_names_a_namespace(self) -> None:
        assert not [doc for doc in applied() if "namespace" in doc["metadata"]]

    def test_kustomization_sets_the_image_every_container_runs(self) -> None:
        (image,) = kustomization()["images"]
        name, tag = IMAGE.split(":")
        assert (image["name"], image["newTag"]) == (name, tag)
        for workload in workloads().values():
            assert {c["image"] for c in containers(workload)} == {IMAGE}


@pytest.mark.parametrize("service", SERVICES)
class TestServices:
    def test_deployment_serves_the_service(self, service: str) -> None:
        container = main_container(the("Deployment", service))
        assert container["image"] == IMAGE
        assert container["args"] == [service]

    def test_grpc_port_is_the_one_it_listens_on(self, service: str) -> None:
        ports = {
            p["name"]: p for p in main_container(the("Deployment", service))["ports"]
        }
        assert ports["grpc"]["containerPort"] == default_port(service)
        assert _service_port(service) == default_port(service)

    def test_probes_ask_grpc_health_on_that_port(self, service: str) -> None:
        container = main_container(the("Deployment", service))
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"] == {"port": default_port(service)}, probe

    def test_headless_service_names_the_grpc_port(self, service: str) -> None:
        spec = the("Service", service)["spec"]
        assert spec["clusterIP"] == "None"
        grpc_port = next(p for p in spec["ports"] if p["name"] == "grpc")
        assert grpc_port["port"] == default_port(service)
        assert grpc_port["targetPort"] == "grpc"
        assert _selects(spec["selector"], the("Deployment", service))

    def test_callers_resolve_every_pod_of_it(self, service: str) -> None:
        address = config_map()[f"{service.upper()}_ADDRESS"]
        assert address == f"dns:///{service}:{default_port(service)}"


class TestGateway:
    def test_serves_http_on_port(self) -> None:
        container = main_container(the("Deployment", "gateway"))
        assert container["args"] == ["gateway"]
        (port,) = container["ports"]
        assert port == {"name": "http", "containerPort": 3001, "protocol": "TCP"}
        assert int(config_map()["PORT"]) == 3001

    def test_ready_on_readyz_alive_on_healthz(self) -> None:
        container = main_container(the("Deployment", "gateway"))
        assert container["readinessProbe"]["httpGet"] == {
            "path": "/readyz",
            "port": "http",
        }
        assert container["livenessProbe"]["httpGet"] == {
            "path": "/healthz",
            "port": "http",
        }

    def test_service_balances_over_the_pods(self) -> None:
        spec = the("Service", "gateway")["spec"]
        assert spec["type"] == "ClusterIP"
        assert [p["targetPort"] for p in spec["ports"]] == ["http"]
        assert _selects(spec["selector"], the("Deployment", "gateway"))


class TestWorker:
    def test_runs_the_worker_and_checks_its_process(self) -> None:
        container = main_container(the("Deployment", "worker"))
        assert container["args"] == ["worker"]
        assert container["livenessProbe"]["exec"]["command"] == [
            "python",
            "-m",
            "deploy.healthcheck",
            "process",
            "services.generation.worker",
        ]

    def test_no_service_sends_it_traffic(self) -> None:
        worker = the("Deployment", "worker")
        for service in objects("Service").values():
            assert not _selects(service["spec"]["selector"], worker)

    def test_stops_within_the_grace_period(self) -> None:
        grace = pod_spec(the("Deployment", "worker"))["terminationGracePeriodSeconds"]
        assert grace > STOP_GRACE_SECONDS


class TestMigrationJob:
    def test_migrates_every_schema_then_ensures_the_operator(self) -> None:
        spec = pod_spec(the("Job", "omnihub-migrate"))
        assert [c["args"] for c in spec["initContainers"]] == [["migrate", "all"]]
        assert [c["args"] for c in spec["containers"]] == [["ensure-admin"]]
        assert spec["restartPolicy"] == "Never"

    def test_operator_password_comes_from_the_secret(self) -> None:
        job = the("Job", "omnihub-migrate")
        (ensure_admin,) = pod_spec(job)["containers"]
        reference = _env(ensure_admin)["ADMIN_PASSWORD"]["valueFrom"]
        assert reference["secretKeyRef"]["name"] == SECRET
        assert "ADMIN_USERNAME" in config_map()


@pytest.mark.parametrize("name", sorted(workloads()))
class TestEveryPod:
    def test_sets_only_settings_that_exist(self, name: str) -> None:
        for container in containers(workloads()[name]):
            unknown = set(_env(container)) - SETTINGS
            assert not unknown, f"{container['name']} sets {unknown}"
            assert container["envFrom"] == [{"configMapRef": {"name": CONFIG}}]

    def test_secrets_come_from_the_secret_by_their_own_name(self, name: str) -> None:
        template = secret_template()["stringData"]
        for container in containers(workloads()[name]):
            for variable, entry in _env(container).items():
                assert "value" not in entry, f"{variable} is written in the manifest"
                reference = entry["valueFrom"]["secretKeyRef"]
                assert reference["name"] == SECRET
                assert reference["key"] == variable
                assert variable in template

    def test_runs_unprivileged_on_a_read_only_root(self, name: str) -> None:
        spec = pod_spec(workloads()[name])
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        assert spec["automountServiceAccountToken"] is False
        scratch = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for container in containers(workloads()[name]):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts.get("/tmp") in scratch  # noqa: S108

    def test_requests_and_limits_resources(self, name: str) -> None:
        for container in containers(workloads()[name]):
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) == {"cpu", "memory"}


def test_config_map_holds_only_settings() -> None:
    assert set(config_map()) <= SETTINGS


def test_secret_template_holds_only_settings_and_no_real_value() -> None:
    template = secret_template()["stringData"]
    assert set(template) <= SETTINGS
    for key, placeholder in template.items():
        assert "<" in placeholder, f"{key} looks like a real value"


@pytest.mark.parametrize("name", sorted(objects("Deployment")))
def test_every_deployment_has_a_disruption_budget(name: str) -> None:
    budget = the("PodDisruptionBudget", name)["spec"]
    assert budget["maxUnavailable"] == 1
    assert _selects(budget["selector"]["matchLabels"], the("Deployment", name))


def test_autoscalers_size_the_busy_processes() -> None:
    autoscalers = objects("HorizontalPodAutoscaler")
    assert set(autoscalers) == AUTOSCALED
    for name, autoscaler in autoscalers.items():
        assert autoscaler["apiVersion"] == "autoscaling/v2"
        target = autoscaler["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", name)
        assert autoscaler["spec"]["minReplicas"] >= 2
        # A fixed count would be reset by every `kubectl apply`.
        assert "replicas" not in the("Deployment", name)["spec"]
    for name in set(objects("Deployment")) - AUTOSCALED:
        assert the("Deployment", name)["spec"]["replicas"] >= 2


@pytest.mark.parametrize("name", [*SERVICES, "gateway"])
def test_pods_behind_a_service_drain_before_stopping(name: str) -> None:
    deployment = the("Deployment", name)
    sleep, seconds = main_container(deployment)["lifecycle"]["preStop"]["exec"][
        "command"
    ]
    assert sleep == "sleep"
    if name == "gateway":
        grace = GATEWAY_GRACE_SECONDS
    else:
        grace = inspect.signature(run_until_signalled).parameters["grace"].default
    period = pod_spec(deployment)["terminationGracePeriodSeconds"]
    assert period > int(seconds) + grace


def test_media_volume_is_shared_by_its_writers_and_the_gateway() -> None:
    claim = the("PersistentVolumeClaim", "omnihub-media")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    media_dir = config_map()["MEDIA_DIR"]
    for name, deployment in objects("Deployment").items():
        volumes = {
            v["name"]
            for v in pod_spec(deployment)["volumes"]
            if v.get("persistentVolumeClaim", {}).get("claimName") == "omnihub-media"
        }
        mounts = [
            m
            for m in main_container(deployment)["volumeMounts"]
            if m["name"] in volumes
        ]
        if name not in MEDIA_USERS:
            assert not mounts, name
            continue
        (mount,) = mounts
        assert mount["mountPath"] == media_dir
        assert mount.get("readOnly", False) is (name == "gateway")


def test_compose_runs_the_same_processes() -> None:
    services = compose_services()
    for name, deployment in objects("Deployment").items():
        assert name in services, f"docker-compose.yml has no {name}"
        assert services[name]["command"] == main_container(deployment)["args"]
    for service in SERVICES:
        address = services[service]["environment"][f"{service.upper()}_ADDRESS"]
        assert address == config_map()[f"{service.upper()}_ADDRESS"]
