"""Maintenance mode through the real gateway: while the operators'
`maintenance_mode` flag is on, every route answers 503 with the
maintenance message, except the probes, the docs, the public settings and
the operators' own routes (so that they can turn it off again)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.gateway.factories import assert_error
from tests.gateway.operators import Operators, SignedInOperator
from tests.suite import ServedApp

MESSAGE = "Back at 18:00 UTC: we are moving to a bigger database."
PROPAGATION_SECONDS = 3.0


async def _until_status(
    http: httpx.AsyncClient, path: str, wanted: bool, status: int = 503
) -> None:
    """Wait until `path` answers `status` (wanted) or something else."""
    deadline = time.monotonic() + PROPAGATION_SECONDS
    while ((await http.get(path)).status_code == status) is not wanted:
        assert time.monotonic() < deadline, f"{path} never changed"
        await asyncio.sleep(0.05)


@pytest.fixture
async def http(admin_gateway: ServedApp) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_gateway.client() as client:
        yield client


@pytest.fixture
async def during_maintenance(
    http: httpx.AsyncClient, operators: Operators
) -> AsyncIterator[SignedInOperator]:
    """Maintenance mode on, with MESSAGE, until the test ends."""
    operator = await operators.of(http, "superadmin")
    previous = (await http.get("/api/settings")).json()["maintenanceMessage"]
    await http.put(
        "/api/admin/settings",
        json={"maintenanceMessage": MESSAGE},
        headers=operator.auth,
    )
    await _switch(http, operator, on=True)
    try:
        yield operator
    finally:
        await _switch(http, operator, on=False)
        await http.put(
            "/api/admin/settings",
            json={"maintenanceMessage": previous},
            headers=operator.auth,
        )


async def _switch(
    http: httpx.AsyncClient, operator: SignedInOperator, *, on: bool
) -> None:
    response = await http.put(
        "/api/admin/feature-flags/maintenance_mode",
        json={"enabled": on},
        headers=operator.auth,
    )
    assert response.status_code == 200, response.text
    await _until_status(http, "/api/models", wanted=on)


async def test_every_route_answers_503_with_the_message(
    http: httpx.AsyncClient, during_maintenance: SignedInOperator
) -> None:
    for method, path in (
        ("GET", "/api/models"),
        ("POST", "/api/auth/login"),
        ("GET", "/api/generations"),
        ("GET", "/api/announcements"),
    ):
        response = await http.request(method, path)

        body = assert_error(response, 503, "maintenance")
        assert body["message"] == MESSAGE


async def test_probes_docs_and_settings_still_answer(
    http: httpx.AsyncClient, during_maintenance: SignedInOperator
) -> None:
    assert (await http.get("/healthz")).status_code == 200
    ready = await http.get("/readyz")
    assert ready.json().get("code") != "maintenance"
    assert (await http.get("/docs")).status_code == 200
    public = await http.get("/api/settings")
    assert public.status_code == 200
    assert public.json()["maintenanceMode"] is True
    assert public.json()["maintenanceMessage"] == MESSAGE
    assert (await http.get("/api/settings/google-client-id")).status_code == 200


async def test_provider_webhooks_still_reach_the_services(
    http: httpx.AsyncClient, during_maintenance: SignedInOperator
) -> None:
    for path in ("/api/webhooks/fal", "/api/payments/webhook"):
        response = await http.post(path, content=b"{}")

        # Refused for its missing signature, not for the maintenance.
        assert response.json().get("code") != "maintenance", path


async def test_operators_still_work_and_can_end_it(
    http: httpx.AsyncClient, during_maintenance: SignedInOperator
) -> None:
    operator = during_maintenance

    listed = await http.get("/api/admin/feature-flags", headers=operator.auth)
    await _switch(http, operator, on=False)

    assert listed.status_code == 200
    assert (await http.get("/api/models")).status_code == 200


async def test_without_maintenance_nothing_is_refused(
    http: httpx.AsyncClient,
) -> None:
    response = await http.get("/api/models")

    assert response.status_code == 200
