"""The auth service's SQL against real PostgreSQL: the one-statement GCRA
rate limit, refresh-token claims under concurrency, and session queries."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.config import Settings
from libs.db import create_engine, session_factory
from libs.process import migrate_service
from services.auth import repository
from services.auth.main import AuthProcess
from services.auth.models import SCHEMA

Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture(scope="module")
async def sessions(settings: Settings) -> AsyncIterator[Sessions]:
    await migrate_service(AuthProcess(), settings)
    engine = create_engine(settings, SCHEMA)
    yield session_factory(engine)
    await engine.dispose()


def unique_key(action: str = "login") -> str:
    return f"{action}:account:{uuid.uuid4().hex}@example.com"


@dataclass(frozen=True)
class SignedInSession:
    user_id: uuid.UUID
    session_id: uuid.UUID
    token_hash: bytes


async def signed_in_session(
    sessions: Sessions, lifetime: timedelta = timedelta(days=7)
) -> SignedInSession:
    token_hash = secrets.token_bytes(32)
    async with sessions.begin() as db:
        user = await repository.insert_user(
            db,
            email=f"repo-{uuid.uuid4().hex[:12]}@example.com",
            name="Repo",
            nickname=f"Repo{uuid.uuid4().hex[:12]}",
            password_hash=None,
        )
        assert user is not None
        session = await repository.insert_session(
            db, lifetime=lifetime, user_id=user.id, user_agent=None, ip_address=None
        )
        await repository.insert_refresh_token(db, session.id, token_hash)
    return SignedInSession(user.id, session.id, token_hash)


async def take(
    sessions: Sessions, key: str, interval: float, burst: float
) -> float | None:
    """One rate-limited event in a transaction of its own, as the servicer does."""
    async with sessions.begin() as db:
        return await repository.take_rate_token(
            db, key, timedelta(seconds=interval), timedelta(seconds=burst)
        )


class TestTakeRateToken:
    async def test_burst_passes_then_the_next_event_waits_one_interval(
        self, sessions: Sessions
    ) -> None:
        key = unique_key()

        allowed = [await take(sessions, key, 10, 30) for _ in range(3)]
        wait = await take(sessions, key, 10, 30)

        assert allowed == [None, None, None]
        assert wait is not None
        assert 9 < wait <= 10

    async def test_refused_events_do_not_push_the_wait_further(
        self, sessions: Sessions
    ) -> None:
        key = unique_key()
        await take(sessions, key, 10, 10)

        first = await take(sessions, key, 10, 10)
        second = await take(sessions, key, 10, 10)

        assert first is not None
        assert second is not None
        assert second <= first

    async def test_one_event_is_let_through_per_interval_after_the_burst(
        self, sessions: Sessions
    ) -> None:
        # Intervals of seconds, not tenths: each step below has at least
        # 1.8 s to run in, so a busy machine cannot refill a token early.
        key = unique_key()
        await take(sessions, key, 2, 4)
        await take(sessions, key, 2, 4)
        assert await take(sessions, key, 2, 4) is not None

        await asyncio.sleep(2.2)

        assert await take(sessions, key, 2, 4) is None
        assert await take(sessions, key, 2, 4) is not None

    async def test_keys_are_limited_separately(self, sessions: Sessions) -> None:
        busy, other = unique_key(), unique_key()
        await take(sessions, busy, 60, 60)

        assert await take(sessions, busy, 60, 60) is not None
        assert await take(sessions, other, 60, 60) is None

    async def test_concurrent_events_never_exceed_the_burst(
        self, sessions: Sessions
    ) -> None:
        key = unique_key()

        results = await asyncio.gather(*(take(sessions, key, 10, 30) for _ in range(8)))

        # At most the burst. Fewer is possible: now() is each transaction's
        # start, so one that started earlier but got the row lock later is
        # judged against an older clock (strict, never lenient).
        assert 1 <= sum(result is None for result in results) <= 3

    async def test_idle_buckets_are_purged_and_busy_ones_kept(
        self, sessions: Sessions
    ) -> None:
        idle, busy = unique_key(), unique_key()
        await take(sessions, idle, 0.01, 0.01)
        await take(sessions, busy, 60, 60)
        await asyncio.sleep(0.05)

        async with sessions.begin() as db:
            await repository.purge_idle_rate_buckets(db)
            keys = set(
                (
                    await db.execute(text("SELECT key FROM auth.rate_limit_buckets"))
                ).scalars()
            )

        assert idle not in keys
        assert busy in keys


class TestClaimRefreshToken:
    async def test_unused_token_is_claimed_for_its_session(
        self, sessions: Sessions
    ) -> None:
        signed_in = await signed_in_session(sessions)

        async with sessions.begin() as db:
            claimed = await repository.claim_refresh_token(db, signed_in.token_hash)

        assert claimed is not None
        assert claimed.session_id == signed_in.session_id

    async def test_token_is_claimed_only_once(self, sessions: Sessions) -> None:
        signed_in = await signed_in_session(sessions)
        async with sessions.begin() as db:
            await repository.claim_refresh_token(db, signed_in.token_hash)

        async with sessions.begin() as db:
            again = await repository.claim_refresh_token(db, signed_in.token_hash)

        assert again is None

    async def test_unknown_token_is_not_claimed(self, sessions: Sessions) -> None:
        async with sessions.begin() as db:
            assert await repository.claim_refresh_token(db, b"\0" * 32) is None

    async def test_concurrent_claims_have_exactly_one_winner(
        self, sessions: Sessions
    ) -> None:
        signed_in = await signed_in_session(sessions)

        async def claim() -> repository.ClaimedToken | None:
            async with sessions.begin() as db:
                return await repository.claim_refresh_token(db, signed_in.token_hash)

        results = await asyncio.gather(*(claim() for _ in range(8)))

        assert sum(result is not None for result in results) == 1

    async def test_claim_waiting_on_a_committed_claim_loses(
        self, sessions: Sessions
    ) -> None:
        signed_in = await signed_in_session(sessions)

        async with sessions.begin() as first:
            assert await repository.claim_refresh_token(first, signed_in.token_hash)
            second = asyncio.create_task(self._claim(sessions, signed_in.token_hash))
            await asyncio.sleep(0.2)  # the second claim now waits on the row lock
            assert not second.done()

        assert await second is None

    async def test_claim_waiting_on_a_rolled_back_claim_wins(
        self, sessions: Sessions
    ) -> None:
        signed_in = await signed_in_session(sessions)

        async with sessions() as first:
            assert await repository.claim_refresh_token(first, signed_in.token_hash)
            second = asyncio.create_task(self._claim(sessions, signed_in.token_hash))
            await asyncio.sleep(0.2)
            await first.rollback()

        assert await second is not None

    @staticmethod
    async def _claim(
        sessions: Sessions, token_hash: bytes
    ) -> repository.ClaimedToken | None:
        async with sessions.begin() as db:
            return await repository.claim_refresh_token(db, token_hash)


class TestSpentRefreshToken:
    async def test_unused_token_is_not_spent(self, sessions: Sessions) -> None:
        signed_in = await signed_in_session(sessions)

        async with sessions() as db:
            assert (
                await repository.spent_refresh_token(db, signed_in.token_hash) is None
            )

    async def test_spent_token_knows_whether_its_successor_was_used(
        self, sessions: Sessions
    ) -> None:
        signed_in = await signed_in_session(sessions)
        successor_hash = secrets.token_bytes(32)
        async with sessions.begin() as db:
            claimed = await repository.claim_refresh_token(db, signed_in.token_hash)
            assert claimed is not None
            await repository.insert_refresh_token(
                db, signed_in.session_id, successor_hash, parent_id=claimed.token_id
            )

        async with sessions() as db:
            before = await repository.spent_refresh_token(db, signed_in.token_hash)
        async with sessions.begin() as db:
            await repository.claim_refresh_token(db, successor_hash)
        async with sessions() as db:
            after = await repository.spent_refresh_token(db, signed_in.token_hash)

        assert before is not None
        assert after is not None
        assert (before.successor_used, after.successor_used) == (False, True)


class TestSessions:
    async def test_revoked_session_is_not_live(self, sessions: Sessions) -> None:
        signed_in = await signed_in_session(sessions)

        async with sessions.begin() as db:
            revoked = await repository.revoke_sessions(
                db, "logout", session_id=signed_in.session_id
            )
            live = await repository.live_session(db, signed_in.session_id)

        assert revoked == [signed_in.session_id]
        assert live is None

    async def test_expired_session_is_not_live(self, sessions: Sessions) -> None:
        signed_in = await signed_in_session(sessions, lifetime=timedelta(seconds=-1))

        async with sessions() as db:
            assert await repository.live_session(db, signed_in.session_id) is None

    async def test_revoking_twice_reports_nothing_the_second_time(
        self, sessions: Sessions
    ) -> None:
        signed_in = await signed_in_session(sessions)
        async with sessions.begin() as db:
            await repository.revoke_sessions(
                db, "logout", session_id=signed_in.session_id
            )

        async with sessions.begin() as db:
            again = await repository.revoke_sessions(
                db, "logout", session_id=signed_in.session_id
            )

        assert again == []

    async def test_revoked_since_overlaps_the_cursor(self, sessions: Sessions) -> None:
        signed_in = await signed_in_session(sessions)
        async with sessions.begin() as db:
            await repository.revoke_sessions(
                db, "logout", session_id=signed_in.session_id
            )
            now = await repository.database_now(db)

        async with sessions() as db:
            # A cursor a little after the revocation still sees it.
            inside, _ = await repository.revoked_since(
                db, now + timedelta(seconds=1), timedelta(seconds=10)
            )
            outside, _ = await repository.revoked_since(
                db, now + timedelta(seconds=11), timedelta(seconds=10)
            )

        assert signed_in.session_id in inside
        assert signed_in.session_id not in outside

    async def test_purge_deletes_only_long_ended_sessions(
        self, sessions: Sessions
    ) -> None:
        ended = await signed_in_session(sessions, lifetime=timedelta(days=-31))
        recent = await signed_in_session(sessions, lifetime=timedelta(days=-1))
        live = await signed_in_session(sessions)

        async with sessions.begin() as db:
            await repository.purge_ended_sessions(db, timedelta(days=30))
            remaining = set(
                (
                    await db.execute(
                        text("SELECT id FROM auth.sessions WHERE id = ANY(:ids)"),
                        {"ids": [ended.session_id, recent.session_id, live.session_id]},
                    )
                ).scalars()
            )

        assert remaining == {recent.session_id, live.session_id}


class TestUsers:
    async def test_taken_email_inserts_nothing(self, sessions: Sessions) -> None:
        email = f"taken-{uuid.uuid4().hex[:10]}@example.com"
        async with sessions.begin() as db:
            first = await repository.insert_user(
                db, email=email, name="A", nickname=uuid.uuid4().hex, password_hash=None
            )
            second = await repository.insert_user(
                db, email=email, name="B", nickname=uuid.uuid4().hex, password_hash=None
            )

        assert first is not None
        assert second is None
