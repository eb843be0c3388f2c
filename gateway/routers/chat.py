"""/api/chat and /api/enhance-prompt, served by the chat service.

A conversation that is not the caller's answers 404 on every route, as one
that does not exist; one shared with a workspace can be read (not changed:
403) by the members its chat visibility admits. Lists are bare arrays, as
the web client reads them; `X-Next-Cursor` names the next page.
(GET /api/chat/models is served with the catalog: gateway/routers/catalog.py.)

POST /api/chat/conversations/{id}/messages answers with Server-Sent Events,
the stream the web client reads (chat-workspaces-billing.md §3.10): each
event is one `data: {json}` line and a blank line, written and flushed
whole:

    {"type": "start", "messageId", "userMessageId", "heldCredits", "maxTokens"}
    {"type": "content", "content": "<piece of the reply>"}   (many)
    {"type": "done", "messageId", "inputTokens", "outputTokens", "credits",
     "userCredits", "finishReason", "title"}
or  {"type": "error", "error": "<sentence>", "code", "statusCode", ...}

A refusal before the reply starts (bad input, someone else's conversation,
too few credits) has its own status (400, 404, 402 ...) and, because the
web client reads any answer as a stream, a body of one `error` event with
the usual error fields. A failure of the model once the stream is open is
an `error` event. A comment line `: keep-alive` goes out after 15 seconds
without an event (proxies drop silent connections). The client
disconnecting cancels the chat service's gRPC call, which stops the model
and charges only what was written. `Accept: application/json` (without
text/event-stream) gets the whole reply as one JSON object (201), and
failures as the usual error body with their status.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable
from datetime import UTC
from typing import Annotated, Any, TypeVar

import grpc
import orjson
from fastapi import APIRouter, Query, Request, Response, status
from omnihub.chat.v1 import chat_pb2
from pydantic.alias_generators import to_camel
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.deps import UpstreamDep, UserDep
from gateway.errors import ERROR_STATUSES, ErrorBody, render_domain_error
from gateway.middleware import request_id_var
from gateway.schemas.billing import credits
from gateway.schemas.chat import (
    ChatEstimateOut,
    ConversationDetailOut,
    ConversationOut,
    CreateConversationBody,
    DeletedOut,
    EnhancedPromptOut,
    EnhanceEstimateBody,
    EnhanceEstimateOut,
    EnhancePromptBody,
    EstimateBody,
    MessageOut,
    MessageSentOut,
    SendMessageBody,
    SentAssistantMessageOut,
    SentUserMessageOut,
    ShareConversationBody,
    UpdateConversationBody,
    UpdatedConversationOut,
)
from gateway.upstream import Upstream
from libs.config import Settings
from libs.errors import DomainError, FieldViolation, Internal, InvalidArgument
from libs.errors import error_class_for as domain_error_class
from libs.grpc.status import from_rpc_error

router = APIRouter(tags=["chat"])

ReplyT = TypeVar("ReplyT")
NEXT_CURSOR_HEADER = "X-Next-Cursor"
KEEPALIVE_SECONDS = 15.0
KEEPALIVE = b": keep-alive\n\n"
EVENT_STREAM = "text/event-stream"
# no-transform: without it the web client's Next.js proxy gzips the stream
# and delivers every event at the end (web-client.md §4.2).
STREAM_HEADERS = {
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",
}
# The service names fields as its messages do; the REST API does not.
_REST_FIELDS = {
    "page_size": "limit",
    "page_token": "cursor",
    "message_page_size": "limit",
    "message_page_token": "before",
    "query": "search",
}
ConversationLimit = Annotated[int, Query(ge=1, le=100)]
MessageLimit = Annotated[int, Query(ge=1, le=200)]


def _rest_field(field: str) -> str:
    return _REST_FIELDS.get(field) or ".".join(
        to_camel(part) for part in field.split(".")
    )


async def _named_as_in_rest(call: Awaitable[ReplyT]) -> ReplyT:
    """Name refused fields as the REST body does (`imageUrls.0`)."""
    try:
        return await call
    except InvalidArgument as error:
        violations = tuple(
            FieldViolation(_rest_field(v.field), v.message) for v in error.violations
        )
        raise InvalidArgument(error.message, violations=violations) from None


def _no_store(response: Response) -> None:
    response.headers["Cache-Control"] = "no-store"


# Rendering


def _conversation_fields(conversation: chat_pb2.Conversation) -> dict[str, Any]:
    return {
        "id": conversation.id,
        "user_id": conversation.user_id,
        "workspace_id": conversation.workspace_id or None,
        "shared_with_workspace": conversation.shared_with_workspace,
        "title": conversation.title,
        "model_id": conversation.model_id,
        "model_name": conversation.model_name,
        "system_prompt": conversation.system_prompt,
        "message_count": conversation.message_count,
        "total_input_tokens": conversation.total_input_tokens,
        "total_output_tokens": conversation.total_output_tokens,
        "total_credits": credits(conversation.total_credits_micros),
        "created_at": conversation.created_at.ToDatetime(tzinfo=UTC),
        "updated_at": conversation.updated_at.ToDatetime(tzinfo=UTC),
    }


def _conversation(conversation: chat_pb2.Conversation) -> ConversationOut:
    return ConversationOut(**_conversation_fields(conversation))


def _message(message: chat_pb2.Message) -> MessageOut:
    return MessageOut(
        id=message.id,
        conversation_id=message.conversation_id,
        role=message.role,
        content=message.content,
        image_urls=list(message.image_urls),
        input_tokens=message.input_tokens,
        output_tokens=message.output_tokens,
        credits=credits(message.credits_micros),
        status=message.status,
        web_search_used=message.web_search_used,
        created_at=message.created_at.ToDatetime(tzinfo=UTC),
    )


# Conversations


@router.get("/api/chat/conversations")
async def list_conversations(
    user: UserDep,
    upstream: UpstreamDep,
    response: Response,
    limit: ConversationLimit = 50,
    cursor: Annotated[str | None, Query(max_length=128)] = None,
    search: Annotated[str | None, Query(max_length=200)] = None,
    workspace_id: Annotated[
        str | None, Query(alias="workspaceId", max_length=64)
    ] = None,
) -> list[ConversationOut]:
    """The caller's conversations, most recently active first; `search` finds
    words in titles and messages. With `workspaceId`: the conversations in
    that workspace, the caller's and those shared that they may read."""
    reply = await _named_as_in_rest(
        upstream.call(
            upstream.chat.ListConversations,
            chat_pb2.ListConversationsRequest(
                page_size=limit,
                page_token=cursor or "",
                query=search or "",
                workspace_id=workspace_id or "",
            ),
            user.authorization,
        )
    )
    _no_store(response)
    if reply.next_page_token:
        response.headers[NEXT_CURSOR_HEADER] = reply.next_page_token
    return [_conversation(conversation) for conversation in reply.conversations]


@router.post("/api/chat/conversations", status_code=status.HTTP_201_CREATED)
async def create_conversation(
    body: CreateConversationBody, user: UserDep, upstream: UpstreamDep
) -> ConversationOut:
    reply = await _named_as_in_rest(
        upstream.call(
            upstream.chat.CreateConversation,
            chat_pb2.CreateConversationRequest(
                model_id=body.model_id or "",
                title=body.title or "",
                workspace_id=body.workspace_id or "",
                system_prompt=body.system_prompt or "",
            ),
            user.authorization,
        )
    )
    return _conversation(reply.conversation)


@router.get("/api/chat/conversations/{conversation_id}")
async def get_conversation(
    conversation_id: str,
    user: UserDep,
    upstream: UpstreamDep,
    response: Response,
    limit: MessageLimit = 100,
    before: Annotated[str | None, Query(max_length=32)] = None,
) -> ConversationDetailOut:
    """The conversation and its newest `limit` messages, oldest first;
    `messagesCursor` passed as `before` gives the ones before them."""
    reply = await _named_as_in_rest(
        upstream.call(
            upstream.chat.GetConversation,
            chat_pb2.GetConversationRequest(
                conversation_id=conversation_id,
                message_page_size=limit,
                message_page_token=before or "",
            ),
            user.authorization,
        )
    )
    _no_store(response)
    return ConversationDetailOut(
        **_conversation_fields(reply.conversation),
        messages=[_message(message) for message in reply.messages],
        messages_cursor=reply.next_message_page_token or None,
        is_owner=reply.is_owner,
    )


@router.patch("/api/chat/conversations/{conversation_id}")
async def update_conversation(
    conversation_id: str,
    body: UpdateConversationBody,
    user: UserDep,
    upstream: UpstreamDep,
) -> UpdatedConversationOut:
    """Rename it, change its model or its system prompt."""
    reply = await _named_as_in_rest(
        upstream.call(
            upstream.chat.UpdateConversation,
            chat_pb2.UpdateConversationRequest(
                conversation_id=conversation_id, **body.model_dump(exclude_none=True)
            ),
            user.authorization,
        )
    )
    return UpdatedConversationOut(**_conversation_fields(reply.conversation))


@router.delete("/api/chat/conversations/{conversation_id}")
async def delete_conversation(
    conversation_id: str, user: UserDep, upstream: UpstreamDep
) -> DeletedOut:
    """Deletes the conversation and its messages."""
    await upstream.call(
        upstream.chat.DeleteConversation,
        chat_pb2.DeleteConversationRequest(conversation_id=conversation_id),
        user.authorization,
    )
    return DeletedOut()


@router.patch("/api/chat/conversations/{conversation_id}/share")
@router.patch("/api/conversations/{conversation_id}/share", include_in_schema=False)
async def share_conversation(
    conversation_id: str,
    body: ShareConversationBody,
    user: UserDep,
    upstream: UpstreamDep,
) -> ConversationOut:
    """Share the conversation with its workspace (or `workspaceId`, one the
    caller belongs to), or stop sharing it. The earlier API's path
    /api/conversations/{id}/share is served too."""
    request = chat_pb2.ShareConversationRequest(
        conversation_id=conversation_id,
        shared_with_workspace=body.shared_with_workspace,
    )
    if body.workspace_id is not None:
        request.workspace_id = body.workspace_id
    reply = await _named_as_in_rest(
        upstream.call(upstream.chat.ShareConversation, request, user.authorization)
    )
    return _conversation(reply.conversation)


# Sending a message


class EventStream(StreamingResponse):
    """Server-Sent Events that stop as soon as the client leaves: the body is
    written by one task while another waits for the disconnect, and the
    events generator is closed either way, which cancels its gRPC call."""

    media_type = EVENT_STREAM

    def __init__(self, events: AsyncGenerator[bytes], status_code: int = 200) -> None:
        super().__init__(events, status_code=status_code, headers=STREAM_HEADERS)
        self._events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        writer = asyncio.create_task(self.stream_response(send))
        watcher = asyncio.create_task(self.listen_for_disconnect(receive))
        try:
            await asyncio.wait({writer, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
            writer.cancel()
            try:
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await writer
            finally:
                await self._events.aclose()


def _sse(event: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(event) + b"\n\n"


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and EVENT_STREAM not in accept


def _error_event(error: DomainError) -> dict[str, Any]:
    """The error body of the REST API, as an `error` event."""
    body: dict[str, Any] = orjson.loads(render_domain_error(error).body)
    return {"type": "error", **body}


def _failure(failed: chat_pb2.ReplyFailed) -> DomainError:
    error_class = domain_error_class(failed.code) or Internal
    retry = failed.retry_after_seconds or None
    return error_class(failed.message or None, retry_after=retry)


def _event(event: chat_pb2.SendMessageResponse) -> dict[str, Any]:
    kind = event.WhichOneof("event")
    if kind == "content":
        return {"type": "content", "content": event.content.text}
    if kind == "done":
        done = event.done
        return {
            "type": "done",
            "messageId": done.message_id,
            "inputTokens": done.input_tokens,
            "outputTokens": done.output_tokens,
            "credits": credits(done.credits_micros),
            "userCredits": credits(done.user_balance_micros),
            "finishReason": done.finish_reason,
            "title": done.title,
        }
    if kind == "error":
        return _error_event(_failure(event.error))
    started = event.started
    return {
        "type": "start",
        "messageId": started.assistant_message_id,
        "userMessageId": started.user_message_id,
        "heldCredits": credits(started.held_micros),
        "maxTokens": started.max_tokens,
    }


async def _pump(
    call: grpc.aio.UnaryStreamCall[Any, chat_pb2.SendMessageResponse],
    encoded: asyncio.Queue[bytes | None],
) -> None:
    """Read the chat service's stream into `encoded` as SSE events; None
    marks its end. A failure of the call itself becomes an error event."""
    try:
        while isinstance(event := await call.read(), chat_pb2.SendMessageResponse):
            encoded.put_nowait(_sse(_event(event)))
    except grpc.aio.AioRpcError as exc:
        encoded.put_nowait(_sse(_error_event(from_rpc_error(exc))))
    finally:
        encoded.put_nowait(None)


async def _events(
    call: grpc.aio.UnaryStreamCall[Any, chat_pb2.SendMessageResponse],
    first: chat_pb2.SendMessageResponse,
) -> AsyncGenerator[bytes]:
    """The SSE body. Events waiting together are written in one piece (each
    still whole), so a slow network costs fewer writes, not more."""
    encoded: asyncio.Queue[bytes | None] = asyncio.Queue()
    pump = asyncio.create_task(_pump(call, encoded))
    try:
        yield _sse(_event(first))
        while True:
            try:
                async with asyncio.timeout(KEEPALIVE_SECONDS):
                    item = await encoded.get()
            except TimeoutError:
                yield KEEPALIVE
                continue
            chunk = [item]
            while item is not None and not encoded.empty():
                item = encoded.get_nowait()
                chunk.append(item)
            body = b"".join(part for part in chunk if part is not None)
            if body:
                yield body
            if item is None:
                return
    finally:
        # Whatever ended the stream (the client leaving included), the chat
        # service must hear that nobody reads the reply any more.
        call.cancel()
        pump.cancel()


async def _whole_reply(
    call: grpc.aio.UnaryStreamCall[Any, chat_pb2.SendMessageResponse],
    first: chat_pb2.SendMessageResponse,
    body: SendMessageBody,
) -> MessageSentOut:
    pieces: list[str] = []
    while True:
        event = await call.read()
        if not isinstance(event, chat_pb2.SendMessageResponse):
            raise Internal()  # the stream ended without done or error
        kind = event.WhichOneof("event")
        if kind == "content":
            pieces.append(event.content.text)
        elif kind == "error":
            raise _failure(event.error)
        elif kind == "done":
            return _sent(first.started, event.done, "".join(pieces), body)


def _sent(
    started: chat_pb2.ReplyStarted,
    done: chat_pb2.ReplyDone,
    text: str,
    body: SendMessageBody,
) -> MessageSentOut:
    return MessageSentOut(
        user_message=SentUserMessageOut(
            id=started.user_message_id,
            content=body.content,
            image_urls=body.image_urls or [],
        ),
        assistant_message=SentAssistantMessageOut(
            id=done.message_id,
            content=text,
            input_tokens=done.input_tokens,
            output_tokens=done.output_tokens,
            credits=credits(done.credits_micros),
            finish_reason=done.finish_reason,
        ),
        credits=credits(done.credits_micros),
        user_credits=credits(done.user_balance_micros),
        title=done.title,
    )


def _open_reply(
    upstream: Upstream,
    settings: Settings,
    conversation_id: str,
    body: SendMessageBody,
    authorization: str,
) -> grpc.aio.UnaryStreamCall[Any, chat_pb2.SendMessageResponse]:
    # A reply takes longer than an ordinary call: it gets the longest
    # deadline a service accepts, and ends (cut off, charged for what was
    # written) shortly before it.
    return upstream.chat.SendMessage(
        chat_pb2.SendMessageRequest(
            conversation_id=conversation_id,
            content=body.content,
            image_urls=body.image_urls or [],
            web_search=bool(body.web_search),
        ),
        timeout=settings.rpc_max_timeout,
        metadata=upstream.runtime.upstreams.metadata(
            authorization=authorization, request_id=request_id_var.get()
        ),
    )


@router.post(
    "/api/chat/conversations/{conversation_id}/messages",
    status_code=status.HTTP_201_CREATED,
    response_model=MessageSentOut,
    responses={
        200: {
            "description": "The reply as Server-Sent Events (the default)",
            "content": {EVENT_STREAM: {}},
        },
        201: {"description": "With `Accept: application/json`: the whole reply"},
        # A refusal comes as one error event too, unless JSON was asked for.
        **{
            code: {"model": ErrorBody, "content": {EVENT_STREAM: {}}}
            for code in ERROR_STATUSES
        },
    },
)
async def send_message(
    conversation_id: str,
    body: SendMessageBody,
    user: UserDep,
    upstream: UpstreamDep,
    request: Request,
) -> Response:
    """Store the message and answer with the model's reply, streamed."""
    settings: Settings = request.app.state.settings
    call = _open_reply(upstream, settings, conversation_id, body, user.authorization)
    wants_json = _wants_json(request)
    try:
        first = await call.read()
        if not isinstance(first, chat_pb2.SendMessageResponse):
            raise Internal()
        if wants_json:
            sent = await _whole_reply(call, first, body)
            return Response(
                sent.model_dump_json(by_alias=True),
                status_code=status.HTTP_201_CREATED,
                media_type="application/json",
            )
    except grpc.aio.AioRpcError as exc:
        call.cancel()
        error = _named_fields(from_rpc_error(exc))
        if wants_json:
            raise error from None
        return _refusal_stream(error)
    except BaseException:
        call.cancel()
        raise
    return EventStream(_events(call, first))


def _named_fields(error: DomainError) -> DomainError:
    if isinstance(error, InvalidArgument) and error.violations:
        violations = tuple(
            FieldViolation(_rest_field(v.field), v.message) for v in error.violations
        )
        return InvalidArgument(error.message, violations=violations)
    return error


def _refusal_stream(error: DomainError) -> Response:
    response = render_domain_error(error)
    body = _sse(_error_event(error))
    headers = {**STREAM_HEADERS, **_retry_header(response)}
    return Response(
        body, status_code=response.status_code, media_type=EVENT_STREAM, headers=headers
    )


def _retry_header(response: Response) -> dict[str, str]:
    retry = response.headers.get("retry-after")
    return {"Retry-After": retry} if retry else {}


# Estimates and prompt enhancement


@router.post("/api/chat/estimate")
async def estimate(body: EstimateBody, upstream: UpstreamDep) -> ChatEstimateOut:
    """What a message is likely to cost: a typical reply (500 tokens), a
    short one and the longest. No sign-in needed."""
    reply = await _named_as_in_rest(
        upstream.call(
            upstream.chat.EstimateChat,
            chat_pb2.EstimateChatRequest(
                model_id=body.model_id,
                input_text=body.input_text,
                image_count=body.image_count or 0,
                context_tokens=body.context_tokens or 0,
            ),
        )
    )
    return ChatEstimateOut(
        model_id=reply.model_id,
        estimated_input_tokens=reply.input_tokens,
        text_tokens=reply.text_tokens,
        image_tokens=reply.image_tokens,
        context_tokens=reply.context_tokens,
        estimated_output_tokens=reply.typical_output_tokens,
        estimated_cost=credits(reply.typical_cost_micros),
        min_cost=credits(reply.min_cost_micros),
        max_cost=credits(reply.max_cost_micros),
        max_output_tokens=reply.max_output_tokens,
    )


@router.post("/api/enhance-prompt")
async def enhance_prompt(
    body: EnhancePromptBody, user: UserDep, upstream: UpstreamDep
) -> EnhancedPromptOut:
    """Rewrite an image prompt (or describe an image as one) with GPT-4o,
    charged to the caller's own credits."""
    reply = await _named_as_in_rest(
        upstream.call(
            upstream.chat.EnhancePrompt,
            chat_pb2.EnhancePromptRequest(
                prompt=body.prompt or "",
                image_urls=body.image_urls or [],
                variation_type=body.variation_type or "",
            ),
            user.authorization,
        )
    )
    return EnhancedPromptOut(
        enhanced_prompt=reply.enhanced_prompt,
        credits=credits(reply.credits_micros),
        input_tokens=reply.input_tokens,
        output_tokens=reply.output_tokens,
        remaining_credits=credits(reply.remaining_micros),
    )


@router.post("/api/enhance-prompt/estimate")
async def estimate_enhancement(
    body: EnhanceEstimateBody, user: UserDep, upstream: UpstreamDep
) -> EnhanceEstimateOut:
    reply = await _named_as_in_rest(
        upstream.call(
            upstream.chat.EstimateEnhancePrompt,
            chat_pb2.EstimateEnhancePromptRequest(
                prompt=body.prompt, image_count=body.image_count
            ),
            user.authorization,
        )
    )
    return EnhanceEstimateOut(
        estimated_cost=credits(reply.estimated_cost_micros),
        input_tokens=reply.input_tokens,
        output_tokens=reply.output_tokens,
    )
