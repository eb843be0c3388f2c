"""The ceiling: the least a Python HTTP process can do per request.

One Starlette route returning a body shaped like /api/auth/me's, served by
uvicorn exactly as gateway.main serves the gateway (one process, uvloop and
httptools when installed, no access log). Whatever the gateway reaches is
measured against this.

    PORT=8000 python -m tests.bench.ceiling
"""

from __future__ import annotations

import os

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

ME_SHAPED_BODY: dict[str, object] = {
    "id": "0b7f0a52-5a0e-4c55-9d1c-3f1f6c2b8e11",
    "email": "bench@example.com",
    "name": "Bench",
    "nickname": "CosmicFalcon4821",
    "avatarUrl": None,
    "credits": 0.0,
    "createdAt": "2025-01-01T00:00:00Z",
    "workspaces": [],
    "defaultWorkspace": None,
}


async def me_shaped(request: Request) -> JSONResponse:
    return JSONResponse(ME_SHAPED_BODY, headers={"Cache-Control": "no-store"})


def create_app() -> Starlette:
    return Starlette(routes=[Route("/api/auth/me", me_shaped)])


def main() -> None:
    # The keyword arguments mirror gateway.main so that the two differ only
    # in the application they serve.
    uvicorn.run(
        create_app(),
        host="127.0.0.1",
        port=int(os.environ["PORT"]),
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
