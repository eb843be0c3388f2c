"""SummarizeGenerations over real gRPC against PostgreSQL: counts per bucket,
type and status, generating users, model rankings, all-time totals and the
latest generations.

Generations are written straight into the schema and moved into a range of
2002 no other test writes to, with models of their own, so the figures of
that range are exactly what each test made.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from omnihub.generation.v1 import generation_pb2, generation_pb2_grpc

from libs.config import Settings
from libs.errors import InvalidArgument
from libs.grpc.identity import AUTHORIZATION_KEY, INTERNAL_TOKEN_KEY
from libs.grpc.status import from_rpc_error
from libs.tokens import Audience, TokenSigner
from services.generation.main import GenerationProcess
from tests.services.generation.factories import GenerationRow, GenerationRows, new_user

Metadata = tuple[tuple[str, str], ...]


class Reports:
    def __init__(self, settings: Settings, channel: grpc.aio.Channel) -> None:
        self.stub = generation_pb2_grpc.GenerationServiceStub(channel)
        self.signer = TokenSigner(settings.signing_secret())

    def service(self) -> Metadata:
        return ((INTERNAL_TOKEN_KEY, self.signer.issue(Audience.INTERNAL, "t", 60)),)

    async def summarize(
        self, start: datetime, end: datetime, **fields: object
    ) -> generation_pb2.SummarizeGenerationsResponse:
        reply: generation_pb2.SummarizeGenerationsResponse = (
            await self.stub.SummarizeGenerations(
                request(start, end, **fields), metadata=self.service(), timeout=10
            )
        )
        return reply


def stamp(moment: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(moment)
    return value


def request(
    start: datetime, end: datetime, **fields: object
) -> generation_pb2.SummarizeGenerationsRequest:
    return generation_pb2.SummarizeGenerationsRequest(
        start=stamp(start),
        end=stamp(end),
        **fields,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
async def reports(
    settings: Settings, generation_service: GenerationProcess
) -> AsyncIterator[Reports]:
    async with grpc.aio.insecure_channel(settings.generation_address) as channel:
        yield Reports(settings, channel)


@pytest.fixture(scope="module")
async def rows(
    settings: Settings, generation_service: GenerationProcess
) -> AsyncIterator[GenerationRows]:
    database = GenerationRows(settings)
    yield database
    await database.close()


async def made(
    rows: GenerationRows,
    started_at: datetime,
    *,
    user_id: str | None = None,
    credits: int = 1_000_000,
    **fields: str,
) -> str:
    """A generation started at `started_at` that was priced at `credits`."""
    generation_id = await rows.add(GenerationRow(user_id or new_user(), **fields))
    await rows.execute(
        "UPDATE generations SET started_at = :at, credits_micros = :credits"
        " WHERE id = :id",
        id=generation_id,
        at=started_at,
        credits=credits,
    )
    return generation_id


def new_model() -> str:
    return f"report-model-{uuid.uuid4().hex[:8]}"


def a_day_in_2002(day: int) -> datetime:
    return datetime(2002, 1, day, tzinfo=UTC)


class TestBuckets:
    async def test_generations_are_counted_per_day_type_and_status(
        self, reports: Reports, rows: GenerationRows
    ) -> None:
        start = a_day_in_2002(1)
        day = timedelta(days=1)
        await made(rows, start + timedelta(hours=1), credits=2_000_000)
        await made(rows, start + timedelta(hours=9), credits=3_000_000)
        await made(rows, start + timedelta(hours=9), type="video", status="failed")
        await made(rows, start + 2 * day, type="upscale")
        await made(rows, start + 3 * day)  # the day after the range

        reply = await reports.summarize(start, start + 3 * day)

        counted = {
            (b.start.ToDatetime(tzinfo=UTC), b.type, b.status): (
                b.count,
                b.credits_micros,
            )
            for b in reply.buckets
        }
        assert counted == {
            (start, "image", "completed"): (2, 5_000_000),
            (start, "video", "failed"): (1, 1_000_000),
            (start + 2 * day, "upscale", "completed"): (1, 1_000_000),
        }

    async def test_hours_are_buckets_of_their_own(
        self, reports: Reports, rows: GenerationRows
    ) -> None:
        start = a_day_in_2002(10)
        await made(rows, start + timedelta(minutes=1))
        await made(rows, start + timedelta(hours=5, minutes=59))

        reply = await reports.summarize(start, start + timedelta(days=1), bucket="hour")

        assert [b.start.ToDatetime(tzinfo=UTC) for b in reply.buckets] == [
            start,
            start + timedelta(hours=5),
        ]

    async def test_deleted_generations_still_count_where_they_were_made(
        self, reports: Reports, rows: GenerationRows
    ) -> None:
        start = a_day_in_2002(12)
        generation_id = await made(rows, start + timedelta(hours=2))
        await rows.soft_delete(generation_id)

        reply = await reports.summarize(start, start + timedelta(days=1))

        assert sum(b.count for b in reply.buckets) == 1


class TestGeneratingUsers:
    async def test_each_user_counts_once_per_bucket_and_once_in_the_range(
        self, reports: Reports, rows: GenerationRows
    ) -> None:
        start = a_day_in_2002(15)
        day = timedelta(days=1)
        busy, quiet = new_user(), new_user()
        for offset in (timedelta(hours=1), timedelta(hours=2), day):
            await made(rows, start + offset, user_id=busy)
        await made(rows, start + day, user_id=quiet)

        reply = await reports.summarize(start, start + 2 * day)

        assert reply.generating_users == 2
        assert [
            (b.start.ToDatetime(tzinfo=UTC), b.users)
            for b in reply.generating_users_buckets
        ] == [(start, 1), (start + day, 2)]


class TestTopModels:
    async def test_models_are_ranked_by_count_and_by_credits_of_completed_ones(
        self, reports: Reports, rows: GenerationRows
    ) -> None:
        start = a_day_in_2002(20)
        popular, dear = new_model(), new_model()
        for _ in range(3):
            await made(rows, start, model_id=popular, model_name="Popular")
        await made(rows, start, model_id=dear, model_name="Dear", credits=9_000_000)
        await made(
            rows,
            start,
            model_id=dear,
            model_name="Dear",
            status="failed",
            credits=50_000_000,
        )

        reply = await reports.summarize(start, start + timedelta(days=1), top_models=5)

        assert [(m.model_id, m.count) for m in reply.top_models_by_count] == [
            (popular, 3),
            (dear, 2),
        ]
        assert [
            (m.model_id, m.model_name, m.credits_micros)
            for m in reply.top_models_by_credits
        ] == [(dear, "Dear", 9_000_000), (popular, "Popular", 3_000_000)]

    async def test_only_as_many_models_as_asked_for_are_ranked(
        self, reports: Reports, rows: GenerationRows
    ) -> None:
        start = a_day_in_2002(22)
        for _ in range(3):
            await made(rows, start, model_id=new_model())

        reply = await reports.summarize(start, start + timedelta(days=1), top_models=2)
        unranked = await reports.summarize(start, start + timedelta(days=1))

        assert len(reply.top_models_by_count) == 2
        assert len(reply.top_models_by_credits) == 2
        assert list(unranked.top_models_by_count) == []


class TestTotalsAndRecent:
    async def test_totals_per_type_are_the_counts_kept_per_owner(
        self, reports: Reports, rows: GenerationRows
    ) -> None:
        start = a_day_in_2002(25)
        before = await reports.summarize(start, start + timedelta(days=1))
        await rows.execute(
            "INSERT INTO generation_counts (user_id, workspace_id, type, count)"
            " VALUES (:user, :workspace, 'video', 4)",
            user=new_user(),
            workspace=new_user(),
        )

        after = await reports.summarize(start, start + timedelta(days=1))

        assert after.totals_by_type["video"] - before.totals_by_type["video"] == 4
        assert after.totals_by_type["image"] == before.totals_by_type["image"]

    async def test_recent_lists_the_newest_generations_first(
        self, reports: Reports, rows: GenerationRows
    ) -> None:
        soon = datetime.now(UTC) + timedelta(days=1)
        older = await made(rows, soon, model_id=new_model())
        newer = await made(rows, soon + timedelta(minutes=1), type="video")

        reply = await reports.summarize(a_day_in_2002(1), a_day_in_2002(2), recent=2)

        assert [(g.id, g.type) for g in reply.recent] == [
            (newer, "video"),
            (older, "image"),
        ]
        assert reply.recent[0].started_at.ToDatetime(tzinfo=UTC) == soon + timedelta(
            minutes=1
        )
        await rows.remove(older)
        await rows.remove(newer)


class TestRefusals:
    @pytest.mark.parametrize(
        ("fields", "field"),
        [({"top_models": 51}, "top_models"), ({"recent": -1}, "recent")],
    )
    async def test_limits_out_of_range_are_invalid(
        self, reports: Reports, fields: dict[str, int], field: str
    ) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await reports.summarize(a_day_in_2002(1), a_day_in_2002(2), **fields)

        error = from_rpc_error(caught.value)
        assert isinstance(error, InvalidArgument)
        assert [v.field for v in error.violations] == [field]

    async def test_a_signed_in_user_may_not_read_the_figures(
        self, reports: Reports
    ) -> None:
        token = reports.signer.issue(
            Audience.USER, new_user(), 60, session_id=str(uuid.uuid4())
        )

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await reports.stub.SummarizeGenerations(
                request(a_day_in_2002(1), a_day_in_2002(2)),
                metadata=((AUTHORIZATION_KEY, f"Bearer {token}"),),
                timeout=10,
            )

        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
