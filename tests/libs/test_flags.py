"""libs/flags.py: the polled copy of the feature flags every process reads,
against a real admin service that comes and goes."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from libs.config import Settings
from libs.flags import DEFAULT_MAINTENANCE_MESSAGE, FeatureFlags
from libs.grpc.client import Upstreams
from libs.tokens import InternalTokenSource, TokenSigner
from services.admin.main import AdminProcess
from tests.gateway.factories import sibling_settings
from tests.services.admin.api import AdminApi
from tests.suite import free_port, run_service


def flags_for(settings: Settings, interval: float = 0.05) -> FeatureFlags:
    tokens = InternalTokenSource(TokenSigner(settings.signing_secret()), "tests", 300)
    return FeatureFlags(Upstreams(settings, tokens), interval=interval)


@pytest.fixture
async def api(
    settings: Settings, admin_service: AdminProcess
) -> AsyncIterator[AdminApi]:
    client = AdminApi(settings)
    yield client
    await client.close()


def new_key() -> str:
    return f"lib_flag_{uuid.uuid4().hex[:10]}"


async def test_before_any_answer_each_flag_has_its_default() -> None:
    flags = flags_for(Settings(admin_address=f"127.0.0.1:{free_port()}"))

    assert flags.enabled("video_generation") is True
    assert flags.enabled("community_gallery") is True
    assert flags.enabled("maintenance_mode") is False
    assert flags.enabled("never_heard_of") is False
    assert flags.enabled("never_heard_of", default=True) is True
    assert flags.maintenance_message == DEFAULT_MAINTENANCE_MESSAGE


async def test_an_unreachable_admin_service_fails_fast_and_keeps_defaults() -> None:
    flags = flags_for(Settings(admin_address=f"127.0.0.1:{free_port()}"))
    started = time.monotonic()

    fetched = await flags.refresh()

    assert fetched is False
    assert time.monotonic() - started < 1.5
    assert not flags.fetched
    assert flags.enabled("video_generation") is True


async def test_the_polling_copy_follows_the_admin_service(
    settings: Settings, api: AdminApi
) -> None:
    key = new_key()
    await api.set_flag(key, True)
    flags = flags_for(settings)
    flags.start()
    try:
        await _until(lambda: flags.enabled(key) is True)

        await api.set_flag(key, False)

        await _until(lambda: flags.enabled(key) is False)
    finally:
        await flags.stop()


async def test_values_stay_while_the_admin_service_is_down(
    settings: Settings, api: AdminApi
) -> None:
    key = new_key()
    await api.set_flag(key, True)
    own = sibling_settings(settings, admin_address=f"127.0.0.1:{free_port()}")
    running = await run_service(AdminProcess(), own)
    flags = flags_for(own)
    assert await flags.refresh()

    await running.stop(grace=0)

    assert await flags.refresh() is False
    assert flags.enabled(key) is True
    assert flags.enabled(key, default=False) is True


async def _until(condition: Callable[[], bool], within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "the flag never changed"
        await asyncio.sleep(0.02)
