"""The gateway process: `python -m gateway.main` serves on PORT (3001)."""

from __future__ import annotations

import uvicorn

from gateway.app import create_app
from libs.config import get_settings
from libs.logs import configure_logging


def main() -> None:
    settings = get_settings()
    configure_logging(settings, "gateway")
    uvicorn.run(
        create_app(settings),
        host="0.0.0.0",  # noqa: S104 - the gateway is the public entry point
        port=settings.port,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
