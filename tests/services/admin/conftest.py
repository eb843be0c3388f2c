"""Fixtures of the admin service tests: the real admin service on loopback
gRPC (auth, billing and the catalog behind it) and a client for it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from libs.config import Settings
from services.admin.main import AdminProcess
from tests.services.admin.api import AdminApi


@pytest.fixture(scope="session")
async def api(
    settings: Settings, admin_service: AdminProcess
) -> AsyncIterator[AdminApi]:
    client = AdminApi(settings)
    yield client
    await client.close()
