"""GET /api/auth/me answers kept per session (gateway/me.py): what is kept,
for how long, and what drops it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from omnihub.billing.v1 import billing_pb2, billing_pb2_grpc

from gateway.me import MeAnswers
from libs.config import Settings
from libs.grpc.identity import INTERNAL_TOKEN_KEY
from libs.tokens import InternalTokenSource, TokenSigner
from tests.gateway.factories import (
    extra_gateway,
    login,
    register,
    seconds_until_refused,
    sibling_settings,
)
from tests.suite import ServedApp, free_port

CREDIT = 1_000_000
LIFETIME = 1.5


class TestMeAnswers:
    async def test_an_answer_is_served_until_its_lifetime_ends(self) -> None:
        answers = MeAnswers(lifetime=0.05)
        answers.keep("s1", "u1", b"{}", answers.writes("u1"))

        assert answers.get("s1") == b"{}"
        await asyncio.sleep(0.06)
        assert answers.get("s1") is None

    def test_a_write_drops_every_session_of_the_user(self) -> None:
        answers = MeAnswers(lifetime=60)
        answers.keep("s1", "u1", b"1", answers.writes("u1"))
        answers.keep("s2", "u1", b"2", answers.writes("u1"))
        answers.keep("s3", "u2", b"3", answers.writes("u2"))

        answers.forget_user("u1")

        assert answers.get("s1") is None
        assert answers.get("s2") is None
        assert answers.get("s3") == b"3"

    def test_an_answer_read_while_a_write_ran_is_not_kept(self) -> None:
        answers = MeAnswers(lifetime=60)
        writes = answers.writes("u1")

        answers.forget_user("u1")
        answers.keep("s1", "u1", b"stale", writes)

        assert answers.get("s1") is None

    def test_the_oldest_sessions_go_first_past_the_limit(self) -> None:
        answers = MeAnswers(lifetime=60, max_sessions=2)
        for n in range(3):
            answers.keep(f"s{n}", f"u{n}", b"x", 0)

        assert len(answers) == 2
        assert answers.get("s0") is None
        assert answers.get("s2") == b"x"

    def test_a_zero_lifetime_keeps_nothing(self) -> None:
        answers = MeAnswers(lifetime=0)
        answers.keep("s1", "u1", b"{}", 0)

        assert answers.get("s1") is None


class Reads:
    """A reader that counts its calls and answers when released."""

    def __init__(self, body: bytes = b"{}", complete: bool = True) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.body = body
        self.complete = complete

    async def __call__(self) -> tuple[bytes, bool]:
        self.calls += 1
        await self.release.wait()
        if self.body == b"fail":
            raise RuntimeError("billing went away")
        return self.body, self.complete


class TestOneReadPerSession:
    async def test_callers_arriving_during_a_read_share_it(self) -> None:
        answers = MeAnswers(lifetime=60)
        read = Reads(b"shared")

        callers = [
            asyncio.ensure_future(answers.answer("s1", "u1", read)) for _ in range(20)
        ]
        await asyncio.sleep(0)
        read.release.set()

        assert await asyncio.gather(*callers) == [b"shared"] * 20
        assert read.calls == 1
        assert answers.get("s1") == b"shared"

    async def test_each_session_reads_on_its_own(self) -> None:
        answers = MeAnswers(lifetime=60)
        read = Reads()
        read.release.set()

        await asyncio.gather(
            answers.answer("s1", "u1", read), answers.answer("s2", "u1", read)
        )

        assert read.calls == 2

    async def test_a_read_begun_before_the_users_write_is_not_shared_after_it(
        self,
    ) -> None:
        answers = MeAnswers(lifetime=60)
        before, after = Reads(b"before"), Reads(b"after")
        first = asyncio.ensure_future(answers.answer("s1", "u1", before))
        await asyncio.sleep(0)

        answers.forget_user("u1")
        answers.forget_user("u1")
        second = asyncio.ensure_future(answers.answer("s1", "u1", after))
        await asyncio.sleep(0)
        before.release.set()
        after.release.set()

        assert await first == b"before"
        assert await second == b"after"
        assert after.calls == 1
        assert answers.get("s1") == b"after"

    async def test_a_failed_read_fails_every_waiter_and_keeps_nothing(self) -> None:
        answers = MeAnswers(lifetime=60)
        read = Reads(b"fail")
        callers = [
            asyncio.ensure_future(answers.answer("s1", "u1", read)) for _ in range(3)
        ]
        await asyncio.sleep(0)
        read.release.set()

        results = await asyncio.gather(*callers, return_exceptions=True)

        assert all(isinstance(r, RuntimeError) for r in results)
        assert answers.get("s1") is None
        read.body = b"again"
        assert await answers.answer("s1", "u1", read) == b"again"
        assert read.calls == 2

    async def test_a_caller_going_away_does_not_end_the_shared_read(self) -> None:
        answers = MeAnswers(lifetime=60)
        read = Reads(b"kept")
        leaving = asyncio.ensure_future(answers.answer("s1", "u1", read))
        staying = asyncio.ensure_future(answers.answer("s1", "u1", read))
        await asyncio.sleep(0)

        leaving.cancel()
        read.release.set()

        assert await staying == b"kept"
        assert answers.get("s1") == b"kept"

    async def test_an_incomplete_answer_is_served_but_not_kept(self) -> None:
        answers = MeAnswers(lifetime=60)
        read = Reads(b"partial", complete=False)
        read.release.set()

        assert await answers.answer("s1", "u1", read) == b"partial"
        assert answers.get("s1") is None

    async def test_with_a_zero_lifetime_every_caller_reads(self) -> None:
        answers = MeAnswers(lifetime=0)
        read = Reads()
        read.release.set()

        await asyncio.gather(*(answers.answer("s1", "u1", read) for _ in range(3)))

        assert read.calls == 3


@pytest.fixture(scope="module")
async def kept(settings: Settings, gateway: ServedApp) -> AsyncIterator[ServedApp]:
    """A gateway of the suite keeping answers for LIFETIME seconds."""
    own = sibling_settings(
        settings,
        port=free_port(),
        billing_address=settings.billing_address,
        workspace_address=settings.workspace_address,
        catalog_address=settings.catalog_address,
        generation_address=settings.generation_address,
        me_cache_seconds=LIFETIME,
    )
    async with extra_gateway(own) as served:
        yield served


async def _adjust_elsewhere(settings: Settings, user_id: str, credits: int) -> None:
    """Move credits the way the generation worker does: straight to billing,
    never through a gateway."""
    signer = TokenSigner(settings.signing_secret())
    internal = InternalTokenSource(signer, "tests", 300)
    async with grpc.aio.insecure_channel(settings.billing_address) as channel:
        await billing_pb2_grpc.BillingServiceStub(channel).Adjust(
            billing_pb2.AdjustRequest(
                account=billing_pb2.AccountRef(
                    owner_type=billing_pb2.OWNER_TYPE_USER, owner_id=user_id
                ),
                delta_micros=credits * CREDIT,
                idempotency_key=f"test:{uuid.uuid4()}",
                reason="test",
                actor="tests",
            ),
            metadata=((INTERNAL_TOKEN_KEY, internal.token()),),
            timeout=10,
        )


class TestKeptAnswers:
    async def test_a_change_made_elsewhere_shows_within_the_lifetime(
        self, kept: ServedApp, settings: Settings
    ) -> None:
        async with kept.client() as http:
            user = await register(http)
            before = (await http.get("/api/auth/me", headers=user.auth)).json()
            await _adjust_elsewhere(settings, user.id, 5)

            soon = (await http.get("/api/auth/me", headers=user.auth)).json()
            await asyncio.sleep(LIFETIME + 0.1)
            later = (await http.get("/api/auth/me", headers=user.auth)).json()

        assert soon["credits"] == before["credits"]
        assert later["credits"] == before["credits"] + 5

    async def test_the_users_own_write_shows_at_once(self, kept: ServedApp) -> None:
        async with kept.client() as http:
            user = await register(http)
            await http.get("/api/auth/me", headers=user.auth)
            updated = await http.put(
                "/api/profile", json={"name": "Renamed Person"}, headers=user.auth
            )
            me = (await http.get("/api/auth/me", headers=user.auth)).json()

        assert updated.status_code == 200, updated.text
        assert me["name"] == "Renamed Person"

    async def test_a_write_from_another_session_shows_at_once(
        self, kept: ServedApp
    ) -> None:
        async with kept.client() as http:
            user = await register(http)
            other = await login(http, user.email, user.password)
            await http.get("/api/auth/me", headers=user.auth)
            await http.put(
                "/api/profile", json={"name": "From Elsewhere"}, headers=other.auth
            )
            me = (await http.get("/api/auth/me", headers=user.auth)).json()

        assert me["name"] == "From Elsewhere"

    async def test_a_signed_out_session_gets_no_kept_answer(
        self, kept: ServedApp
    ) -> None:
        async with kept.client() as http:
            user = await register(http)
            await http.get("/api/auth/me", headers=user.auth)
            await http.post(
                "/api/auth/logout",
                json={"refreshToken": user.refresh_token},
                headers=user.auth,
            )

            elapsed = await seconds_until_refused(http, user.access_token)

        assert elapsed < LIFETIME + 2

    async def test_an_answer_without_billing_is_not_kept(
        self, settings: Settings, kept: ServedApp
    ) -> None:
        late = sibling_settings(
            settings,
            port=free_port(),
            billing_address=f"127.0.0.1:{free_port()}",
            workspace_address=settings.workspace_address,
            me_cache_seconds=60,
        )
        async with extra_gateway(late) as gateway, gateway.client() as http:
            user = await register(http)
            first = (await http.get("/api/auth/me", headers=user.auth)).json()
            answers: MeAnswers = gateway.server.config.app.state.me_answers
            held = len(answers)

        assert first["credits"] is None
        assert held == 0
