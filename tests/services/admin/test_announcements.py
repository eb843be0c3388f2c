"""Announcements over real gRPC: written by a superadmin (audited), deleted
by deactivation, and shown publicly by audience, start and expiry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from omnihub.admin.v1 import admin_pb2

from tests.services.admin.api import AdminApi, Metadata, failure


def stamp(moment: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(moment)
    return value


class Board:
    """Creates announcements and deactivates them after the test, so that
    the public list (20 at most) never fills up with other tests' ones."""

    def __init__(self, api: AdminApi) -> None:
        self.api = api
        self.created: list[str] = []

    async def post(self, **fields: object) -> admin_pb2.Announcement:
        fields.setdefault("title", "Heads up")
        reply = await self.api.stub.CreateAnnouncement(
            admin_pb2.CreateAnnouncementRequest(**fields),  # type: ignore[arg-type]
            metadata=self.api.operator().metadata,
        )
        self.created.append(reply.announcement.id)
        return reply.announcement

    async def public(self, metadata: Metadata = ()) -> set[str]:
        reply = await self.api.stub.ListPublicAnnouncements(
            admin_pb2.ListPublicAnnouncementsRequest(), metadata=metadata
        )
        return {row.id for row in reply.announcements}

    async def clear(self) -> None:
        for announcement_id in self.created:
            await self.api.stub.DeleteAnnouncement(
                admin_pb2.DeleteAnnouncementRequest(id=announcement_id),
                metadata=self.api.operator().metadata,
            )


@pytest.fixture
async def board(api: AdminApi) -> AsyncIterator[Board]:
    posted = Board(api)
    yield posted
    await posted.clear()


class TestWriting:
    async def test_an_announcement_is_created_with_defaults_and_audited(
        self, api: AdminApi, board: Board
    ) -> None:
        created = await board.post(title="  Maintenance tonight ", body="At 22:00")

        assert created.title == "Maintenance tonight"
        assert (created.audience, created.severity) == ("all", "info")
        assert created.active
        assert not created.HasField("expires_at")
        (row,) = await api.audit_rows("announcement", created.id)
        assert row["action"] == "announcement.created"
        assert row["after"]["title"] == "Maintenance tonight"

    async def test_an_update_changes_only_the_given_fields(
        self, api: AdminApi, board: Board
    ) -> None:
        created = await board.post(title="Old", body="Body stays")

        reply = await api.stub.UpdateAnnouncement(
            admin_pb2.UpdateAnnouncementRequest(
                id=created.id, title="New", severity="warning"
            ),
            metadata=api.operator().metadata,
        )

        assert reply.announcement.title == "New"
        assert reply.announcement.severity == "warning"
        assert reply.announcement.body == "Body stays"
        rows = await api.audit_rows("announcement", created.id)
        assert rows[-1]["before"]["title"] == "Old"
        assert rows[-1]["after"]["title"] == "New"

    async def test_the_expiry_can_be_removed(self, api: AdminApi, board: Board) -> None:
        created = await board.post(
            expires_at=stamp(datetime.now(UTC) + timedelta(days=1))
        )

        reply = await api.stub.UpdateAnnouncement(
            admin_pb2.UpdateAnnouncementRequest(id=created.id, clear_expiry=True),
            metadata=api.operator().metadata,
        )

        assert not reply.announcement.HasField("expires_at")

    async def test_deleting_deactivates_and_is_audited(
        self, api: AdminApi, board: Board
    ) -> None:
        created = await board.post()

        reply = await api.stub.DeleteAnnouncement(
            admin_pb2.DeleteAnnouncementRequest(id=created.id),
            metadata=api.operator().metadata,
        )

        assert not reply.announcement.active
        listed = await api.stub.ListAnnouncements(
            admin_pb2.ListAnnouncementsRequest(page_size=200),
            metadata=api.operator("viewer").metadata,
        )
        assert created.id in {row.id for row in listed.announcements}
        rows = await api.audit_rows("announcement", created.id)
        assert rows[-1]["action"] == "announcement.deleted"
        assert rows[-1]["after"]["active"] is False

    @pytest.mark.parametrize(
        ("fields", "field"),
        [
            ({"title": " "}, "title"),
            ({"audience": "everyone"}, "audience"),
            ({"severity": "urgent"}, "severity"),
            ({"body": "x" * 5001}, "body"),
        ],
    )
    async def test_invalid_fields_are_refused(
        self, api: AdminApi, fields: dict[str, object], field: str
    ) -> None:
        status, error = await failure(
            api.stub.CreateAnnouncement(
                admin_pb2.CreateAnnouncementRequest(**{"title": "T", **fields}),  # type: ignore[arg-type]
                metadata=api.operator().metadata,
            )
        )

        assert status == grpc.StatusCode.INVALID_ARGUMENT
        assert error.violations[0].field == field

    async def test_it_must_expire_after_it_starts(self, api: AdminApi) -> None:
        now = datetime.now(UTC)

        status, _ = await failure(
            api.stub.CreateAnnouncement(
                admin_pb2.CreateAnnouncementRequest(
                    title="Backwards",
                    starts_at=stamp(now + timedelta(days=2)),
                    expires_at=stamp(now + timedelta(days=1)),
                ),
                metadata=api.operator().metadata,
            )
        )

        assert status == grpc.StatusCode.INVALID_ARGUMENT

    async def test_an_unknown_announcement_is_not_found(self, api: AdminApi) -> None:
        status, _ = await failure(
            api.stub.DeleteAnnouncement(
                admin_pb2.DeleteAnnouncementRequest(id="not-a-uuid"),
                metadata=api.operator().metadata,
            )
        )

        assert status == grpc.StatusCode.NOT_FOUND

    @pytest.mark.parametrize("role", ["viewer", "support"])
    async def test_only_a_superadmin_writes(self, api: AdminApi, role: str) -> None:
        status, _ = await failure(
            api.stub.CreateAnnouncement(
                admin_pb2.CreateAnnouncementRequest(title="Not mine"),
                metadata=api.operator(role).metadata,
            )
        )

        assert status == grpc.StatusCode.PERMISSION_DENIED


class TestPublicList:
    async def test_anonymous_visitors_see_only_audience_all(
        self, api: AdminApi, board: Board
    ) -> None:
        everyone = await board.post(audience="all")
        users = await board.post(audience="users")
        admins = await board.post(audience="admins")

        shown = await board.public(api.service)

        assert everyone.id in shown
        assert users.id not in shown
        assert admins.id not in shown

    async def test_signed_in_users_also_see_audience_users(
        self, api: AdminApi, board: Board
    ) -> None:
        everyone = await board.post(audience="all")
        users = await board.post(audience="users")
        admins = await board.post(audience="admins")

        shown = await board.public(api.user())

        assert {everyone.id, users.id} <= shown
        assert admins.id not in shown

    async def test_expired_future_and_inactive_ones_are_hidden(
        self, api: AdminApi, board: Board
    ) -> None:
        now = datetime.now(UTC)
        live = await board.post(expires_at=stamp(now + timedelta(hours=1)))
        expired = await board.post(
            starts_at=stamp(now - timedelta(days=2)),
            expires_at=stamp(now - timedelta(days=1)),
        )
        future = await board.post(starts_at=stamp(now + timedelta(hours=1)))
        inactive = await board.post(active=False)
        deleted = await board.post()
        await api.stub.DeleteAnnouncement(
            admin_pb2.DeleteAnnouncementRequest(id=deleted.id),
            metadata=api.operator().metadata,
        )

        shown = await board.public()

        assert live.id in shown
        assert not {expired.id, future.id, inactive.id, deleted.id} & shown

    async def test_the_most_severe_come_first(
        self, api: AdminApi, board: Board
    ) -> None:
        info = await board.post(severity="info")
        critical = await board.post(severity="critical")

        reply = await api.stub.ListPublicAnnouncements(
            admin_pb2.ListPublicAnnouncementsRequest()
        )

        order = [row.id for row in reply.announcements]
        assert order.index(critical.id) < order.index(info.id)
