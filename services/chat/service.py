"""Business rules of conversations. Functions take a database session and
never commit; the servicer owns the transaction. Sending a message and
streaming its reply span several transactions and live in
services/chat/replies.py.

Who may do what:

| action                                   | author | reader (*) | anyone else |
| ---------------------------------------- | ------ | ---------- | ----------- |
| read it and its messages                 | yes    | yes        | NOT_FOUND   |
| rename, change model or system prompt    | yes    | DENIED     | NOT_FOUND   |
| delete, share, write in it               | yes    | DENIED     | NOT_FOUND   |

(*) A conversation shared with a workspace can be read by whoever that
workspace's `chatVisibility` lets see its members' chats (the workspace
service decides, through CheckVisibility). A conversation id that is not the
caller's reveals nothing: it answers exactly as one that does not exist.

A conversation in a workspace is paid for by the account the workspace
names (ResolvePayer); putting it in a workspace needs membership.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from libs.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from libs.logs import get_logger
from services.chat import repository
from services.chat.catalog import ModelCatalog
from services.chat.models import DEFAULT_TITLE, Conversation, Message
from services.chat.prompts import (
    IMAGE_TOKENS,
    MAX_CONTENT_LENGTH,
    MAX_IMAGES,
    estimate_tokens,
)
from services.chat.repository import ConversationFilter
from services.chat.workspaces import Workspaces

log = get_logger(__name__)

DEFAULT_MODEL_ID = "openai/gpt-4o-mini"
NOT_FOUND = "Conversation not found."
NOT_YOURS = "Only the person who started this conversation can change it."
MAX_TITLE_LENGTH = 200
MAX_SYSTEM_PROMPT_LENGTH = 8000
MAX_QUERY_LENGTH = 200
DEFAULT_CONVERSATION_PAGE = 50
MAX_CONVERSATION_PAGE = 100
DEFAULT_MESSAGE_PAGE = 100
MAX_MESSAGE_PAGE = 200
# Inline images make messages large; a page stops growing past this many
# bytes (always holding at least one message) so it fits one gRPC message.
MAX_PAGE_BYTES = 16 * 1024 * 1024
# Estimates: a typical reply, and the shortest one worth holding credits for.
TYPICAL_REPLY_TOKENS = 500
MIN_REPLY_TOKENS = 64

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class NewConversation:
    model_id: str = ""
    title: str = ""
    workspace_id: str = ""
    system_prompt: str = ""


@dataclass(frozen=True)
class ConversationChanges:
    """What to change; None keeps a field."""

    title: str | None = None
    model_id: str | None = None
    system_prompt: str | None = None


@dataclass(frozen=True)
class ConversationPage:
    conversations: list[Conversation]
    next_page_token: str


@dataclass(frozen=True)
class ConversationView:
    conversation: Conversation
    messages: list[Message]
    next_message_page_token: str
    is_owner: bool


@dataclass(frozen=True)
class Estimate:
    model_id: str
    text_tokens: int
    image_tokens: int
    context_tokens: int
    typical_cost: int
    min_cost: int
    max_cost: int
    max_output_tokens: int

    @property
    def input_tokens(self) -> int:
        return self.text_tokens + self.image_tokens + self.context_tokens


def parse_id(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _page_size(requested: int, default: int, maximum: int) -> int:
    if requested < 0:
        raise InvalidArgument.for_field("page_size", "page_size may not be negative.")
    return min(requested or default, maximum)


def _clean_title(title: str) -> str:
    cleaned = " ".join(title.split())
    if not 1 <= len(cleaned) <= MAX_TITLE_LENGTH:
        raise InvalidArgument.for_field(
            "title", f"Enter a title of 1 to {MAX_TITLE_LENGTH} characters."
        )
    return cleaned


def _check_system_prompt(prompt: str) -> str:
    if len(prompt) > MAX_SYSTEM_PROMPT_LENGTH:
        raise InvalidArgument.for_field(
            "system_prompt",
            f"A system prompt can be at most {MAX_SYSTEM_PROMPT_LENGTH:,} characters.",
        )
    return prompt.strip()


def _workspace_id(value: str) -> uuid.UUID:
    parsed = parse_id(value)
    if parsed is None:
        raise NotFound("No such workspace.")
    return parsed


# Page tokens


def _micros(moment: datetime) -> int:
    return (moment - EPOCH) // MICROSECOND


def _bad_token(field: str) -> InvalidArgument:
    return InvalidArgument.for_field(field, f"{field} is not one this service issued.")


def _conversation_token(conversation: Conversation) -> str:
    return f"{_micros(conversation.updated_at)}.{conversation.id}"


def _conversation_position(token: str) -> tuple[datetime, uuid.UUID] | None:
    if not token:
        return None
    micros, _, raw_id = token.partition(".")
    parsed = parse_id(raw_id)
    if not micros.isdigit() or parsed is None:
        raise _bad_token("page_token")
    return EPOCH + int(micros) * MICROSECOND, parsed


def _message_position(token: str) -> int | None:
    if not token:
        return None
    if not token.isdigit():
        raise _bad_token("message_page_token")
    return int(token)


def _size(message: Message) -> int:
    return len(message.content) + sum(len(url) for url in message.image_urls)


def _within_bytes(newest_first: list[Message]) -> list[Message]:
    kept: list[Message] = []
    total = 0
    for message in newest_first:
        total += _size(message)
        if kept and total > MAX_PAGE_BYTES:
            break
        kept.append(message)
    return kept


class ConversationService:
    def __init__(self, catalog: ModelCatalog, workspaces: Workspaces) -> None:
        self._catalog = catalog
        self._workspaces = workspaces

    async def list_conversations(
        self,
        db: AsyncSession,
        user_id: str,
        workspace_id: str,
        query: str,
        page_size: int,
        page_token: str,
    ) -> ConversationPage:
        size = _page_size(page_size, DEFAULT_CONVERSATION_PAGE, MAX_CONVERSATION_PAGE)
        after = _conversation_position(page_token)
        query = " ".join(query.split())
        if len(query) > MAX_QUERY_LENGTH:
            raise InvalidArgument.for_field(
                "query", f"Search for at most {MAX_QUERY_LENGTH} characters."
            )
        filter_ = await self._filter(user_id, workspace_id, query)
        rows = await repository.list_conversations(db, filter_, after, size + 1)
        more = len(rows) > size
        rows = rows[:size]
        return ConversationPage(
            rows, _conversation_token(rows[-1]) if more and rows else ""
        )

    async def _filter(
        self, user_id: str, workspace_id: str, query: str
    ) -> ConversationFilter:
        caller = parse_id(user_id)
        if caller is None:
            raise InvalidArgument("The caller's id is not a UUID.")
        if not workspace_id:
            return ConversationFilter(caller, query=query)
        workspace = _workspace_id(workspace_id)
        # An empty author: may the caller read other members' chats?
        others = await self._workspaces.may_read(str(workspace), user_id, "")
        return ConversationFilter(caller, workspace, others, query)

    async def create_conversation(
        self, db: AsyncSession, user_id: str, new: NewConversation
    ) -> Conversation:
        model = await self._catalog.chat_model(new.model_id or DEFAULT_MODEL_ID)
        title = _clean_title(new.title) if new.title.strip() else DEFAULT_TITLE
        workspace = None
        if new.workspace_id:
            workspace = _workspace_id(new.workspace_id)
            await self._workspaces.check_member(str(workspace), user_id)
        conversation = await repository.insert_conversation(
            db,
            {
                "user_id": uuid.UUID(user_id),
                "workspace_id": workspace,
                "title": title,
                "title_source": "user" if new.title.strip() else "default",
                "model_id": model.id,
                "model_name": model.name,
                "system_prompt": _check_system_prompt(new.system_prompt),
            },
        )
        log.info(
            "chat.conversation_created",
            conversation_id=str(conversation.id),
            model_id=model.id,
            workspace_id=new.workspace_id or None,
        )
        return conversation

    async def read(
        self,
        db: AsyncSession,
        user_id: str,
        conversation_id: str,
        page_size: int,
        page_token: str,
    ) -> ConversationView:
        size = _page_size(page_size, DEFAULT_MESSAGE_PAGE, MAX_MESSAGE_PAGE)
        before = _message_position(page_token)
        conversation, is_owner = await self.readable(db, user_id, conversation_id)
        rows = await repository.shown_messages(db, conversation.id, before, size + 1)
        page = _within_bytes(rows[:size])
        more = len(rows) > len(page)
        return ConversationView(
            conversation=conversation,
            messages=list(reversed(page)),
            next_message_page_token=str(page[-1].sequence) if more else "",
            is_owner=is_owner,
        )

    async def update(
        self,
        db: AsyncSession,
        user_id: str,
        conversation_id: str,
        changes: ConversationChanges,
    ) -> Conversation:
        conversation = await self.owned(db, user_id, conversation_id)
        values: dict[str, object] = {}
        if changes.title is not None:
            values["title"] = _clean_title(changes.title)
            values["title_source"] = "user"
        if changes.model_id is not None:
            model = await self._catalog.chat_model(changes.model_id)
            values["model_id"] = model.id
            values["model_name"] = model.name
        if changes.system_prompt is not None:
            values["system_prompt"] = _check_system_prompt(changes.system_prompt)
        if not values:
            return conversation
        updated = await repository.update_conversation(db, conversation.id, values)
        if updated is None:
            raise NotFound(NOT_FOUND)
        return updated

    async def delete(
        self, db: AsyncSession, user_id: str, conversation_id: str
    ) -> None:
        conversation = await self.owned(db, user_id, conversation_id)
        # Locked first, so that no send stores a reply between the check and
        # the deletion (its hold would be lost with the row).
        await repository.lock_conversation(db, conversation.id)
        if await repository.has_reply_in_progress(db, conversation.id):
            raise FailedPrecondition(
                "A reply in this conversation is still being written. Stop it "
                "or let it finish, then delete the conversation."
            )
        await repository.delete_conversation(db, conversation.id)
        log.info("chat.conversation_deleted", conversation_id=str(conversation.id))

    async def delete_user_data(self, db: AsyncSession, user_id: str) -> tuple[int, int]:
        """Delete every conversation of a user (for the admin service's user
        deletion); returns the conversations and messages deleted."""
        owner = parse_id(user_id)
        if owner is None:
            raise InvalidArgument.for_field("user_id", "user_id must be a UUID.")
        conversation_ids = await repository.lock_conversations_of(db, owner)
        for conversation_id in conversation_ids:
            # Its hold would be lost with the row; the admin task retries.
            if await repository.has_reply_in_progress(db, conversation_id):
                raise Unavailable(
                    "A reply to this user is still being written. Try again when "
                    "it has finished."
                )
        messages = await repository.delete_conversations(db, conversation_ids)
        log.info(
            "chat.user_data_deleted",
            user_id=user_id,
            conversations=len(conversation_ids),
            messages=messages,
        )
        return len(conversation_ids), messages

    async def share(
        self,
        db: AsyncSession,
        user_id: str,
        conversation_id: str,
        shared: bool,
        workspace_id: str | None,
    ) -> Conversation:
        """Share with the conversation's workspace (moving it into
        `workspace_id` first when given), or stop sharing it."""
        conversation = await self.owned(db, user_id, conversation_id)
        values: dict[str, object] = {"shared_with_workspace": shared}
        target = conversation.workspace_id
        if workspace_id is not None:
            target = _workspace_id(workspace_id) if workspace_id else None
            if target is not None:
                await self._workspaces.check_member(str(target), user_id)
            values["workspace_id"] = target
        if shared and target is None:
            raise InvalidArgument.for_field(
                "workspace_id", "Choose the workspace to share this conversation with."
            )
        updated = await repository.update_conversation(db, conversation.id, values)
        if updated is None:
            raise NotFound(NOT_FOUND)
        log.info(
            "chat.conversation_shared",
            conversation_id=str(conversation.id),
            workspace_id=str(target) if target else None,
            shared=shared,
        )
        return updated

    async def estimate(
        self, model_id: str, input_text: str, image_count: int, context_tokens: int
    ) -> Estimate:
        try:
            model = await self._catalog.chat_model(model_id)
        except InvalidArgument:
            raise NotFound("Model not found.") from None
        if len(input_text) > MAX_CONTENT_LENGTH:
            raise InvalidArgument.for_field("input_text", "inputText is too long.")
        if not 0 <= image_count <= MAX_IMAGES:
            raise InvalidArgument.for_field(
                "image_count", f"imageCount must be between 0 and {MAX_IMAGES}."
            )
        if not 0 <= context_tokens <= model.max_context:
            raise InvalidArgument.for_field(
                "context_tokens",
                f"contextTokens must be between 0 and {model.max_context}.",
            )
        text_tokens = estimate_tokens(input_text)
        input_tokens = text_tokens + image_count * IMAGE_TOKENS + context_tokens
        lengths = [TYPICAL_REPLY_TOKENS, MIN_REPLY_TOKENS, model.max_output]
        typical, least, most = await self._catalog.prices(
            model.id, input_tokens, lengths
        )
        return Estimate(
            model_id=model.id,
            text_tokens=text_tokens,
            image_tokens=image_count * IMAGE_TOKENS,
            context_tokens=context_tokens,
            typical_cost=typical,
            min_cost=least,
            max_cost=most,
            max_output_tokens=model.max_output,
        )

    # Access

    async def readable(
        self, db: AsyncSession, user_id: str, conversation_id: str
    ) -> tuple[Conversation, bool]:
        """The conversation if the caller may read it, and whether they are
        its author."""
        conversation = await self._find(db, conversation_id)
        if conversation is not None:
            if str(conversation.user_id) == user_id:
                return conversation, True
            if await self._shared_with(conversation, user_id):
                return conversation, False
        raise NotFound(NOT_FOUND)

    async def owned(
        self, db: AsyncSession, user_id: str, conversation_id: str
    ) -> Conversation:
        """The conversation if the caller is its author."""
        conversation, is_owner = await self.readable(db, user_id, conversation_id)
        if not is_owner:
            raise PermissionDenied(NOT_YOURS)
        return conversation

    async def _find(
        self, db: AsyncSession, conversation_id: str
    ) -> Conversation | None:
        parsed = parse_id(conversation_id)
        return await repository.conversation(db, parsed) if parsed else None

    async def _shared_with(self, conversation: Conversation, user_id: str) -> bool:
        if not conversation.shared_with_workspace or conversation.workspace_id is None:
            return False
        return await self._workspaces.may_read(
            str(conversation.workspace_id), user_id, str(conversation.user_id)
        )
