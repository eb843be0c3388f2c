"""The gateway's routes as its OpenAPI document lists them, for the tests
that must cover every route (a new route is covered or the test fails)."""

from __future__ import annotations

import functools
from typing import Any

from gateway.app import create_app
from tests.suite import suite_settings


@functools.cache
def openapi_paths() -> dict[str, dict[str, Any]]:
    """Path template -> method -> operation; building the app connects to
    nothing, so no service needs to run."""
    app = create_app(suite_settings("postgresql://unused@127.0.0.1/unused"))
    paths: dict[str, dict[str, Any]] = app.openapi()["paths"]
    return paths
