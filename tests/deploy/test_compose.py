"""docker-compose.yml and .env.example, read as docker compose reads them:
the processes it starts, the order it starts them in, how it checks their
health, and that every variable is one a process really reads."""

from __future__ import annotations

import re

import pytest

from deploy.entrypoint import SIMULATOR_PORTS
from libs.config import Settings
from tests.deploy.manifests import (
    ENV_EXAMPLE,
    SERVICES,
    SETTINGS,
    compose,
    compose_services,
    default_port,
    env_example_names,
)

SIMULATORS = {f"{name}-simulator": name for name in SIMULATOR_PORTS}
MEDIA_DIR = "/var/lib/omnihub/media"
# Variables that are not settings of libs/config.py, and who reads them.
COMPOSE_VARIABLES = {"POSTGRES_PASSWORD", "COMPOSE_PROFILES", "GATEWAY_PUBLISHED_PORT"}
SIMULATOR_VARIABLES = {"RAZORPAY_WEBHOOK_URL", "FAL_SIMULATOR_SIGNING_KEY"}
MAKE_RUN_VARIABLES = {"RAZORPAY_SIMULATOR_PORT"}
REQUIRED_SECRETS = ("JWT_SECRET", "POSTGRES_PASSWORD", "ADMIN_PASSWORD")

COMPLETED = {"condition": "service_completed_successfully"}
HEALTHY = {"condition": "service_healthy"}

_DEFAULT = re.compile(r"^\$\{(?P<name>[A-Z_]+):-(?P<default>[^}]*)\}$")


def _environment() -> dict[str, str]:
    environment: dict[str, str] = compose()["x-omnihub"]["environment"]
    return environment


def _default_of(variable: str) -> str:
    """The value compose uses when .env does not set `variable`."""
    match = _DEFAULT.match(_environment()[variable])
    assert match is not None, variable
    assert match["name"] == variable
    return match["default"]


def test_runs_every_process_of_the_suite() -> None:
    expected = {
        "postgres",
        "migrate",
        "ensure-admin",
        *SERVICES,
        "worker",
        "gateway",
        *SIMULATORS,
    }
    assert set(compose_services()) == expected


def test_migrations_run_once_postgres_is_healthy() -> None:
    migrate = compose_services()["migrate"]
    assert migrate["command"] == ["migrate", "all"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {"postgres": HEALTHY}
    ensure_admin = compose_services()["ensure-admin"]
    assert ensure_admin["command"] == ["ensure-admin"]
    assert ensure_admin["depends_on"] == {"migrate": COMPLETED}


@pytest.mark.parametrize("service", SERVICES)
class TestServices:
    def test_starts_after_the_migrations(self, service: str) -> None:
        assert compose_services()[service]["depends_on"] == {"migrate": COMPLETED}

    def test_healthy_when_grpc_health_serves_on_its_port(self, service: str) -> None:
        check = compose_services()[service]["healthcheck"]["test"]
        port = default_port(service)
        assert check == [
            "CMD",
            "python",
            "-m",
            "deploy.healthcheck",
            "grpc",
            f"localhost:{port}",
        ]
        assert _environment()[f"{service.upper()}_ADDRESS"] == (
            f"dns:///{service}:{port}"
        )


def test_gateway_waits_for_every_service_and_the_operator() -> None:
    gateway = compose_services()["gateway"]
    expected = {service: HEALTHY for service in SERVICES}
    expected["ensure-admin"] = COMPLETED
    assert gateway["depends_on"] == expected
    assert gateway["healthcheck"]["test"][-2:] == [
        "http",
        "http://127.0.0.1:3001/readyz",
    ]
    assert gateway["ports"] == ["${GATEWAY_PUBLISHED_PORT:-3001}:3001"]


def test_worker_is_checked_by_its_process() -> None:
    worker = compose_services()["worker"]
    assert worker["command"] == ["worker"]
    assert worker["healthcheck"]["test"][-2:] == [
        "process",
        "services.generation.worker",
    ]


@pytest.mark.parametrize("name", ["generation", "worker", "gateway"])
def test_media_volume_is_shared(name: str) -> None:
    assert compose_services()[name]["volumes"] == [f"media:{MEDIA_DIR}"]


@pytest.mark.parametrize(("service", "provider"), sorted(SIMULATORS.items()))
def test_simulators_run_only_in_their_profile(service: str, provider: str) -> None:
    simulator = compose_services()[service]
    assert simulator["profiles"] == ["simulators"]
    assert simulator["command"] == ["simulator", provider]
    port = SIMULATOR_PORTS[provider]
    assert simulator["healthcheck"]["test"][-1] == f"http://127.0.0.1:{port}/"


def test_providers_default_to_the_simulators() -> None:
    urls = {
        "FAL_QUEUE_URL": "fal",
        "FAL_JWKS_URL": "fal",
        "OPENROUTER_BASE_URL": "openrouter",
        "RAZORPAY_BASE_URL": "razorpay",
    }
    for variable, provider in urls.items():
        expected = f"http://{provider}-simulator:{SIMULATOR_PORTS[provider]}"
        assert _default_of(variable).startswith(expected), variable
    for key in ("FAL_KEY", "OPENROUTER_API_KEY", "RAZORPAY_KEY_ID"):
        assert _default_of(key).startswith(("simulated", "rzp_test_")), key


def test_sets_only_variables_a_process_reads() -> None:
    for name, service in compose_services().items():
        if name == "postgres":
            continue
        unknown = set(service["environment"]) - SETTINGS - SIMULATOR_VARIABLES
        assert not unknown, f"{name} sets {unknown}"


def test_refuses_to_start_without_the_secrets() -> None:
    environment = _environment()
    assert environment["JWT_SECRET"].startswith("${JWT_SECRET:?")
    assert ":${POSTGRES_PASSWORD:?" in environment["DATABASE_URL"]
    admin = compose_services()["ensure-admin"]["environment"]
    assert admin["ADMIN_PASSWORD"].startswith("${ADMIN_PASSWORD:?")


class TestEnvExample:
    def test_documents_every_setting(self) -> None:
        missing = SETTINGS - set(env_example_names())
        assert not missing, f".env.example does not mention {sorted(missing)}"

    def test_names_only_variables_something_reads(self) -> None:
        others = COMPOSE_VARIABLES | SIMULATOR_VARIABLES | MAKE_RUN_VARIABLES
        unknown = {
            name
            for name in env_example_names()
            if name not in SETTINGS | others and not name.startswith("OTEL_")
        }
        assert not unknown

    def test_every_value_it_shows_is_one_the_settings_accept(self) -> None:
        shown = re.findall(r"^#?([A-Z][A-Z0-9_]*)=(.*)$", ENV_EXAMPLE.read_text(), re.M)
        values = {name.lower(): value for name, value in shown if name in SETTINGS}
        settings = Settings(**values)
        assert settings.environment == "production"
        assert settings.access_token_expiry == 15 * 60
        assert settings.grpc_listen_host == "[::]"

    def test_names_each_variable_once(self) -> None:
        names = env_example_names()
        assert len(names) == len(set(names))

    def test_holds_no_secret(self) -> None:
        lines = ENV_EXAMPLE.read_text().splitlines()
        for variable in REQUIRED_SECRETS:
            assert f"{variable}=" in lines, f"{variable} is not left empty"

    def test_turns_the_simulators_on(self) -> None:
        lines = ENV_EXAMPLE.read_text().splitlines()
        assert "COMPOSE_PROFILES=simulators" in lines
