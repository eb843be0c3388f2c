"""Signed-in operators for the gateway's admin route tests: accounts of each
role made in auth, signed in through POST /api/admin/login once per test
session and role."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from libs.config import Settings
from tests.gateway.factories import bearer, create_operator

ROLES = ("superadmin", "support", "viewer")


@dataclass(frozen=True)
class SignedInOperator:
    id: str
    role: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return bearer(self.token)

    def headers(self, **extra: str) -> dict[str, str]:
        return {**self.auth, **extra}


async def sign_in_operator(
    http: httpx.AsyncClient, settings: Settings, role: str
) -> SignedInOperator:
    operator = await create_operator(settings, role)
    response = await http.post(
        "/api/admin/login",
        json={"username": operator.username, "password": operator.password},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return SignedInOperator(str(body["admin"]["id"]), role, str(body["token"]))


class Operators:
    """One signed-in operator per role, made on first use."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._signed_in: dict[str, SignedInOperator] = {}

    async def of(self, http: httpx.AsyncClient, role: str) -> SignedInOperator:
        if role not in self._signed_in:
            self._signed_in[role] = await sign_in_operator(http, self._settings, role)
        return self._signed_in[role]
