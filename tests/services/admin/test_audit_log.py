"""The audit trail: append-only in the database itself, and listed newest
first with filters and a cursor."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from omnihub.admin.v1 import admin_pb2
from sqlalchemy.exc import DBAPIError

from tests.services.admin.api import CLIENT_ADDRESS, AdminApi, Operator, failure


def stamp(moment: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(moment)
    return value


async def flag_changes(api: AdminApi, operator: Operator, count: int) -> str:
    """`count` audited changes of one new flag by `operator`; its key."""
    key = f"audit_{uuid.uuid4().hex[:10]}"
    for n in range(count):
        await api.stub.SetFeatureFlag(
            admin_pb2.SetFeatureFlagRequest(key=key, enabled=n % 2 == 0),
            metadata=operator.metadata,
        )
    return key


async def listed(api: AdminApi, **filters: object) -> admin_pb2.ListAuditLogsResponse:
    reply: admin_pb2.ListAuditLogsResponse = await api.stub.ListAuditLogs(
        admin_pb2.ListAuditLogsRequest(**filters),  # type: ignore[arg-type]
        metadata=api.operator("viewer").metadata,
    )
    return reply


class TestAppendOnly:
    async def test_an_entry_cannot_be_rewritten(self, api: AdminApi) -> None:
        key = await flag_changes(api, api.operator(), 1)
        (row,) = await api.audit_rows("feature_flag", key)

        with pytest.raises(DBAPIError, match="append-only"):
            await api.sql(
                "UPDATE audit_log SET action = 'nothing.happened' WHERE id = :id",
                id=row["id"],
            )

        (still,) = await api.audit_rows("feature_flag", key)
        assert still["action"] == "feature_flag.created"

    async def test_an_entry_cannot_be_deleted(self, api: AdminApi) -> None:
        key = await flag_changes(api, api.operator(), 1)
        (row,) = await api.audit_rows("feature_flag", key)

        with pytest.raises(DBAPIError, match="append-only"):
            await api.sql("DELETE FROM audit_log WHERE id = :id", id=row["id"])

        assert len(await api.audit_rows("feature_flag", key)) == 1

    async def test_the_outcome_of_an_applied_entry_cannot_change(
        self, api: AdminApi
    ) -> None:
        key = await flag_changes(api, api.operator(), 1)
        (row,) = await api.audit_rows("feature_flag", key)

        with pytest.raises(DBAPIError, match="append-only"):
            await api.sql(
                "UPDATE audit_log SET status = 'failed' WHERE id = :id", id=row["id"]
            )


class TestListing:
    async def test_entries_of_a_target_come_newest_first(self, api: AdminApi) -> None:
        key = await flag_changes(api, api.operator(), 3)

        reply = await listed(api, target_type="feature_flag", target_id=key)

        assert [e.action for e in reply.entries] == [
            "feature_flag.updated",
            "feature_flag.updated",
            "feature_flag.created",
        ]
        newest = reply.entries[0]
        assert newest.client_address == CLIENT_ADDRESS
        assert newest.before.struct_value["enabled"] is False
        assert newest.after.struct_value["enabled"] is True
        assert newest.status == "applied"

    async def test_the_cursor_walks_every_entry_once(self, api: AdminApi) -> None:
        key = await flag_changes(api, api.operator(), 5)

        seen: list[int] = []
        token = ""
        while True:
            reply = await listed(api, target_id=key, page_size=2, page_token=token)
            seen.extend(entry.id for entry in reply.entries)
            token = reply.next_page_token
            if not token:
                break

        assert len(seen) == 5
        assert seen == sorted(seen, reverse=True)

    async def test_filter_by_actor_and_action(self, api: AdminApi) -> None:
        mine = api.operator()
        await flag_changes(api, mine, 2)
        await flag_changes(api, api.operator(), 1)

        reply = await listed(api, actor_id=mine.id, action="feature_flag.updated")

        assert [(e.actor_id, e.action) for e in reply.entries] == [
            (mine.id, "feature_flag.updated")
        ]

    async def test_filter_by_time_range(self, api: AdminApi) -> None:
        operator = api.operator()
        await flag_changes(api, operator, 1)
        now = datetime.now(UTC)

        before = await listed(
            api, actor_id=operator.id, until=stamp(now - timedelta(hours=1))
        )
        around = await listed(
            api,
            actor_id=operator.id,
            since=stamp(now - timedelta(hours=1)),
            until=stamp(now + timedelta(hours=1)),
        )

        assert list(before.entries) == []
        assert len(around.entries) == 1

    async def test_a_bad_cursor_is_refused(self, api: AdminApi) -> None:
        status, _ = await failure(listed(api, page_token="not-a-cursor"))

        assert status == grpc.StatusCode.INVALID_ARGUMENT

    async def test_a_user_cannot_read_the_trail(self, api: AdminApi) -> None:
        status, _ = await failure(
            api.stub.ListAuditLogs(
                admin_pb2.ListAuditLogsRequest(), metadata=api.user()
            )
        )

        assert status == grpc.StatusCode.PERMISSION_DENIED
