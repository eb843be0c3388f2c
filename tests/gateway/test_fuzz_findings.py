"""Answers the REST fuzz stage (tests/verify/rest_fuzz.py) found outside the
gateway's own OpenAPI document, kept as scenarios: each real response is
checked against the document the gateway serves with schemathesis' response
checks (a declared status, a declared content type, a body of the declared
schema, no 5xx)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.admin.main import AdminProcess
from services.chat.main import ChatProcess
from tests.gateway.factories import register
from tests.gateway.operators import Operators
from tests.services.chat.factories import MODEL
from tests.suite import ServedApp

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
async def http(gateway: ServedApp) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway.client() as client:
        yield client


@pytest.fixture(scope="module")
async def openapi(gateway: ServedApp) -> Any:
    async with gateway.client() as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200, response.text
    return schemathesis.openapi.from_dict(response.json())


def assert_declared(openapi: Any, path: str, response: httpx.Response) -> None:
    """Fails with schemathesis' own report when `response` is not what the
    document declares for its operation."""
    operation = openapi[path][response.request.method]
    case = operation.Case(path_parameters=_path_parameters(path, response))
    case.validate_response(response, checks=CHECKS)


def _path_parameters(template: str, response: httpx.Response) -> dict[str, str]:
    names = template.split("/")
    values = response.request.url.path.split("/")
    return {
        name[1:-1]: value
        for name, value in zip(names, values, strict=True)
        if name.startswith("{")
    }


class TestDeclaredStatuses:
    async def test_adding_more_credits_than_held_is_a_declared_402(
        self, http: httpx.AsyncClient, openapi: Any
    ) -> None:
        owner = await register(http)
        created = await http.post(
            "/api/workspaces", json={"name": "Pool"}, headers=owner.auth
        )
        workspace_id = created.json()["id"]

        response = await http.post(
            f"/api/workspaces/{workspace_id}/credits/add",
            json={"amount": 999999999},
            headers=owner.auth,
        )

        assert response.status_code == 402, response.text
        assert_declared(openapi, "/api/workspaces/{workspace_id}/credits/add", response)


class TestDeclaredContentTypes:
    async def test_a_refused_chat_message_streams_a_declared_error(
        self, http: httpx.AsyncClient, openapi: Any, chat_service: ChatProcess
    ) -> None:
        user = await register(http)
        created = await http.post(
            "/api/chat/conversations", json={"modelId": MODEL}, headers=user.auth
        )
        conversation_id = created.json()["id"]

        response = await http.post(
            f"/api/chat/conversations/{conversation_id}/messages",
            json={"content": ""},
            headers=user.auth,
        )

        assert response.status_code == 400, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        assert_declared(
            openapi, "/api/chat/conversations/{conversation_id}/messages", response
        )

    async def test_the_users_export_is_a_declared_csv(
        self,
        admin_gateway: ServedApp,
        admin_service: AdminProcess,
        operators: Operators,
        openapi: Any,
    ) -> None:
        async with admin_gateway.client() as http:
            operator = await operators.of(http, "superadmin")
            response = await http.get("/api/admin/users/export", headers=operator.auth)

        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/csv")
        assert_declared(openapi, "/api/admin/users/export", response)


class TestNumbersWiderThanTheWire:
    """Numbers past the services' int32/int64 fields once failed to build the
    gRPC call: a 500. They are a 400 at the gateway now."""

    async def test_a_community_page_past_int32_is_a_400(
        self, http: httpx.AsyncClient, openapi: Any
    ) -> None:
        response = await http.get("/api/community", params={"page": 2**50})

        assert response.status_code == 400, response.text
        assert_declared(openapi, "/api/community", response)

    @pytest.mark.parametrize(
        "fields", [{"imageCount": 2**58}, {"contextTokens": 2**70}]
    )
    async def test_an_estimate_past_the_wire_is_a_400(
        self,
        http: httpx.AsyncClient,
        openapi: Any,
        chat_service: ChatProcess,
        fields: dict[str, int],
    ) -> None:
        response = await http.post(
            "/api/chat/estimate", json={"modelId": MODEL, **fields}
        )

        assert response.status_code == 400, response.text
        assert_declared(openapi, "/api/chat/estimate", response)

    async def test_an_enhance_estimate_past_int32_is_a_400(
        self, http: httpx.AsyncClient, openapi: Any, chat_service: ChatProcess
    ) -> None:
        user = await register(http)

        response = await http.post(
            "/api/enhance-prompt/estimate",
            json={"prompt": "a cat", "imageCount": -847950255380},
            headers=user.auth,
        )

        assert response.status_code == 400, response.text
        assert_declared(openapi, "/api/enhance-prompt/estimate", response)
