from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from libs.config import Settings
from libs.logs import configure_logging
from services.auth.main import AuthProcess
from services.billing.main import BillingProcess
from services.catalog.main import CatalogProcess
from services.generation.main import GenerationProcess
from services.workspace.main import WorkspaceProcess
from tests import database
from tests.fakes.google import FakeGoogle
from tests.suite import ServedApp, run_gateway, run_service, suite_settings

pytest_plugins = [
    "tests.fixtures.admin",
    "tests.fixtures.chat",
    "tests.fixtures.generation",
]


@pytest.fixture(scope="session")
def database_server() -> Iterator[str]:
    with database.server_url() as url:
        yield url


@pytest.fixture(scope="session")
async def database_url(database_server: str) -> AsyncIterator[str]:
    url = await database.create_database(database_server)
    yield url
    if not os.environ.get("KEEP_TEST_DATABASE"):
        await database.drop_database(database_server, url)


@pytest.fixture(scope="session")
async def google() -> AsyncIterator[FakeGoogle]:
    fake = FakeGoogle(client_id="omnihub-test.apps.googleusercontent.com")
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture(scope="session")
def settings(
    database_url: str, google: FakeGoogle, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    # The provider simulators' addresses are chosen here and served later by
    # their fixtures (tests/fixtures/), so that only tests which need a
    # simulator start one.
    settings = suite_settings(
        database_url,
        google_client_id=google.client_id,
        google_certs_url=google.certs_url,
        media_dir=str(tmp_path_factory.mktemp("media")),
    )
    configure_logging(settings, "tests")
    return settings


@pytest.fixture(scope="session")
async def auth_service(settings: Settings) -> AsyncIterator[AuthProcess]:
    process = AuthProcess()
    running = await run_service(process, settings)
    yield process
    await running.stop(grace=0)


@pytest.fixture(scope="session")
async def billing_service(
    settings: Settings, auth_service: AuthProcess
) -> AsyncIterator[BillingProcess]:
    # auth runs too, so that billing's revocation feed is live.
    process = BillingProcess()
    running = await run_service(process, settings)
    yield process
    await running.stop(grace=0)


@pytest.fixture(scope="session")
async def catalog_service(settings: Settings) -> AsyncIterator[CatalogProcess]:
    process = CatalogProcess()
    running = await run_service(process, settings)
    yield process
    await running.stop(grace=0)


@pytest.fixture(scope="session")
async def workspace_service(
    settings: Settings, auth_service: AuthProcess, billing_service: BillingProcess
) -> AsyncIterator[WorkspaceProcess]:
    # It asks auth for names and e-mail addresses and billing for balances.
    process = WorkspaceProcess()
    running = await run_service(process, settings)
    yield process
    await running.stop(grace=0)


@pytest.fixture(scope="session")
async def gateway(
    settings: Settings,
    auth_service: AuthProcess,
    billing_service: BillingProcess,
    catalog_service: CatalogProcess,
    workspace_service: WorkspaceProcess,
    generation_service: GenerationProcess,
) -> AsyncIterator[ServedApp]:
    running = await run_gateway(settings)
    yield running
    await running.stop()
