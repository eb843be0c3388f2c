"""Provider failures reach the operators' error log: a generation the
provider fails is reported to the admin service (libs/error_reports.py);
one the user's own request caused is not."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from omnihub.admin.v1 import admin_pb2

from libs.config import Settings
from services.admin.main import AdminProcess
from tests.services.admin.api import AdminApi
from tests.services.generation.api import GenerationApi, unique_prompt
from tests.suite import ServedApp

pytestmark = pytest.mark.usefixtures("generation_workers")


@pytest.fixture(scope="module")
async def api(
    settings: Settings, fal_simulator: ServedApp
) -> AsyncIterator[GenerationApi]:
    client = GenerationApi(settings, fal_simulator.url)
    yield client
    await client.close()


@pytest.fixture(scope="module")
async def admin(
    settings: Settings, admin_service: AdminProcess
) -> AsyncIterator[AdminApi]:
    client = AdminApi(settings)
    yield client
    await client.close()


async def reports_of(admin: AdminApi, user_id: str) -> list[admin_pb2.ErrorEntry]:
    reply = await admin.stub.ListErrorLogs(
        admin_pb2.ListErrorLogsRequest(page_size=1000),
        metadata=admin.operator("viewer").metadata,
    )
    return [entry for entry in reply.entries if entry.user_id == user_id]


async def test_a_provider_failure_is_reported(
    api: GenerationApi, admin: AdminApi
) -> None:
    user = await api.new_user(credits=5)
    prompt = unique_prompt()
    await api.fault("result_500", prompt, times=1)

    created = await api.create(user, prompt)
    generation = await api.wait(user, created.generations[0].id)

    assert generation.status == "failed"
    deadline = time.monotonic() + 5
    while not (found := await reports_of(admin, user)):
        assert time.monotonic() < deadline, "no report reached the error log"
        await asyncio.sleep(0.05)
    (report,) = found
    assert report.service.startswith("generation")
    assert (report.kind, report.code, report.severity) == (
        "provider",
        "api_error",
        "error",
    )
    assert report.details["model_id"] == created.generations[0].model_id
    assert not report.resolved


async def test_a_refused_request_is_not_the_providers_fault(
    api: GenerationApi, admin: AdminApi
) -> None:
    user = await api.new_user(credits=5)
    prompt = unique_prompt()
    await api.fault("content_violation", prompt, times=1)

    created = await api.create(user, prompt)
    generation = await api.wait(user, created.generations[0].id)

    assert generation.error_type == "content_violation"
    await asyncio.sleep(0.3)
    assert await reports_of(admin, user) == []
