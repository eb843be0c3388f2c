from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from libs.config import Settings
from services.catalog.main import CatalogProcess
from tests.services.catalog.harness import (
    CatalogCaller,
    catalog_database,
    start_replica,
)


@pytest.fixture(scope="package")
async def catalog_settings(
    database_server: str, settings: Settings
) -> AsyncIterator[Settings]:
    async with catalog_database(database_server, settings) as catalog:
        yield catalog


@pytest.fixture(scope="package")
async def catalog_service(catalog_settings: Settings) -> AsyncIterator[CatalogProcess]:
    process, running = await start_replica(catalog_settings)
    yield process
    await running.stop(grace=0)


@pytest.fixture(scope="package")
async def catalog(
    catalog_settings: Settings, catalog_service: CatalogProcess
) -> AsyncIterator[CatalogCaller]:
    caller = CatalogCaller(catalog_settings)
    yield caller
    await caller.close()


@pytest.fixture
async def default_pricing(catalog: CatalogCaller) -> AsyncIterator[CatalogCaller]:
    """Pricing settings a test may change; put back to the seeded ones after."""
    yield catalog
    await catalog.reset_pricing()
