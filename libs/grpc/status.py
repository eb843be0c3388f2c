"""DomainError <-> gRPC rich status (google.rpc.Status in the trailers).

The status carries an ErrorInfo whose `reason` is the error's stable code, a
BadRequest with field violations when there are any, and a RetryInfo when the
caller should wait before trying again.
"""

from __future__ import annotations

import math

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from libs.errors import (
    DomainError,
    FieldViolation,
    error_class_for,
    error_class_for_status,
)

STATUS_DETAILS_KEY = "grpc-status-details-bin"
ERROR_DOMAIN = "omnihub"


def to_status_details(error: DomainError) -> bytes:
    status = status_pb2.Status(code=error.grpc_status.value[0], message=error.message)
    _pack(
        status,
        error_details_pb2.ErrorInfo(
            reason=error.code, domain=ERROR_DOMAIN, metadata=error.context
        ),
    )
    if error.violations:
        _pack(
            status,
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.message
                    )
                    for v in error.violations
                ]
            ),
        )
    if error.retry_after is not None:
        seconds = max(1, math.ceil(error.retry_after))
        _pack(
            status,
            error_details_pb2.RetryInfo(
                retry_delay=duration_pb2.Duration(seconds=seconds)
            ),
        )
    details: bytes = status.SerializeToString()
    return details


def _pack(status: status_pb2.Status, detail: object) -> None:
    packed = any_pb2.Any()
    packed.Pack(detail)  # type: ignore[arg-type]
    status.details.append(packed)


def from_rpc_error(error: grpc.aio.AioRpcError) -> DomainError:
    """Rebuild the domain error a service raised from the failed call."""
    details = _status_details(error)
    code = error.code()
    message = error.details() or ""
    if details is None:
        fallback = error_class_for_status(code)
        # Transport failures carry grpc's own wording; keep ours for users.
        return fallback(
            None if fallback.code in {"unavailable", "internal"} else message
        )
    reason = ""
    context: dict[str, str] = {}
    violations: list[FieldViolation] = []
    retry_after: float | None = None
    for packed in details.details:
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            reason = info.reason
            context = dict(info.metadata)
        elif packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            packed.Unpack(bad)
            violations.extend(
                FieldViolation(v.field, v.description) for v in bad.field_violations
            )
        elif packed.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            packed.Unpack(retry)
            retry_after = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
    cls = error_class_for(reason) or error_class_for_status(code)
    return cls(
        details.message or message,
        violations=tuple(violations),
        retry_after=retry_after,
        context=context,
    )


def _status_details(error: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    for key, value in error.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            if status.code != code_pb2.OK:
                return status
    return None
