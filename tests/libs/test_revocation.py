from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from omnihub.auth.v1 import auth_pb2, auth_pb2_grpc

from libs.config import Settings
from libs.grpc.identity import INTERNAL_TOKEN_KEY
from libs.revocation import (
    RevocationBatch,
    RevocationList,
    RevocationSource,
    auth_service_source,
)
from libs.tokens import Audience, TokenSigner
from services.auth.main import AuthProcess

T0 = datetime(2030, 1, 1, tzinfo=UTC)


class ScriptedFeed:
    """A revocation feed that answers what the test scripts, and records
    the cursor each poll asked from."""

    def __init__(self) -> None:
        self.pending: list[str] = []
        self.failures_left = 0
        self.asked: list[datetime | None] = []
        self._clock = T0

    async def __call__(self, revoked_after: datetime | None) -> RevocationBatch:
        self.asked.append(revoked_after)
        if self.failures_left:
            self.failures_left -= 1
            raise ConnectionError("auth is down")
        self._clock += timedelta(seconds=1)
        answer, self.pending = self.pending, []
        return RevocationBatch(session_ids=answer, as_of=self._clock)


def revocation_list(
    source: RevocationSource, *, poll: float = 0.05, retention: float = 60
) -> RevocationList:
    return RevocationList(source, poll_interval=poll, retention_seconds=retention)


async def eventually(condition: Callable[[], bool], within: float = 2.0) -> bool:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


class TestSync:
    async def test_revoked_sessions_from_the_feed_are_refused(self) -> None:
        feed = ScriptedFeed()
        revoked = revocation_list(feed)
        feed.pending = ["session-a", "session-b"]

        await revoked.sync()

        assert revoked.is_revoked("session-a")
        assert revoked.is_revoked("session-b")
        assert not revoked.is_revoked("session-c")

    async def test_each_poll_asks_from_the_previous_answer(self) -> None:
        feed = ScriptedFeed()
        revoked = revocation_list(feed)

        await revoked.sync()
        await revoked.sync()

        assert feed.asked == [None, T0 + timedelta(seconds=1)]

    async def test_own_revocation_counts_before_the_feed_has_it(self) -> None:
        revoked = revocation_list(ScriptedFeed())

        revoked.add("session-a")

        assert revoked.is_revoked("session-a")

    async def test_entries_are_forgotten_after_the_retention(self) -> None:
        feed = ScriptedFeed()
        revoked = revocation_list(feed, retention=0.1)
        feed.pending = ["session-a"]
        await revoked.sync()

        await asyncio.sleep(0.15)
        await revoked.sync()

        assert not revoked.is_revoked("session-a")

    async def test_failed_sync_raises_and_keeps_the_cursor(self) -> None:
        feed = ScriptedFeed()
        revoked = revocation_list(feed)
        await revoked.sync()
        feed.failures_left = 1

        with pytest.raises(ConnectionError):
            await revoked.sync()
        await revoked.sync()

        assert feed.asked[1] == feed.asked[2] == T0 + timedelta(seconds=1)


class TestPolling:
    async def test_new_revocations_arrive_within_a_few_polls(self) -> None:
        feed = ScriptedFeed()
        revoked = revocation_list(feed, poll=0.05)
        revoked.start()
        try:
            feed.pending = ["session-a"]

            assert await eventually(lambda: revoked.is_revoked("session-a"), 1.0)
        finally:
            await revoked.stop()

    async def test_polling_survives_a_failing_feed(self) -> None:
        feed = ScriptedFeed()
        feed.failures_left = 3
        feed.pending = ["session-a"]
        revoked = revocation_list(feed, poll=0.02)
        revoked.start()
        try:
            assert await eventually(lambda: revoked.is_revoked("session-a"), 1.0)
            assert revoked.last_synced_at is not None
        finally:
            await revoked.stop()

    async def test_stop_ends_the_polling(self) -> None:
        feed = ScriptedFeed()
        revoked = revocation_list(feed, poll=0.02)
        revoked.start()
        await eventually(lambda: len(feed.asked) >= 2)

        await revoked.stop()
        polls = len(feed.asked)
        await asyncio.sleep(0.1)

        assert len(feed.asked) == polls


class TestAuthServiceFeed:
    @pytest.fixture
    async def source(
        self, settings: Settings, auth_service: AuthProcess
    ) -> AsyncIterator[RevocationSource]:
        token = TokenSigner(settings.signing_secret()).issue(
            Audience.INTERNAL, "tests", 60
        )
        async with grpc.aio.insecure_channel(settings.auth_address) as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)

            async def fetch(
                request: auth_pb2.ListRevokedSessionsRequest,
            ) -> auth_pb2.ListRevokedSessionsResponse:
                response: auth_pb2.ListRevokedSessionsResponse = (
                    await stub.ListRevokedSessions(
                        request, timeout=5, metadata=((INTERNAL_TOKEN_KEY, token),)
                    )
                )
                return response

            yield auth_service_source(fetch)

    async def _logged_out_session(self, settings: Settings) -> str:
        token = TokenSigner(settings.signing_secret()).issue(
            Audience.INTERNAL, "tests", 60
        )
        metadata = ((INTERNAL_TOKEN_KEY, token),)
        async with grpc.aio.insecure_channel(settings.auth_address) as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            registered = await stub.Register(
                auth_pb2.RegisterRequest(
                    email=f"feed-{uuid.uuid4().hex[:10]}@example.com",
                    password="feed-password",
                    name="Feed",
                ),
                metadata=metadata,
                timeout=10,
            )
            await stub.Logout(
                auth_pb2.LogoutRequest(refresh_token=registered.tokens.refresh_token),
                metadata=metadata,
                timeout=10,
            )
        return registered.tokens.session_id

    async def test_first_poll_returns_recent_revocations(
        self, settings: Settings, source: RevocationSource
    ) -> None:
        session_id = await self._logged_out_session(settings)

        batch = await source(None)

        assert session_id in batch.session_ids
        assert batch.as_of.tzinfo is not None

    async def test_later_poll_returns_revocations_since_the_cursor(
        self, settings: Settings, source: RevocationSource
    ) -> None:
        first = await source(None)
        session_id = await self._logged_out_session(settings)

        later = await source(first.as_of)

        assert session_id in later.session_ids
        assert later.as_of >= first.as_of

    async def test_poll_far_in_the_future_returns_nothing(
        self, source: RevocationSource
    ) -> None:
        batch = await source(datetime.now(UTC) + timedelta(days=1))

        assert batch.session_ids == []
