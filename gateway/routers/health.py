"""Liveness and readiness of the gateway."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from gateway.deps import UpstreamDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The gateway process is alive."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "An upstream is not serving"}})
async def readyz(upstream: UpstreamDep) -> JSONResponse:
    """Every upstream service answers its gRPC health check with SERVING."""
    services = await upstream.health()
    ready = all(services.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "services": services},
        status_code=200 if ready else 503,
    )
