"""The ceilings: the least a Python HTTP process can do per request.

One-route Starlette apps served by uvicorn exactly as gateway.main serves
the gateway (one process, uvloop and httptools when installed, no access
log). Whatever the gateway reaches is measured against these.

- `GET /api/auth/me` returns a body shaped like the real one.
- `GET /api/models`, when BENCH_MODELS_BODY names a file, returns that
  file's bytes, which the harness took from the running gateway's
  /api/models, with the gateway's ETag (BENCH_MODELS_ETAG) and
  Cache-Control headers: the same response with nothing behind it.

    PORT=8000 python -m tests.bench.ceiling
    PORT=8001 BENCH_MODELS_BODY=models.json BENCH_MODELS_ETAG='"c1-ab"' \\
        python -m tests.bench.ceiling
"""

from __future__ import annotations

import os
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

MODELS_BODY_ENV = "BENCH_MODELS_BODY"
MODELS_ETAG_ENV = "BENCH_MODELS_ETAG"

ME_SHAPED_BODY: dict[str, object] = {
    "id": "0b7f0a52-5a0e-4c55-9d1c-3f1f6c2b8e11",
    "email": "bench@example.com",
    "name": "Bench",
    "nickname": "CosmicFalcon4821",
    "avatarUrl": None,
    "credits": 0.0,
    "createdAt": "2025-01-01T00:00:00Z",
    "workspaces": [
        {
            "id": "4f1c2f0e-7a52-4e47-9a55-2a0e6c1d9b10",
            "name": "Bench's Workspace",
            "ownerId": "0b7f0a52-5a0e-4c55-9d1c-3f1f6c2b8e11",
            "isDefault": True,
            "isPersonal": True,
            "userRole": "owner",
            "memberCount": 1,
            "credits": 0.0,
            "creditMode": "personal",
            "allocatedCredits": None,
            "privacySettings": {"whoCanInvite": "admins"},
        }
    ],
    "defaultWorkspace": None,
}


async def me_shaped(request: Request) -> JSONResponse:
    return JSONResponse(ME_SHAPED_BODY, headers={"Cache-Control": "no-store"})


def models_route(body: bytes, etag: str) -> Route:
    headers = {"ETag": etag, "Cache-Control": "no-cache"}

    async def models(request: Request) -> Response:
        return Response(body, media_type="application/json", headers=headers)

    return Route("/api/models", models)


def create_app(models: tuple[bytes, str] | None = None) -> Starlette:
    """The /api/auth/me ceiling; with `models` (body, ETag), /api/models too."""
    routes = [Route("/api/auth/me", me_shaped)]
    if models is not None:
        routes.append(models_route(*models))
    return Starlette(routes=routes)


def _models_from_environment() -> tuple[bytes, str] | None:
    path = os.environ.get(MODELS_BODY_ENV)
    if not path:
        return None
    return Path(path).read_bytes(), os.environ.get(MODELS_ETAG_ENV, '"bench"')


def main() -> None:
    # The keyword arguments mirror gateway.main so that the two differ only
    # in the application they serve.
    uvicorn.run(
        create_app(_models_from_environment()),
        host="127.0.0.1",
        port=int(os.environ["PORT"]),
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
