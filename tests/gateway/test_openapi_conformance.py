"""A few of the gateway's operations fuzzed with schemathesis, as a signed-up
user, against the OpenAPI document the gateway serves: valid and invalid
requests alike must get a declared status and content type, a body of the
declared schema, and never a 5xx. The whole surface, as a user and as an
operator and in sequences, is fuzzed by tests/verify/rest_fuzz.py.

schemathesis calls over blocking HTTP, so each operation is fuzzed in a
worker thread while this event loop serves the suite.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from services.chat.main import ChatProcess
from tests.gateway.factories import SignedInUser, register
from tests.gateway.test_fuzz_findings import CHECKS
from tests.suite import ServedApp

EXAMPLES = 12
# Each operation, and the path parameters that make it reach real rows
# ("workspace": the user's own personal workspace).
OPERATIONS = [
    ("POST", "/api/workspaces", {}),
    ("PATCH", "/api/workspaces/{workspace_id}", {"workspace_id": "workspace"}),
    ("GET", "/api/workspaces/{workspace_id}/gallery", {"workspace_id": "workspace"}),
    ("PUT", "/api/profile", {}),
    ("POST", "/api/projects", {}),
    ("GET", "/api/generations", {}),
    ("POST", "/api/chat/conversations", {}),
    ("POST", "/api/chat/estimate", {}),
    ("GET", "/api/credits/history", {}),
]


@pytest.fixture(scope="module")
async def openapi(gateway: ServedApp) -> Any:
    async with gateway.client() as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200, response.text
    return schemathesis.openapi.from_dict(response.json())


@pytest.fixture(scope="module")
async def user(
    gateway: ServedApp, chat_service: ChatProcess
) -> AsyncIterator[SignedInUser]:
    async with gateway.client() as client:
        yield await register(client)


def fuzz(
    operation: Any, base_url: str, user: SignedInUser, path: dict[str, str]
) -> None:
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE, path_parameters=path or None),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @given(case=cases)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def answers_are_declared(case: Any) -> None:
        response = case.call(base_url=base_url, headers=user.auth, timeout=15)
        case.validate_response(response, checks=CHECKS)

    answers_are_declared()


@pytest.mark.parametrize(
    ("method", "path", "parameters"),
    OPERATIONS,
    ids=[f"{method} {path}" for method, path, _ in OPERATIONS],
)
async def test_fuzzed_requests_get_declared_answers(
    gateway: ServedApp,
    openapi: Any,
    user: SignedInUser,
    method: str,
    path: str,
    parameters: dict[str, str],
) -> None:
    workspace_id = str(user.body["defaultWorkspace"]["id"])
    values = {
        name: workspace_id if value == "workspace" else value
        for name, value in parameters.items()
    }

    await asyncio.to_thread(fuzz, openapi[path][method], gateway.url, user, values)
