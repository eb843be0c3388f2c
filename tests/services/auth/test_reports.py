"""SummarizeUsers over real gRPC against PostgreSQL: sign-ups per hour and
day, totals per status and the users active in the last day, week and month.

The suite shares one database, so sign-ups are counted in a range of 2001
no other test writes to, and totals and active users are compared before
and after this test adds its own rows.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from omnihub.auth.v1 import auth_pb2, auth_pb2_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.config import Settings
from libs.db import create_engine
from libs.grpc.identity import AUTHORIZATION_KEY, INTERNAL_TOKEN_KEY
from libs.grpc.status import from_rpc_error
from libs.tokens import Audience, TokenSigner
from services.auth.main import AuthProcess
from services.auth.models import SCHEMA

Metadata = tuple[tuple[str, str], ...]
MARCH_2001 = datetime(2001, 3, 1, tzinfo=UTC)


class Reports:
    def __init__(self, settings: Settings, channel: grpc.aio.Channel) -> None:
        self.stub = auth_pb2_grpc.AuthServiceStub(channel)
        self.signer = TokenSigner(settings.signing_secret())

    def service(self) -> Metadata:
        return ((INTERNAL_TOKEN_KEY, self.signer.issue(Audience.INTERNAL, "t", 60)),)

    async def summarize(
        self, start: datetime, end: datetime, bucket: str = ""
    ) -> auth_pb2.SummarizeUsersResponse:
        reply: auth_pb2.SummarizeUsersResponse = await self.stub.SummarizeUsers(
            request(start, end, bucket), metadata=self.service(), timeout=10
        )
        return reply


def stamp(moment: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(moment)
    return value


def request(
    start: datetime, end: datetime, bucket: str
) -> auth_pb2.SummarizeUsersRequest:
    return auth_pb2.SummarizeUsersRequest(
        start=stamp(start), end=stamp(end), bucket=bucket
    )


@pytest.fixture(scope="module")
async def reports(
    settings: Settings, auth_service: AuthProcess
) -> AsyncIterator[Reports]:
    async with grpc.aio.insecure_channel(settings.auth_address) as channel:
        yield Reports(settings, channel)


@pytest.fixture(scope="module")
async def database(
    settings: Settings, auth_service: AuthProcess
) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings, SCHEMA)
    yield engine
    await engine.dispose()


async def add_user(
    database: AsyncEngine, created_at: datetime, status: str = "active"
) -> uuid.UUID:
    user_id = uuid.uuid4()
    async with database.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO users (id, email, name, nickname, status, created_at)"
                " VALUES (:id, :email, 'Report', :nickname, :status, :created_at)"
            ),
            {
                "id": user_id,
                "email": f"report-{user_id.hex[:12]}@example.com",
                "nickname": f"report{user_id.hex[:16]}",
                "status": status,
                "created_at": created_at,
            },
        )
    return user_id


async def add_session(
    database: AsyncEngine, user_id: uuid.UUID, used_ago: timedelta
) -> None:
    async with database.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO sessions (id, user_id, expires_at, last_used_at)"
                " VALUES (:id, :user_id, now() + interval '1 day',"
                " now() - CAST(:ago AS interval))"
            ),
            {"id": uuid.uuid4(), "user_id": user_id, "ago": used_ago},
        )


def buckets(reply: auth_pb2.SummarizeUsersResponse) -> dict[datetime, int]:
    return {b.start.ToDatetime(tzinfo=UTC): b.count for b in reply.signup_buckets}


class TestSignups:
    async def test_signups_are_counted_per_day_of_the_range(
        self, reports: Reports, database: AsyncEngine
    ) -> None:
        for day, hour in ((1, 0), (1, 23), (3, 12)):
            await add_user(database, MARCH_2001 + timedelta(days=day, hours=hour))
        await add_user(database, MARCH_2001 + timedelta(days=5))

        reply = await reports.summarize(MARCH_2001, MARCH_2001 + timedelta(days=4))

        assert buckets(reply) == {
            MARCH_2001 + timedelta(days=1): 2,
            MARCH_2001 + timedelta(days=3): 1,
        }
        assert reply.signups == 3

    async def test_hourly_buckets_start_on_the_hour(
        self, reports: Reports, database: AsyncEngine
    ) -> None:
        start = MARCH_2001 + timedelta(days=10)
        await add_user(database, start + timedelta(minutes=5))
        await add_user(database, start + timedelta(minutes=59, seconds=59))
        await add_user(database, start + timedelta(hours=2, minutes=30))

        reply = await reports.summarize(start, start + timedelta(hours=3), "hour")

        assert buckets(reply) == {start: 2, start + timedelta(hours=2): 1}

    async def test_the_end_of_the_range_is_not_in_it(
        self, reports: Reports, database: AsyncEngine
    ) -> None:
        start = MARCH_2001 + timedelta(days=20)
        await add_user(database, start + timedelta(days=1))

        reply = await reports.summarize(start, start + timedelta(days=1))

        assert reply.signups == 0


class TestTotals:
    async def test_total_counts_every_account_but_deleted_ones(
        self, reports: Reports, database: AsyncEngine
    ) -> None:
        now = datetime.now(UTC)
        before = await reports.summarize(now - timedelta(days=1), now)
        for status in ("active", "suspended", "banned", "deleted"):
            await add_user(database, MARCH_2001, status)

        after = await reports.summarize(now - timedelta(days=1), now)

        assert after.total_users - before.total_users == 3
        for status in ("active", "suspended", "banned", "deleted"):
            grown = after.users_by_status[status] - before.users_by_status[status]
            assert grown == 1, status


class TestActiveUsers:
    async def test_users_count_in_each_window_their_latest_session_falls_in(
        self, reports: Reports, database: AsyncEngine
    ) -> None:
        now = datetime.now(UTC)
        before = await reports.summarize(now - timedelta(days=1), now)
        for ago in (timedelta(hours=2), timedelta(days=3), timedelta(days=20)):
            await add_session(database, await add_user(database, MARCH_2001), ago)
        await add_session(
            database, await add_user(database, MARCH_2001), timedelta(days=40)
        )
        # Two sessions of one user, both recent: one active user.
        twice = await add_user(database, MARCH_2001)
        await add_session(database, twice, timedelta(minutes=5))
        await add_session(database, twice, timedelta(minutes=10))

        after = await reports.summarize(now - timedelta(days=1), now)

        assert after.daily_active_users - before.daily_active_users == 2
        assert after.weekly_active_users - before.weekly_active_users == 3
        assert after.monthly_active_users - before.monthly_active_users == 4


class TestRefusals:
    @pytest.mark.parametrize(
        ("start", "end", "bucket", "field"),
        [
            (MARCH_2001, MARCH_2001, "day", "end"),
            (MARCH_2001, MARCH_2001 + timedelta(days=1), "week", "bucket"),
            (MARCH_2001, MARCH_2001 + timedelta(days=200), "hour", "start"),
        ],
    )
    async def test_a_range_that_cannot_be_reported_on_is_invalid(
        self,
        reports: Reports,
        start: datetime,
        end: datetime,
        bucket: str,
        field: str,
    ) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await reports.summarize(start, end, bucket)

        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        error = from_rpc_error(caught.value)
        assert [violation.field for violation in error.violations] == [field]

    async def test_a_signed_in_user_may_not_read_the_figures(
        self, reports: Reports
    ) -> None:
        token = reports.signer.issue(
            Audience.USER, str(uuid.uuid4()), 60, session_id=str(uuid.uuid4())
        )

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await reports.stub.SummarizeUsers(
                request(MARCH_2001, MARCH_2001 + timedelta(days=1), "day"),
                metadata=((AUTHORIZATION_KEY, f"Bearer {token}"),),
                timeout=10,
            )

        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
