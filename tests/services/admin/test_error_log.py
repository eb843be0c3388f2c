"""The error log: services report failures; operators list and resolve
them (support or superadmin, audited)."""

from __future__ import annotations

import uuid

import grpc
import pytest
from omnihub.admin.v1 import admin_pb2

from tests.services.admin.api import AdminApi, failure


async def reported(api: AdminApi, **fields: object) -> str:
    fields.setdefault("kind", "provider")
    fields.setdefault("message", "fal answered 502")
    reply = await api.stub.RecordError(
        admin_pb2.RecordErrorRequest(**fields),  # type: ignore[arg-type]
        metadata=api.service,
    )
    return str(reply.id)


async def entries(api: AdminApi, **filters: object) -> list[admin_pb2.ErrorEntry]:
    reply = await api.stub.ListErrorLogs(
        admin_pb2.ListErrorLogsRequest(page_size=1000, **filters),  # type: ignore[arg-type]
        metadata=api.operator("viewer").metadata,
    )
    return list(reply.entries)


class TestRecording:
    async def test_a_service_reports_a_failure_under_its_own_name(
        self, api: AdminApi
    ) -> None:
        reference = str(uuid.uuid4())

        error_id = await reported(
            api,
            severity="critical",
            code="provider_down",
            reference_id=reference,
            details={"model": "fal-flux-pro"},
        )

        (entry,) = [e for e in await entries(api) if e.id == error_id]
        assert entry.service == "tests"
        assert (entry.kind, entry.severity, entry.code) == (
            "provider",
            "critical",
            "provider_down",
        )
        assert entry.reference_id == reference
        assert dict(entry.details) == {"model": "fal-flux-pro"}
        assert not entry.resolved

    async def test_a_long_message_is_cut_not_refused(self, api: AdminApi) -> None:
        error_id = await reported(api, message="x" * 10_000)

        (entry,) = [e for e in await entries(api) if e.id == error_id]
        assert len(entry.message) == 4000

    @pytest.mark.parametrize(
        ("fields", "field"),
        [
            ({"severity": "fatal"}, "severity"),
            ({"kind": ""}, "kind"),
            ({"message": " "}, "message"),
        ],
    )
    async def test_an_unusable_report_is_refused(
        self, api: AdminApi, fields: dict[str, object], field: str
    ) -> None:
        status, error = await failure(reported(api, **fields))

        assert status == grpc.StatusCode.INVALID_ARGUMENT
        assert error.violations[0].field == field

    async def test_only_services_report(self, api: AdminApi) -> None:
        status, _ = await failure(
            api.stub.RecordError(
                admin_pb2.RecordErrorRequest(kind="provider", message="m"),
                metadata=api.user_alone(),
            )
        )

        assert status == grpc.StatusCode.PERMISSION_DENIED


class TestListing:
    async def test_filters_by_severity_and_resolution(self, api: AdminApi) -> None:
        warning = await reported(api, severity="warning")
        resolved = await reported(api, severity="warning")
        await api.stub.ResolveError(
            admin_pb2.ResolveErrorRequest(id=resolved),
            metadata=api.operator("support").metadata,
        )

        open_warnings = {
            e.id for e in await entries(api, severity="warning", resolved=False)
        }
        done = {e.id for e in await entries(api, resolved=True)}

        assert warning in open_warnings
        assert resolved not in open_warnings
        assert resolved in done
        assert warning not in done

    async def test_filters_by_service(self, api: AdminApi) -> None:
        error_id = await reported(api)

        assert error_id in {e.id for e in await entries(api, service="tests")}
        assert error_id not in {e.id for e in await entries(api, service="chat")}

    async def test_newest_first_with_a_cursor(self, api: AdminApi) -> None:
        ids = [await reported(api) for _ in range(3)]

        first = await api.stub.ListErrorLogs(
            admin_pb2.ListErrorLogsRequest(page_size=2),
            metadata=api.operator("viewer").metadata,
        )
        second = await api.stub.ListErrorLogs(
            admin_pb2.ListErrorLogsRequest(
                page_size=2, page_token=first.next_page_token
            ),
            metadata=api.operator("viewer").metadata,
        )

        assert [e.id for e in first.entries] == [ids[2], ids[1]]
        assert second.entries[0].id == ids[0]


class TestResolving:
    async def test_support_resolves_and_it_is_audited(self, api: AdminApi) -> None:
        error_id = await reported(api)
        operator = api.operator("support")

        reply = await api.stub.ResolveError(
            admin_pb2.ResolveErrorRequest(id=error_id), metadata=operator.metadata
        )

        assert reply.entry.resolved
        assert reply.entry.resolved_by == operator.id
        (row,) = await api.audit_rows("error", error_id)
        assert row["action"] == "error.resolved"
        assert row["before"] == {"resolved": False}
        assert row["after"]["resolved"] is True

    async def test_resolving_again_changes_nothing(self, api: AdminApi) -> None:
        error_id = await reported(api)
        for _ in range(2):
            await api.stub.ResolveError(
                admin_pb2.ResolveErrorRequest(id=error_id),
                metadata=api.operator().metadata,
            )

        assert len(await api.audit_rows("error", error_id)) == 1

    async def test_a_viewer_cannot_resolve(self, api: AdminApi) -> None:
        error_id = await reported(api)

        status, _ = await failure(
            api.stub.ResolveError(
                admin_pb2.ResolveErrorRequest(id=error_id),
                metadata=api.operator("viewer").metadata,
            )
        )

        assert status == grpc.StatusCode.PERMISSION_DENIED
        assert await api.audit_rows("error", error_id) == []

    async def test_an_unknown_error_is_not_found(self, api: AdminApi) -> None:
        status, _ = await failure(
            api.stub.ResolveError(
                admin_pb2.ResolveErrorRequest(id=str(uuid.uuid4())),
                metadata=api.operator().metadata,
            )
        )

        assert status == grpc.StatusCode.NOT_FOUND
