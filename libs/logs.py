"""Structured logging: one event name plus fields on every line.

JSON in production, readable columns in development. The request id of the
request being served is bound in contextvars by the gateway middleware and
the gRPC server interceptor, and the trace id is read from the span being run
(libs/tracing), so both appear on every line without being passed around.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from libs.config import Settings
from libs.tracing import configure_tracing, current_trace_id

_REDACTED = "[redacted]"
_SECRET_KEYS = frozenset(
    {
        "password",
        "token",
        "access_token",
        "refresh_token",
        "authorization",
        "secret",
        "api_key",
        "credential",
        "jwt_secret",
    }
)


def _redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in event_dict.keys() & _SECRET_KEYS:
        event_dict[key] = _REDACTED
    return event_dict


def _add_trace_id(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    if "trace_id" not in event_dict:
        trace_id = current_trace_id()
        if trace_id is not None:
            event_dict["trace_id"] = trace_id
    return event_dict


def configure_logging(settings: Settings, service: str) -> None:
    """Set where this process's logs go and, when the OTEL_* environment
    asks for it, its traces too: every process calls this once at start."""
    use_json = settings.log_format == "json" or (
        settings.log_format == "auto" and settings.is_production
    )
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    level = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _add_trace_id,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
    logging.basicConfig(level=max(level, logging.WARNING), stream=sys.stderr)
    configure_tracing(service)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
