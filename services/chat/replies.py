"""Sending a message: the checks and the hold before the reply, the reply
streamed from OpenRouter, and its settlement.

1. Before anything is stored, everything that can refuse the message does:
   the message itself, the conversation (the caller's own), its model, and
   the money. The most the reply can cost is priced by the catalog for the
   model's longest reply; if the paying account (the workspace service
   names it) cannot cover that, `max_tokens` is lowered to what it can
   cover, and below a short reply the send is refused with the amounts.
2. The hold is placed (key `chat:<reply id>:hold`), then one transaction
   claims the conversation's next two sequence numbers and stores the
   user's message and the reply, marked `streaming`.
3. The reply is read from OpenRouter by a task of its own, which passes
   each piece to the caller as it comes. The caller going away (the gRPC
   call cancelled by the gateway when the browser disconnects, or its
   deadline) cancels that task, which closes the upstream request.
4. Settlement, whatever happened:
   - the reply ended: the provider's usage (and cost) is priced by the
     catalog and captured, the rest of the hold released;
   - the reader left after some of it: the part written is stored as
     `cut_off` and only it is charged: the estimated prompt and one token
     per piece received (OpenRouter sends about one token a piece);
   - the provider failed, or nothing arrived: the hold is released, the
     reply marked `failed` (never shown), the user's message kept.
   The reply's row is written first, then the capture or release is made;
   a process that dies in between leaves a row the sweeper finds
   (`ReplySweeper`) and settles with the same idempotency keys.

The first exchange of a conversation with the default title also asks the
model for a short title, at the same time as the reply; it is not charged
(a few dozen tokens of the platform's). If it is late or fails, the first
words of the first message become the title.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.errors import (
    DeadlineExceeded,
    DomainError,
    FailedPrecondition,
    InsufficientCredits,
    Internal,
    InvalidArgument,
    NotConfigured,
    NotFound,
    RateLimited,
    Unavailable,
)
from libs.logs import get_logger
from services.chat import repository
from services.chat.catalog import ChatModel, ModelCatalog
from services.chat.ledger import Ledger, user_account
from services.chat.models import Conversation, Message
from services.chat.openrouter import (
    ContentDelta,
    Finished,
    OpenRouterClient,
    OpenRouterError,
    Usage,
)
from services.chat.prompts import (
    MAX_HISTORY_MESSAGES,
    TITLE_MAX_TOKENS,
    Prompt,
    Turn,
    assemble,
    check_content,
    check_images,
    clean_title,
    fallback_title,
    history_budget,
    refuse_private_image_hosts,
    title_request,
)
from services.chat.repository import SHOWN_STATUSES
from services.chat.service import (
    MIN_REPLY_TOKENS,
    NOT_FOUND,
    ConversationService,
)
from services.chat.workspaces import Payer, Workspaces

log = get_logger(__name__)

ONLINE_SUFFIX = ":online"
TITLE_WAIT_SECONDS = 5.0
CLOSE_WAIT_SECONDS = 10.0
SWEEP_BATCH = 100
# Rows of history read for a reply: a turn is two messages, and replies
# that failed are skipped.
HISTORY_ROWS = MAX_HISTORY_MESSAGES * 2


@dataclass(frozen=True)
class NewMessage:
    user_id: str
    conversation_id: str
    content: str
    image_urls: tuple[str, ...] = ()
    web_search: bool = False


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Done:
    message_id: str
    input_tokens: int
    output_tokens: int
    credits: int
    user_balance: int
    finish_reason: str
    title: str


@dataclass(frozen=True)
class Failed:
    error: DomainError


ReplyEvent = Delta | Done | Failed


@dataclass(frozen=True)
class Budget:
    """What the reply may cost and who pays."""

    # None for a model that costs nothing.
    payer: Payer | None
    tags: dict[str, str]
    max_tokens: int
    held: int
    personal_balance: int | None


@dataclass(frozen=True)
class ReplyPlan:
    user_id: str
    conversation_id: uuid.UUID
    model: ChatModel
    provider_model: str
    web_search: bool
    prompt: Prompt
    budget: Budget
    new: Turn
    user_message_id: uuid.UUID = field(default_factory=uuid.uuid4)
    reply_id: uuid.UUID = field(default_factory=uuid.uuid4)
    # The text to title the conversation from, when this turn titles it.
    title_source: str | None = None
    hold_id: str | None = None


@dataclass
class Progress:
    """What the provider has sent so far."""

    pieces: list[str] = field(default_factory=list)
    finished: Finished | None = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def provider_failure(exc: OpenRouterError) -> DomainError:
    """The error the user sees for a provider failure."""
    if exc.kind == "rate_limit":
        return RateLimited(exc.message, retry_after=exc.retry_after)
    if exc.kind == "timeout":
        return DeadlineExceeded(exc.message)
    if exc.kind == "invalid_request":
        return InvalidArgument(exc.message)
    if exc.kind == "payment_required" or exc.status == 401:
        # Our account's problem, not the user's: worth an operator's look.
        log.error("chat.provider_refused_us", kind=exc.kind, status=exc.status)
    return Unavailable(exc.message)


def _history(rows_newest_first: list[Message]) -> list[Turn]:
    """The turns a reply reads, oldest first: shown messages only, and no
    message whose own reply is still being written (a concurrent send)."""
    in_progress = {
        row.sequence - 1 for row in rows_newest_first if row.status == "streaming"
    }
    return [
        Turn(row.role, row.content, tuple(row.image_urls))
        for row in reversed(rows_newest_first)
        if row.status in SHOWN_STATUSES and row.sequence not in in_progress
    ]


class Replies:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        reads: async_sessionmaker[AsyncSession],
        conversations: ConversationService,
        catalog: ModelCatalog,
        workspaces: Workspaces,
        ledger: Ledger,
        client: OpenRouterClient,
        *,
        configured: bool,
    ) -> None:
        self.sessions = sessions
        self._reads = reads
        self._conversations = conversations
        self.catalog = catalog
        self._workspaces = workspaces
        self.ledger = ledger
        self.client = client
        self._configured = configured
        self.running: dict[uuid.UUID, Reply] = {}

    async def start(self, message: NewMessage) -> Reply:
        """Check, hold and store the message; the reply is then under way.
        Every refusal is raised from here, before anything is stored."""
        if not self._configured:
            raise NotConfigured(
                "Chat is not configured on this server (OPENROUTER_API_KEY)."
            )
        images = check_images(message.image_urls)
        content = check_content(message.content, bool(images))
        await refuse_private_image_hosts(images)
        plan = await self._plan(message, Turn("user", content, images))
        opening = asyncio.ensure_future(self._open(plan))
        try:
            # Once the hold is placed, storing the messages must finish even
            # if the caller leaves; the reply is then stopped at once.
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(_stop_when_open)
            raise

    async def _plan(self, message: NewMessage, new: Turn) -> ReplyPlan:
        async with self._reads() as db:
            conversation = await self._conversations.owned(
                db, message.user_id, message.conversation_id
            )
            rows = await repository.recent_messages(
                db, conversation.id, conversation.next_sequence, HISTORY_ROWS
            )
        model = await self._model_of(conversation)
        if new.image_urls and not model.vision:
            raise InvalidArgument.for_field(
                "image_urls", f"{model.name} cannot read images."
            )
        history = _history(rows)
        prompt = assemble(
            conversation.system_prompt,
            history,
            new,
            vision=model.vision,
            token_budget=history_budget(model.max_context, model.max_output),
        )
        web_search = message.web_search and model.web_search
        budget = await self._budget(conversation, model, prompt, message.user_id)
        return ReplyPlan(
            user_id=message.user_id,
            conversation_id=conversation.id,
            model=model,
            provider_model=model.endpoint + (ONLINE_SUFFIX if web_search else ""),
            web_search=web_search,
            prompt=prompt,
            budget=budget,
            new=new,
            title_source=_title_source(conversation, history, new),
        )

    async def _model_of(self, conversation: Conversation) -> ChatModel:
        try:
            return await self.catalog.chat_model(conversation.model_id)
        except InvalidArgument:
            raise FailedPrecondition(
                f"{conversation.model_name or conversation.model_id} is no longer "
                "available. Choose another model for this conversation."
            ) from None

    async def _budget(
        self,
        conversation: Conversation,
        model: ChatModel,
        prompt: Prompt,
        user_id: str,
    ) -> Budget:
        full, least = await self.catalog.prices(
            model.id, prompt.input_tokens, [model.max_output, _shortest(model)]
        )
        workspace = str(conversation.workspace_id or "")
        choice = await self._workspaces.payers(workspace, user_id, full)
        budget = Budget(None, choice.tags, model.max_output, 0, choice.personal_balance)
        if full == 0:
            return budget
        if choice.covering is not None:
            return replace(budget, payer=choice.covering, held=full)
        payer = choice.richest
        if payer.balance < least:
            raise InsufficientCredits.amounts(least, payer.balance)
        return await self._partial_budget(model, prompt, payer, budget, full, least)

    async def _partial_budget(
        self,
        model: ChatModel,
        prompt: Prompt,
        payer: Payer,
        budget: Budget,
        full: int,
        least: int,
    ) -> Budget:
        """The longest reply `payer` can cover (it covers the shortest)."""
        bare = await self.catalog.price(model.id, prompt.input_tokens, 0)
        # Prices are linear in the tokens up to rounding: start from the
        # linear answer and step down while the catalog says it is too much.
        shortest = _shortest(model)
        tokens = (payer.balance - bare) * model.max_output // max(1, full - bare)
        tokens = max(min(tokens, model.max_output), shortest)
        while tokens >= shortest:
            price = await self.catalog.price(model.id, prompt.input_tokens, tokens)
            if price <= payer.balance:
                return replace(budget, payer=payer, max_tokens=tokens, held=price)
            tokens -= max(1, tokens // 100)
        raise InsufficientCredits.amounts(least, payer.balance)

    async def _open(self, plan: ReplyPlan) -> Reply:
        hold_id = await self._hold(plan)
        plan = replace(plan, hold_id=hold_id)
        try:
            async with self.sessions.begin() as db:
                await self._store_turn(db, plan)
        except Exception:
            if hold_id is not None:
                await self.ledger.release(hold_id, str(plan.reply_id))
            raise
        reply = Reply(plan, self)
        self.running[plan.reply_id] = reply
        reply.begin()
        log.info(
            "chat.reply_started",
            conversation_id=str(plan.conversation_id),
            message_id=str(plan.reply_id),
            model=plan.provider_model,
            held_micros=plan.budget.held,
            max_tokens=plan.budget.max_tokens,
        )
        return reply

    async def _hold(self, plan: ReplyPlan) -> str | None:
        budget = plan.budget
        if budget.payer is None:
            return None
        return await self.ledger.hold(
            budget.payer.account,
            budget.held,
            str(plan.reply_id),
            f"Chat reply ({plan.model.name})",
            {**budget.tags, "conversation_id": str(plan.conversation_id)},
        )

    async def _store_turn(self, db: AsyncSession, plan: ReplyPlan) -> None:
        sequence = await repository.claim_turn(db, plan.conversation_id)
        if sequence is None:
            raise NotFound(NOT_FOUND)
        common = {"conversation_id": plan.conversation_id}
        await repository.insert_messages(
            db,
            [
                {
                    **common,
                    "id": plan.user_message_id,
                    "sequence": sequence,
                    "role": "user",
                    "content": plan.new.content,
                    "image_urls": list(plan.new.image_urls),
                    "web_search_used": plan.web_search,
                },
                {
                    **common,
                    "id": plan.reply_id,
                    "sequence": sequence + 1,
                    "role": "assistant",
                    "status": "streaming",
                    "model": plan.provider_model,
                    "web_search_used": plan.web_search,
                    "hold_id": uuid.UUID(plan.hold_id) if plan.hold_id else None,
                },
            ],
        )

    async def close(self) -> None:
        """Stop every reply under way and wait for them to be settled."""
        replies = list(self.running.values())
        for reply in replies:
            reply.stop()
        if replies:
            await asyncio.wait(
                [asyncio.ensure_future(reply.settled()) for reply in replies],
                timeout=CLOSE_WAIT_SECONDS,
            )


def _shortest(model: ChatModel) -> int:
    """The shortest reply worth sending (credits for less are refused)."""
    return min(MIN_REPLY_TOKENS, model.max_output)


def _stop_when_open(opening: asyncio.Future[Reply]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().stop()


def _title_source(
    conversation: Conversation, history: list[Turn], new: Turn
) -> str | None:
    if conversation.title_source != "default":
        return None
    first = next((turn for turn in history if turn.role == "user"), new)
    return first.content


class Reply:
    """One reply under way: a task reading OpenRouter, another settling
    when it ends, and the events for whoever is listening."""

    def __init__(self, plan: ReplyPlan, replies: Replies) -> None:
        self.plan = plan
        self._replies = replies
        self._events: asyncio.Queue[ReplyEvent] = asyncio.Queue()
        self._progress = Progress()
        self._reader: asyncio.Task[None] | None = None
        self._title: asyncio.Task[str | None] | None = None
        self._settling: asyncio.Task[None] | None = None

    @property
    def id(self) -> str:
        return str(self.plan.reply_id)

    def begin(self) -> None:
        self._reader = asyncio.create_task(self._read(), name=f"reply-{self.id}")
        if self.plan.title_source and self.plan.title_source.strip():
            self._title = asyncio.create_task(self._write_title())
        self._settling = asyncio.create_task(self._settle())

    def stop(self) -> None:
        """The reader left: end the reply where it is."""
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()

    async def settled(self) -> None:
        if self._settling is not None:
            await asyncio.shield(self._settling)

    async def events(self) -> AsyncIterator[ReplyEvent]:
        """Pieces of the reply, then one Done or Failed. Pieces that arrived
        while the reader was busy with the last one go out as one: a slow
        reader gets fewer, larger events, and nobody waits for a merge."""
        while True:
            event = await self._events.get()
            if not isinstance(event, Delta):
                yield event
                return
            pieces = [event.text]
            while not self._events.empty():
                waiting = self._events.get_nowait()
                if not isinstance(waiting, Delta):
                    yield Delta("".join(pieces))
                    yield waiting
                    return
                pieces.append(waiting.text)
            yield Delta("".join(pieces))

    # Reading

    async def _read(self) -> None:
        plan = self.plan
        stream = self._replies.client.stream(
            model=plan.provider_model,
            messages=plan.prompt.messages,
            max_tokens=plan.budget.max_tokens,
        )
        # aclosing: leaving early (cancelled) closes the upstream response.
        async with contextlib.aclosing(stream):
            async for event in stream:
                if isinstance(event, ContentDelta):
                    self._progress.pieces.append(event.text)
                    self._events.put_nowait(Delta(event.text))
                else:
                    self._progress.finished = event

    async def _write_title(self) -> str | None:
        assert self.plan.title_source is not None
        try:
            completion = await self._replies.client.complete(
                model=self.plan.model.endpoint,
                messages=title_request(self.plan.title_source),
                max_tokens=TITLE_MAX_TOKENS,
            )
        except OpenRouterError as exc:
            log.info("chat.title_failed", kind=exc.kind)
            return None
        return clean_title(completion.text)

    # Settling

    async def _settle(self) -> None:
        assert self._reader is not None
        await asyncio.wait({self._reader})
        try:
            await self._settle_outcome(self._reader)
        except Exception as exc:
            log.error("chat.reply_settle_failed", message_id=self.id, exc_info=exc)
            self._events.put_nowait(Failed(Internal()))
        finally:
            if self._title is not None:
                self._title.cancel()
            self._replies.running.pop(self.plan.reply_id, None)

    async def _settle_outcome(self, reader: asyncio.Task[None]) -> None:
        progress = self._progress
        if progress.finished is not None:
            await self._finish("complete")
        elif reader.cancelled() and progress.pieces:
            await self._finish("cut_off")
        elif reader.cancelled():
            # Stopped before any of the reply came: nothing to charge.
            await self._fail(Unavailable("The reply was stopped before it began."))
        else:
            await self._fail(self._failure(reader.exception()))

    def _failure(self, exc: BaseException | None) -> DomainError:
        if isinstance(exc, OpenRouterError):
            return provider_failure(exc)
        if exc is None:
            # The client promises a Finished event or an error; neither came.
            log.error("chat.reply_ended_unfinished", message_id=self.id)
            return Unavailable("The chat model's reply ended unexpectedly.")
        log.error("chat.reply_read_failed", message_id=self.id, exc_info=exc)
        return Internal()

    async def _finish(self, status: str) -> None:
        plan, progress = self.plan, self._progress
        usage = progress.finished.usage if progress.finished else None
        input_tokens = plan.prompt.input_tokens
        output_tokens = len(progress.pieces)
        if usage is not None:
            input_tokens = usage.prompt_tokens or input_tokens
            output_tokens = usage.completion_tokens
        charge = await self._charge_for(input_tokens, output_tokens, usage)
        title = await self._title_if_any()
        finish_reason = progress.finished.finish_reason if progress.finished else ""
        async with self._replies.sessions.begin() as db:
            stored = await repository.finish_reply(
                db,
                plan.reply_id,
                {
                    "content": progress.text,
                    "status": status,
                    "input_tokens": input_tokens,
                    "output_tokens": output_tokens,
                    "credits_micros": charge,
                    "finish_reason": (finish_reason or status)[:32],
                },
            )
            if stored is not None:
                await repository.add_reply_to_conversation(
                    db, plan.conversation_id, input_tokens, output_tokens, charge
                )
            current_title = await self._store_title(db, title)
        balance = await self._capture(charge)
        log.info(
            "chat.reply_finished",
            message_id=self.id,
            status=status,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            charged_micros=charge,
            held_micros=plan.budget.held,
        )
        self._events.put_nowait(
            Done(
                message_id=self.id,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                credits=charge,
                user_balance=balance,
                finish_reason=finish_reason or status,
                title=current_title or "",
            )
        )

    async def _charge_for(
        self, input_tokens: int, output_tokens: int, usage: Usage | None
    ) -> int:
        """The price of what was produced, never more than was held."""
        held = self.plan.budget.held
        if held == 0:
            return 0
        cost = usage.cost_micros if usage is not None and usage.cost_micros else 0
        price = await self._replies.catalog.price(
            self.plan.model.id, input_tokens, output_tokens, cost
        )
        if price > held:
            log.warning(
                "chat.charge_capped",
                message_id=self.id,
                price_micros=price,
                held_micros=held,
            )
        return min(price, held)

    async def _title_if_any(self) -> str | None:
        """The title this turn gives the conversation, if it gives one: the
        model's, or the first words when it has none in time."""
        if self.plan.title_source is None:
            return None
        title = None
        if self._title is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TITLE_WAIT_SECONDS):
                    title = await self._title
        return title or fallback_title(self.plan.title_source)

    async def _store_title(self, db: AsyncSession, title: str | None) -> str | None:
        if title is None:
            conversation = await repository.conversation(db, self.plan.conversation_id)
            return conversation.title if conversation else None
        return await repository.set_automatic_title(
            db, self.plan.conversation_id, title
        )

    async def _capture(self, charge: int) -> int:
        """Capture the charge (releasing the rest); returns the caller's own
        balance after it."""
        plan = self.plan
        ledger = self._replies.ledger
        after = None
        if plan.hold_id is not None:
            try:
                after = await ledger.capture(plan.hold_id, charge, self.id)
                await self._mark_settled()
            except DomainError as exc:
                # The row says what to charge; the sweeper captures it later.
                log.warning("chat.capture_deferred", message_id=self.id, code=exc.code)
        payer = plan.budget.payer
        if after is not None and payer is not None and payer.source == "personal":
            return after
        return await self._own_balance(charge)

    async def _own_balance(self, charge: int) -> int:
        budget = self.plan.budget
        try:
            return await self._replies.ledger.balance(user_account(self.plan.user_id))
        except DomainError:
            known = budget.personal_balance or 0
            personal = budget.payer is not None and budget.payer.source == "personal"
            return known - charge if personal else known

    async def _fail(self, error: DomainError) -> None:
        plan = self.plan
        async with self._replies.sessions.begin() as db:
            await repository.finish_reply(
                db, plan.reply_id, {"status": "failed", "content": ""}
            )
        if plan.hold_id is not None:
            try:
                await self._replies.ledger.release(plan.hold_id, self.id)
                await self._mark_settled()
            except DomainError as exc:
                log.warning("chat.release_deferred", message_id=self.id, code=exc.code)
        log.info("chat.reply_failed", message_id=self.id, code=error.code)
        self._events.put_nowait(Failed(error))

    async def _mark_settled(self) -> None:
        async with self._replies.sessions.begin() as db:
            await repository.mark_settled(db, self.plan.reply_id)


class ReplySweeper:
    """Settles replies whose process died between storing them and charging
    or releasing their hold: a finished reply is captured as stored, any
    other released. Replies this process is still writing are left alone."""

    def __init__(
        self,
        replies: Replies,
        reads: async_sessionmaker[AsyncSession],
        stale_after: float,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._replies = replies
        self._reads = reads
        self._stale_after = timedelta(seconds=stale_after)
        self._now = now

    async def sweep(self) -> int:
        """Settle what is due; returns how many replies were settled."""
        async with self._reads() as db:
            rows = await repository.unsettled_replies(
                db, self._now() - self._stale_after, SWEEP_BATCH
            )
        settled = 0
        for row in rows:
            if row.id in self._replies.running:
                continue
            try:
                await self._settle(row)
            except DomainError as exc:
                log.warning("chat.sweep_failed", message_id=str(row.id), code=exc.code)
                continue
            settled += 1
        return settled

    async def _settle(self, row: Message) -> None:
        ledger, sessions = self._replies.ledger, self._replies.sessions
        hold_id, reference = str(row.hold_id), str(row.id)
        if row.status in SHOWN_STATUSES:
            await ledger.capture(hold_id, row.credits_micros, reference)
        else:
            async with sessions.begin() as db:
                await repository.fail_abandoned_reply(db, row.id)
            await ledger.release(hold_id, reference)
        async with sessions.begin() as db:
            await repository.mark_settled(db, row.id)
        log.info("chat.reply_swept", message_id=reference, status=row.status)
