"""services/chat/replies.py over real gRPC: the hold before a reply, the
reply streamed from the local LLM, and its settlement: captured from the
provider's usage, cut off when the caller leaves, released when the
provider fails, and settled later when the process that wrote it died."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from omnihub.billing.v1 import billing_pb2
from omnihub.chat.v1 import chat_pb2
from omnihub.workspace.v1 import workspace_pb2
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.db import read_session_factory, session_factory
from services.chat.main import ChatProcess
from services.chat.models import Conversation, Message
from services.chat.prompts import MESSAGE_OVERHEAD_TOKENS, estimate_tokens
from services.chat.replies import ReplySweeper
from tests.fixtures.chat import LocalLLM
from tests.services.chat.factories import (
    CREDIT,
    FREE_MODEL,
    ChatApi,
    failure,
    pool_account,
    user_account,
)

# A 1x1 transparent PNG.
PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR4"
    "nGNgYAAAAAMAASsJTYQAAAAASUVORK5CYII="
)
MAX_OUTPUT = 16_384  # openai/gpt-4o-mini's capabilities.maxOutput
SETTLE_DEADLINE_SECONDS = 5.0


def prompt_estimate(*texts: str) -> int:
    return sum(MESSAGE_OVERHEAD_TOKENS + estimate_tokens(text) for text in texts)


async def reply_row(engine: AsyncEngine, message_id: str) -> Message:
    async with session_factory(engine)() as db:
        row = await db.get(Message, uuid.UUID(message_id))
    assert row is not None
    return row


async def settled_row(engine: AsyncEngine, message_id: str) -> Message:
    started = time.monotonic()
    while time.monotonic() - started < SETTLE_DEADLINE_SECONDS:
        row = await reply_row(engine, message_id)
        if row.settled_at is not None or (
            row.hold_id is None and row.status != "streaming"
        ):
            return row
        await asyncio.sleep(0.05)
    raise AssertionError("the reply was not settled in time")


class TestHold:
    async def test_the_hold_covers_the_longest_reply(
        self, api: ChatApi, llm_simulator: LocalLLM
    ) -> None:
        user = await api.funded_user()
        conversation = await api.conversation(user, title="Held")
        marker = llm_simulator.marker()

        sent = await api.send(user, conversation.id, marker)

        estimate = prompt_estimate(marker)
        assert sent.started.max_tokens == MAX_OUTPUT
        assert sent.started.held_micros == await api.price(estimate, MAX_OUTPUT)
        requests = await llm_simulator.requests(marker)
        assert [r["max_tokens"] for r in requests] == [MAX_OUTPUT]

    async def test_a_low_balance_shortens_the_reply_to_what_it_covers(
        self, api: ChatApi, llm_simulator: LocalLLM
    ) -> None:
        user = await api.funded_user()
        marker = llm_simulator.marker()
        conversation = await api.conversation(user, title="Short")
        estimate = prompt_estimate(marker)
        affordable = await api.price(estimate, 1000)
        await api.leave_only(user, affordable)

        sent = await api.send(user, conversation.id, marker)

        assert 900 <= sent.started.max_tokens <= 1000
        assert sent.started.held_micros <= affordable
        requests = await llm_simulator.requests(marker)
        assert requests[0]["max_tokens"] == sent.started.max_tokens
        assert sent.done.credits_micros <= affordable

    async def test_less_than_a_short_reply_is_refused_with_the_amounts(
        self, api: ChatApi
    ) -> None:
        user = await api.funded_user()
        conversation = await api.conversation(user)
        await api.leave_only(user, 2)

        status, error = await failure(api.send(user, conversation.id, "Hello"))

        assert status == grpc.StatusCode.FAILED_PRECONDITION
        assert error.code == "insufficient_credits"
        assert error.context["available"] == "0.000002"
        assert float(error.context["required"]) > 0.000002
        view = await api.read(user, conversation.id)
        assert list(view.messages) == []

    async def test_a_free_model_holds_and_charges_nothing(self, api: ChatApi) -> None:
        user = await api.funded_user()
        conversation = await api.conversation(user, FREE_MODEL)

        sent = await api.send(user, conversation.id, "Hello [tokens=10]")

        assert sent.started.held_micros == 0
        assert sent.done.credits_micros == 0
        assert sent.done.user_balance_micros == 10 * CREDIT
        assert await api.own_balance(user) == 10 * CREDIT


class TestSettlement:
    async def test_the_provider_reported_cost_is_captured_and_the_rest_released(
        self, api: ChatApi, chat_db: AsyncEngine
    ) -> None:
        user = await api.funded_user()
        conversation = await api.conversation(user, title="Cost")

        sent = await api.send(user, conversation.id, "Tell me [tokens=50]")

        done = sent.done
        reported = done.input_tokens + 2 * done.output_tokens
        assert done.credits_micros == await api.price(
            done.input_tokens, done.output_tokens, reported
        )
        assert await api.balance(user_account(user)) == (
            10 * CREDIT - done.credits_micros,
            0,
        )
        assert done.user_balance_micros == 10 * CREDIT - done.credits_micros
        row = await reply_row(chat_db, done.message_id)
        assert row.status == "complete"
        assert row.credits_micros == done.credits_micros
        assert row.settled_at is not None
        kinds = [entry.kind for entry in await api.ledger(user)]
        assert kinds[:2] == [
            billing_pb2.ENTRY_KIND_CAPTURE,
            billing_pb2.ENTRY_KIND_HOLD,
        ]

    async def test_conversation_totals_add_up_the_replies(self, api: ChatApi) -> None:
        user = await api.funded_user()
        conversation = await api.conversation(user, title="Totals")

        first = await api.send(user, conversation.id, "one [tokens=5]")
        second = await api.send(user, conversation.id, "two [tokens=7]")

        totals = (await api.read(user, conversation.id)).conversation
        assert totals.total_output_tokens == 12
        assert totals.total_input_tokens == (
            first.done.input_tokens + second.done.input_tokens
        )
        assert totals.total_credits_micros == (
            first.done.credits_micros + second.done.credits_micros
        )
        assert totals.message_count == 4

    async def test_cancelling_the_call_cuts_the_reply_off_and_charges_the_part(
        self, api: ChatApi, chat_db: AsyncEngine, llm_simulator: LocalLLM
    ) -> None:
        user = await api.funded_user()
        conversation = await api.conversation(user, title="Cut")
        marker = llm_simulator.marker()
        await llm_simulator.fault("slow", marker, delay=0.05)
        call = api.stub.SendMessage(
            chat_pb2.SendMessageRequest(
                conversation_id=conversation.id, content=f"{marker} [tokens=300]"
            ),
            metadata=api.user(user),
        )
        started = await call.read()
        for _ in range(4):
            await call.read()

        call.cancel()

        assert isinstance(started, chat_pb2.SendMessageResponse)
        row = await settled_row(chat_db, started.started.assistant_message_id)
        assert row.status == "cut_off"
        assert 4 <= row.output_tokens < 30
        assert row.input_tokens == prompt_estimate(f"{marker} [tokens=300]")
        assert row.credits_micros == await api.price(
            row.input_tokens, row.output_tokens
        )
        assert await api.balance(user_account(user)) == (
            10 * CREDIT - row.credits_micros,
            0,
        )
        requests = await llm_simulator.requests(marker)
        assert [(r["disconnected"], r["completed"]) for r in requests] == [
            (True, False)
        ]

    async def test_leaving_before_any_of_the_reply_costs_nothing(
        self, api: ChatApi, chat_db: AsyncEngine, llm_simulator: LocalLLM
    ) -> None:
        user = await api.funded_user()
        conversation = await api.conversation(user, title="Gone")
        marker = llm_simulator.marker()
        await llm_simulator.fault("slow", marker, delay=2.0)
        call = api.stub.SendMessage(
            chat_pb2.SendMessageRequest(
                conversation_id=conversation.id, content=marker
            ),
            metadata=api.user(user),
        )
        started = await call.read()

        call.cancel()

        assert isinstance(started, chat_pb2.SendMessageResponse)
        row = await settled_row(chat_db, started.started.assistant_message_id)
        assert row.status == "failed"
        assert await api.balance(user_account(user)) == (10 * CREDIT, 0)
        view = await api.read(user, conversation.id)
        assert [m.role for m in view.messages] == ["user"]

    async def test_a_reply_ends_with_done_just_before_the_deadline(
        self, api: ChatApi, chat_db: AsyncEngine, llm_simulator: LocalLLM
    ) -> None:
        user = await api.funded_user()
        conversation = await api.conversation(user, title="Deadline")
        marker = llm_simulator.marker()
        await llm_simulator.fault("slow", marker, delay=0.05)
        call = api.stub.SendMessage(
            chat_pb2.SendMessageRequest(
                conversation_id=conversation.id, content=f"{marker} [tokens=400]"
            ),
            metadata=api.user(user),
            timeout=3.0,
        )

        events = [event async for event in call]

        done = events[-1].done
        assert events[-1].WhichOneof("event") == "done"
        assert done.finish_reason == "cut_off"
        assert 0 < done.output_tokens < 400
        row = await reply_row(chat_db, done.message_id)
        assert row.status == "cut_off"
        assert row.settled_at is not None

    @pytest.mark.parametrize(
        ("mode", "code"),
        [
            ("cut_off", "unavailable"),
            ("payment_required", "unavailable"),
            ("rate_limit", "rate_limited"),
        ],
    )
    async def test_a_provider_failure_releases_the_hold(
        self,
        api: ChatApi,
        chat_db: AsyncEngine,
        llm_simulator: LocalLLM,
        mode: str,
        code: str,
    ) -> None:
        user = await api.funded_user()
        conversation = await api.conversation(user, title="Failing")
        marker = llm_simulator.marker()
        await llm_simulator.fault(mode, marker)

        sent = await api.send(user, conversation.id, marker)

        assert sent.error.code == code
        assert sent.error.message
        row = await reply_row(chat_db, sent.started.assistant_message_id)
        assert row.status == "failed"
        assert row.settled_at is not None
        assert await api.balance(user_account(user)) == (10 * CREDIT, 0)

    async def test_a_failed_reply_is_not_sent_as_history(
        self, api: ChatApi, llm_simulator: LocalLLM
    ) -> None:
        user = await api.funded_user()
        conversation = await api.conversation(user, title="History")
        marker = llm_simulator.marker()
        await llm_simulator.fault("mid_stream_error", marker, times=1)

        await api.send(user, conversation.id, f"first {marker}")
        second = await api.send(user, conversation.id, f"second {marker}")

        # The kept first message and the second; not the failed reply.
        assert "This conversation has 2 messages." in second.text


class TestTitles:
    async def test_the_first_exchange_asks_the_model_for_a_title(
        self, api: ChatApi, llm_simulator: LocalLLM
    ) -> None:
        user = await api.funded_user()
        conversation = await api.conversation(user)
        marker = llm_simulator.marker()

        sent = await api.send(user, conversation.id, f"Plan {marker}")

        titled = await api.read(user, conversation.id)
        assert titled.conversation.title == sent.done.title
        assert titled.conversation.title.startswith("[simulated] You said: Plan")
        whole = [r for r in await llm_simulator.requests(marker) if not r["stream"]]
        assert whole[0]["max_tokens"] == 24

    async def test_a_failed_title_request_falls_back_to_the_first_words(
        self, api: ChatApi, llm_simulator: LocalLLM
    ) -> None:
        user = await api.funded_user()
        conversation = await api.conversation(user)
        marker = llm_simulator.marker()
        # Every request whose last message is the first one fails: its reply,
        # and later the title request made from it.
        await llm_simulator.fault("error_500", marker)

        await api.send(user, conversation.id, f"Gardening tips please {marker}")
        await api.send(user, conversation.id, "And for winter? [tokens=3]")

        titled = await api.read(user, conversation.id)
        assert titled.conversation.title == f"Gardening tips please {marker}"

    async def test_an_image_alone_is_titled_without_asking_the_model(
        self, api: ChatApi
    ) -> None:
        user = await api.funded_user()
        conversation = await api.conversation(user)

        sent = await api.send(user, conversation.id, "", image_urls=[PIXEL])

        assert sent.done.title == "Image conversation"
        assert "I saw 1 image." in sent.text

    async def test_a_title_the_user_chose_is_kept(self, api: ChatApi) -> None:
        user = await api.funded_user()
        conversation = await api.conversation(user, title="Mine")

        sent = await api.send(user, conversation.id, "Hello [tokens=3]")

        assert sent.done.title == "Mine"


class TestWorkspaceConversation:
    async def test_a_shared_pool_pays_and_the_usage_report_counts_it(
        self, api: ChatApi
    ) -> None:
        owner = await api.funded_user()
        member = await api.funded_user()
        workspace_id = await api.team(owner, member)
        await api.workspace.AddCredits(
            workspace_pb2.AddCreditsRequest(
                workspace_id=workspace_id,
                amount_micros=5 * CREDIT,
                request_id=str(uuid.uuid4()),
            ),
            metadata=api.user(owner),
        )
        conversation = await api.conversation(member, workspace_id=workspace_id)

        sent = await api.send(member, conversation.id, "Team question [tokens=20]")

        pool = await api.balance(pool_account(workspace_id))
        assert pool == (5 * CREDIT - sent.done.credits_micros, 0)
        assert await api.own_balance(member) == 10 * CREDIT
        assert sent.done.user_balance_micros == 10 * CREDIT
        usage = await api.workspace.GetUsage(
            workspace_pb2.GetUsageRequest(workspace_id=workspace_id),
            metadata=api.user(owner),
        )
        chat = [kind for kind in usage.by_type if kind.type == "chat"]
        assert [(k.count, k.total_micros) for k in chat] == [
            (1, sent.done.credits_micros)
        ]


class TestSweeper:
    async def _abandoned(
        self,
        api: ChatApi,
        chat_db: AsyncEngine,
        status: str,
        credits: int,
    ) -> tuple[str, str, uuid.UUID]:
        """A reply a dead process left: held in billing, unsettled here, and
        started long ago."""
        user = await api.funded_user()
        conversation = await api.conversation(user, title="Abandoned")
        reply_id = uuid.uuid4()
        hold = await api.billing.Hold(
            billing_pb2.HoldRequest(
                account=user_account(user),
                amount_micros=CREDIT,
                idempotency_key=f"chat:{reply_id}:hold",
                reason="Chat reply (test)",
                reference=str(reply_id),
            ),
            metadata=api.service,
        )
        long_ago = datetime.now(UTC) - timedelta(hours=1)
        async with session_factory(chat_db).begin() as db:
            db.add(
                Message(
                    id=reply_id,
                    conversation_id=uuid.UUID(conversation.id),
                    sequence=1,
                    role="assistant",
                    content="partial" if status != "streaming" else "",
                    status=status,
                    credits_micros=credits,
                    hold_id=uuid.UUID(hold.hold_id),
                    created_at=long_ago,
                )
            )
            await db.execute(
                update(Conversation)
                .where(Conversation.id == uuid.UUID(conversation.id))
                .values(next_sequence=2)
            )
        return user, conversation.id, reply_id

    def _sweeper(self, chat_service: ChatProcess, chat_db: AsyncEngine) -> ReplySweeper:
        assert chat_service.replies is not None
        return ReplySweeper(
            chat_service.replies, read_session_factory(chat_db), stale_after=600
        )

    async def test_a_reply_left_streaming_is_released(
        self, api: ChatApi, chat_db: AsyncEngine, chat_service: ChatProcess
    ) -> None:
        user, _, reply_id = await self._abandoned(api, chat_db, "streaming", 0)

        settled = await self._sweeper(chat_service, chat_db).sweep()

        assert settled >= 1
        row = await reply_row(chat_db, str(reply_id))
        assert row.status == "failed"
        assert row.settled_at is not None
        assert await api.balance(user_account(user)) == (10 * CREDIT, 0)

    async def test_a_finished_reply_left_uncharged_is_captured_as_stored(
        self, api: ChatApi, chat_db: AsyncEngine, chat_service: ChatProcess
    ) -> None:
        user, _, reply_id = await self._abandoned(api, chat_db, "cut_off", 1234)

        await self._sweeper(chat_service, chat_db).sweep()
        again = await self._sweeper(chat_service, chat_db).sweep()

        row = await reply_row(chat_db, str(reply_id))
        assert row.settled_at is not None
        assert await api.balance(user_account(user)) == (10 * CREDIT - 1234, 0)
        async with session_factory(chat_db)() as db:
            open_rows = await db.scalar(
                select(Message.id).where(
                    Message.id == reply_id, Message.settled_at.is_(None)
                )
            )
        assert open_rows is None
        assert again == 0
