"""Schemathesis hooks for the REST fuzz stage (loaded by the `st` CLI through
SCHEMATHESIS_HOOKS): every generated request carries a bearer token of the
identity the stage chose. Outside stateful sequences, a 401 signs it in again
and replays the request once: fuzzing signs the identity out on purpose
(POST /api/auth/logout-all and friends), and a fresh sign-in keeps the rest
of the run authenticated.

    FUZZ_BASE_URL     the gateway, e.g. http://127.0.0.1:8000
    FUZZ_IDENTITY     "user" (POST /api/auth/login) or "operator"
                      (POST /api/admin/login)
    FUZZ_LOGIN        the e-mail address or the operator's username
    FUZZ_PASSWORD     its password
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import schemathesis

SIGN_IN = {
    "user": ("/api/auth/login", "email", "accessToken"),
    "operator": ("/api/admin/login", "username", "token"),
}


@schemathesis.auth(refresh_interval=3600, retry_on=[401])
class FuzzIdentity:
    def get(self, case: Any, context: Any) -> str:
        path, login_field, token_field = SIGN_IN[os.environ["FUZZ_IDENTITY"]]
        response = httpx.post(
            os.environ["FUZZ_BASE_URL"] + path,
            json={
                login_field: os.environ["FUZZ_LOGIN"],
                "password": os.environ["FUZZ_PASSWORD"],
            },
            timeout=30.0,
        )
        response.raise_for_status()
        return str(response.json()[token_field])

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"
