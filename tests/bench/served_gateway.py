"""The gateway process as the benchmark starts it.

TODO: go back to `python -m gateway.main` once it builds the app inside
uvicorn's event loop. gateway.main calls create_app() before uvicorn.run()
starts a new loop, so the gRPC channel to auth (made in create_app) belongs
to another loop and every upstream call fails with "attached to a different
loop"; the tests never see it because they serve the app in their own loop.
This launcher passes uvicorn a factory instead, which uvicorn calls inside
the loop it serves on, and otherwise keeps gateway.main's uvicorn settings
(but listens on loopback only).
"""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from gateway.app import create_app
from libs.config import get_settings
from libs.logs import configure_logging


def build() -> FastAPI:
    return create_app(get_settings())


def main() -> None:
    settings = get_settings()
    configure_logging(settings, "gateway")
    uvicorn.run(
        "tests.bench.served_gateway:build",
        factory=True,
        host="127.0.0.1",
        port=settings.port,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
