"""Typed domain errors, mapped once to a gRPC status and once to HTTP.

A service raises the error that says what went wrong; the gRPC interceptor
turns it into a status carrying the stable `code` (google.rpc.ErrorInfo), any
field violations and a retry delay; the gateway rebuilds the same error class
from that status and renders the one HTTP error shape from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import ClassVar

import grpc


@dataclass(frozen=True)
class FieldViolation:
    field: str
    message: str


class DomainError(Exception):
    """Base of every error a caller is meant to see."""

    code: ClassVar[str] = "internal"
    grpc_status: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    http_status: ClassVar[int] = HTTPStatus.INTERNAL_SERVER_ERROR
    default_message: ClassVar[str] = "Something went wrong on our side."

    def __init__(
        self,
        message: str | None = None,
        *,
        violations: tuple[FieldViolation, ...] = (),
        retry_after: float | None = None,
        context: Mapping[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.violations = violations
        self.retry_after = retry_after
        # Extra facts for the caller, e.g. {"required": "1.2", "available": "0.5"}
        # for insufficient credits; shown as top-level fields of the HTTP body.
        self.context = dict(context or {})
        super().__init__(self.message)


class InvalidArgument(DomainError):
    code = "invalid_argument"
    grpc_status = grpc.StatusCode.INVALID_ARGUMENT
    http_status = HTTPStatus.BAD_REQUEST
    default_message = "The request is not valid."

    @classmethod
    def for_field(cls, field: str, message: str) -> InvalidArgument:
        return cls(message, violations=(FieldViolation(field, message),))


class Unauthenticated(DomainError):
    code = "unauthenticated"
    grpc_status = grpc.StatusCode.UNAUTHENTICATED
    http_status = HTTPStatus.UNAUTHORIZED
    default_message = "Sign in to continue."


class InvalidCredentials(Unauthenticated):
    code = "invalid_credentials"
    default_message = "The e-mail or password is not correct."


class InvalidToken(Unauthenticated):
    code = "invalid_token"
    default_message = "Your session is not valid or has expired. Sign in again."


class PermissionDenied(DomainError):
    code = "permission_denied"
    grpc_status = grpc.StatusCode.PERMISSION_DENIED
    http_status = HTTPStatus.FORBIDDEN
    default_message = "You are not allowed to do that."


class AccountDisabled(PermissionDenied):
    code = "account_disabled"
    default_message = "This account is disabled. Contact support."


class FeatureDisabled(PermissionDenied):
    """An operator turned the feature off (a feature flag)."""

    code = "feature_disabled"
    default_message = "This feature is turned off right now."


class NotFound(DomainError):
    code = "not_found"
    grpc_status = grpc.StatusCode.NOT_FOUND
    http_status = HTTPStatus.NOT_FOUND
    default_message = "Not found."


class Conflict(DomainError):
    code = "conflict"
    grpc_status = grpc.StatusCode.ALREADY_EXISTS
    http_status = HTTPStatus.CONFLICT
    default_message = "That conflicts with something that already exists."


class EmailTaken(Conflict):
    code = "email_taken"
    default_message = "An account with this e-mail already exists."


class NicknameTaken(Conflict):
    code = "nickname_taken"
    default_message = "This nickname is taken. Choose another one."


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"
    default_message = "This idempotency key was already used for a different request."


class FailedPrecondition(DomainError):
    code = "failed_precondition"
    grpc_status = grpc.StatusCode.FAILED_PRECONDITION
    http_status = HTTPStatus.CONFLICT
    default_message = "That cannot be done in the current state."


class Expired(DomainError):
    """Something that existed has run out, e.g. a share link past its expiry."""

    code = "expired"
    grpc_status = grpc.StatusCode.FAILED_PRECONDITION
    http_status = HTTPStatus.GONE
    default_message = "This has expired."


class InsufficientCredits(DomainError):
    code = "insufficient_credits"
    grpc_status = grpc.StatusCode.FAILED_PRECONDITION
    http_status = HTTPStatus.PAYMENT_REQUIRED
    default_message = "You do not have enough credits for this."

    @classmethod
    def amounts(
        cls, required_micros: int, available_micros: int
    ) -> InsufficientCredits:
        required = format_credits(required_micros)
        available = format_credits(available_micros)
        return cls(
            f"This needs {required} credits and you have {available}.",
            context={"required": required, "available": available},
        )


MICROS_PER_CREDIT = 1_000_000


def format_credits(micros: int) -> str:
    """Micro-credits as a plain decimal string: 1200000 -> "1.2"."""
    whole, fraction = divmod(abs(micros), MICROS_PER_CREDIT)
    text = f"{whole}.{fraction:06d}".rstrip("0").rstrip(".")
    return f"-{text}" if micros < 0 else text


class PaymentFailed(DomainError):
    code = "payment_failed"
    grpc_status = grpc.StatusCode.INVALID_ARGUMENT
    http_status = HTTPStatus.BAD_REQUEST
    default_message = "The payment could not be verified."


class RateLimited(DomainError):
    code = "rate_limited"
    grpc_status = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = HTTPStatus.TOO_MANY_REQUESTS
    default_message = "Too many attempts. Wait a moment and try again."


class NotConfigured(DomainError):
    code = "not_configured"
    grpc_status = grpc.StatusCode.UNIMPLEMENTED
    http_status = HTTPStatus.SERVICE_UNAVAILABLE
    default_message = "This feature is not configured on this server."


class Unavailable(DomainError):
    code = "unavailable"
    grpc_status = grpc.StatusCode.UNAVAILABLE
    http_status = HTTPStatus.SERVICE_UNAVAILABLE
    default_message = "A part of OmniHub is not reachable right now. Try again."


class DeadlineExceeded(DomainError):
    code = "deadline_exceeded"
    grpc_status = grpc.StatusCode.DEADLINE_EXCEEDED
    http_status = HTTPStatus.GATEWAY_TIMEOUT
    default_message = "OmniHub took too long to answer. Try again."


class Internal(DomainError):
    """An unexpected failure; its details stay in the logs."""


def _all_subclasses(cls: type[DomainError]) -> list[type[DomainError]]:
    found: list[type[DomainError]] = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_all_subclasses(sub))
    return found


def error_class_for(code: str) -> type[DomainError] | None:
    """The error class whose stable code is `code`."""
    for cls in _all_subclasses(DomainError):
        if cls.code == code:
            return cls
    return None


_BY_GRPC_STATUS: dict[grpc.StatusCode, type[DomainError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: Conflict,
    grpc.StatusCode.ABORTED: Conflict,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimited,
    grpc.StatusCode.UNIMPLEMENTED: NotConfigured,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Unavailable,
}


def error_class_for_status(status: grpc.StatusCode) -> type[DomainError]:
    """Fallback for a status that carried no OmniHub error code."""
    return _BY_GRPC_STATUS.get(status, Internal)
