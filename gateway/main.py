"""The gateway process: `python -m gateway.main` serves on PORT (3001)."""

from __future__ import annotations

import uvicorn

from gateway.app import create_app
from libs.config import Settings, get_settings
from libs.logs import configure_logging
from libs.process import run_event_loop


async def serve(settings: Settings) -> None:
    # gRPC channels belong to the event loop they are made in, so the app
    # (which opens them) is built inside the loop that serves it.
    config = uvicorn.Config(
        create_app(settings),
        host="0.0.0.0",  # noqa: S104 - the gateway is the public entry point
        port=settings.port,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )
    await uvicorn.Server(config).serve()


def main() -> None:
    settings = get_settings()
    configure_logging(settings, "gateway")
    run_event_loop(serve(settings))


if __name__ == "__main__":
    main()
