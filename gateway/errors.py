"""The one error shape of the REST API (ARCHITECTURE §6):

    {"statusCode": 404, "error": "<sentence>", "message": "<sentence>",
     "code": "not_found", "details": [{"field": ..., "message": ...}]}

`error` carries the sentence because that is the field the web client shows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from libs.errors import DomainError, FieldViolation, Internal, InvalidArgument
from libs.logs import get_logger

log = get_logger(__name__)


# The statuses any route may answer with the error shape, declared in the
# OpenAPI document: 402 wherever a request spends credits it lacks.
ERROR_STATUSES = (400, 401, 402, 403, 404, 409, 413, 429, 503, 504)


class FieldError(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    statusCode: int  # noqa: N815 - the web client's spelling
    error: str
    message: str
    code: str
    details: list[FieldError] | None = None


def error_response(
    status: int,
    message: str,
    code: str,
    violations: Sequence[FieldViolation] = (),
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        **(extra or {}),
        "statusCode": status,
        "error": message,
        "message": message,
        "code": code,
    }
    if violations:
        body["details"] = [{"field": v.field, "message": v.message} for v in violations]
    return JSONResponse(body, status_code=status, headers=headers)


def render_domain_error(error: DomainError) -> JSONResponse:
    headers = None
    if error.retry_after is not None:
        headers = {"Retry-After": str(max(1, math.ceil(error.retry_after)))}
    extra = {key: _json_value(value) for key, value in error.context.items()}
    return error_response(
        int(error.http_status),
        error.message,
        error.code,
        error.violations,
        headers,
        extra,
    )


def _json_value(text: str) -> object:
    """Numbers in an error's context become JSON numbers."""
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and "." not in text else number


_MESSAGES = {
    "missing": "{field} is required.",
    "extra_forbidden": "property {field} should not exist",
    "string_type": "{field} must be a string.",
    "string_too_short": "{field} is too short.",
    "string_too_long": "{field} is too long.",
    "int_parsing": "{field} must be a whole number.",
    "bool_parsing": "{field} must be true or false.",
    "json_invalid": "The request body is not valid JSON.",
    "model_attributes_type": "The request body must be a JSON object.",
    "dict_type": "The request body must be a JSON object.",
}


def _violation(error: dict[str, Any]) -> FieldViolation:
    location = [
        str(part)
        for part in error.get("loc", ())
        if part not in ("body", "query", "path")
    ]
    field = ".".join(location) or "body"
    template = _MESSAGES.get(error.get("type", ""))
    if template is None:
        message = error.get("msg", "is not valid")
        # Custom validators say "Value error, <sentence>"; keep the sentence.
        message = message.removeprefix("Value error, ")
        return FieldViolation(
            field, message if location == [] else f"{field}: {message}"
        )
    return FieldViolation(field, template.format(field=field))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    violations = tuple(_violation(error) for error in exc.errors())
    error = InvalidArgument(
        violations[0].message if violations else None, violations=violations
    )
    return render_domain_error(error)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    return render_domain_error(exc)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        message = f"Cannot {request.method} {request.url.path}"
        return error_response(404, message, "route_not_found")
    if exc.status_code == 413:
        return error_response(413, str(exc.detail), "body_too_large")
    if exc.status_code == 405:
        return error_response(
            405, "That method is not allowed here.", "method_not_allowed"
        )
    return error_response(exc.status_code, str(exc.detail), "http_error")


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("http.unhandled", path=request.url.path, exc_info=exc)
    return render_domain_error(Internal())


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
