"""Reporting provider and internal failures to the admin service's error
log, which operators read at /api/admin/error-logs.

A report is a side note to the work that failed: it never raises and never
holds that work up for long (a short deadline; a lost report is logged).
The admin service records the reporting service under its verified name.

    reports = ErrorReports(runtime.upstreams)
    await reports.send("provider", "fal answered 502", code="api_error",
                       reference_id=str(generation_id))
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from omnihub.admin.v1 import admin_pb2, admin_pb2_grpc

from libs.grpc.client import Upstreams
from libs.logs import get_logger

log = get_logger(__name__)

SEND_TIMEOUT_SECONDS = 0.5


class ErrorReports:
    def __init__(self, upstreams: Upstreams) -> None:
        self._upstreams = upstreams
        self._stub = admin_pb2_grpc.AdminServiceStub(upstreams.channel("admin"))

    async def send(
        self,
        kind: str,
        message: str,
        *,
        severity: str = "error",
        code: str = "",
        user_id: str = "",
        reference_id: str = "",
        details: Mapping[str, str] | None = None,
    ) -> bool:
        """Record a failure; False (and a log line) if it could not be."""
        request = admin_pb2.RecordErrorRequest(
            kind=kind,
            severity=severity,
            code=code,
            message=message,
            user_id=user_id,
            reference_id=reference_id,
            details=dict(details or {}),
        )
        try:
            await self._stub.RecordError(
                request,
                timeout=SEND_TIMEOUT_SECONDS,
                metadata=self._upstreams.metadata(),
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("error_report.lost", kind=kind, code=exc.code().name)
            return False
        return True
