"""gRPC servicer of the chat service: translates messages, opens the
transaction, calls the service, and raises domain errors unchanged (the
server interceptor maps them to statuses).

Users call for themselves (the gateway forwards their token). Estimates are
public: they read prices, nothing of anyone's.

SendMessage streams: every refusal fails the call before its first message
(`started`); after that, a failure of the provider is an `error` event and
the call ends normally. The gateway cancelling the call (its client went
away) stops the reply; the call's done callback is how that is noticed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
from omnihub.chat.v1 import chat_pb2, chat_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.grpc.deadline import remaining
from libs.grpc.identity import Access, current_caller
from libs.grpc.messages import refuse_unknown_fields, timestamp
from libs.grpc.server import ServiceDefinition
from services.chat.enhance import PromptEnhancer
from services.chat.models import Conversation, Message
from services.chat.replies import (
    Delta,
    Done,
    Failed,
    NewMessage,
    Replies,
    Reply,
    ReplyEvent,
)
from services.chat.service import (
    TYPICAL_REPLY_TOKENS,
    ConversationChanges,
    ConversationService,
    NewConversation,
)

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]

# Seconds before a call's deadline that its reply is ended, and the longest
# a reply may last when the call set no deadline.
DEADLINE_MARGIN_SECONDS = 2.0
MAX_REPLY_SECONDS = 3600.0

ACCESS = {
    "ListConversations": Access.USER,
    "CreateConversation": Access.USER,
    "GetConversation": Access.USER,
    "UpdateConversation": Access.USER,
    "DeleteConversation": Access.USER,
    "ShareConversation": Access.USER,
    "SendMessage": Access.USER,
    "EstimateChat": Access.PUBLIC,
    "EnhancePrompt": Access.USER,
    "EstimateEnhancePrompt": Access.PUBLIC,
    "DeleteUserData": Access.SERVICE,
}


class ChatServicer(chat_pb2_grpc.ChatServiceServicer):
    def __init__(
        self,
        conversations: ConversationService,
        replies: Replies,
        enhancer: PromptEnhancer,
        sessions: async_sessionmaker[AsyncSession],
        reads: async_sessionmaker[AsyncSession],
    ) -> None:
        self._conversations = conversations
        self._replies = replies
        self._enhancer = enhancer
        self._sessions = sessions
        # Autocommit sessions for reads that lock nothing.
        self._reads = reads

    # Conversations

    async def ListConversations(
        self, request: chat_pb2.ListConversationsRequest, context: Context
    ) -> chat_pb2.ListConversationsResponse:
        async with self._reads() as db:
            page = await self._conversations.list_conversations(
                db,
                current_caller().user_id,
                request.workspace_id,
                request.query,
                request.page_size,
                request.page_token,
            )
        return chat_pb2.ListConversationsResponse(
            conversations=[_conversation(row) for row in page.conversations],
            next_page_token=page.next_page_token,
        )

    async def CreateConversation(
        self, request: chat_pb2.CreateConversationRequest, context: Context
    ) -> chat_pb2.CreateConversationResponse:
        new = NewConversation(
            model_id=request.model_id,
            title=request.title,
            workspace_id=request.workspace_id,
            system_prompt=request.system_prompt,
        )
        async with self._sessions.begin() as db:
            row = await self._conversations.create_conversation(
                db, current_caller().user_id, new
            )
        return chat_pb2.CreateConversationResponse(conversation=_conversation(row))

    async def GetConversation(
        self, request: chat_pb2.GetConversationRequest, context: Context
    ) -> chat_pb2.GetConversationResponse:
        async with self._reads() as db:
            view = await self._conversations.read(
                db,
                current_caller().user_id,
                request.conversation_id,
                request.message_page_size,
                request.message_page_token,
            )
        return chat_pb2.GetConversationResponse(
            conversation=_conversation(view.conversation),
            messages=[_message(row) for row in view.messages],
            next_message_page_token=view.next_message_page_token,
            is_owner=view.is_owner,
        )

    async def UpdateConversation(
        self, request: chat_pb2.UpdateConversationRequest, context: Context
    ) -> chat_pb2.UpdateConversationResponse:
        refuse_unknown_fields(request)
        changes = ConversationChanges(
            title=request.title if request.HasField("title") else None,
            model_id=request.model_id if request.HasField("model_id") else None,
            system_prompt=(
                request.system_prompt if request.HasField("system_prompt") else None
            ),
        )
        async with self._sessions.begin() as db:
            row = await self._conversations.update(
                db, current_caller().user_id, request.conversation_id, changes
            )
        return chat_pb2.UpdateConversationResponse(conversation=_conversation(row))

    async def DeleteConversation(
        self, request: chat_pb2.DeleteConversationRequest, context: Context
    ) -> chat_pb2.DeleteConversationResponse:
        async with self._sessions.begin() as db:
            await self._conversations.delete(
                db, current_caller().user_id, request.conversation_id
            )
        return chat_pb2.DeleteConversationResponse()

    async def DeleteUserData(
        self, request: chat_pb2.DeleteUserDataRequest, context: Context
    ) -> chat_pb2.DeleteUserDataResponse:
        async with self._sessions.begin() as db:
            conversations, messages = await self._conversations.delete_user_data(
                db, request.user_id
            )
        return chat_pb2.DeleteUserDataResponse(
            deleted_conversations=conversations, deleted_messages=messages
        )

    async def ShareConversation(
        self, request: chat_pb2.ShareConversationRequest, context: Context
    ) -> chat_pb2.ShareConversationResponse:
        refuse_unknown_fields(request)
        async with self._sessions.begin() as db:
            row = await self._conversations.share(
                db,
                current_caller().user_id,
                request.conversation_id,
                request.shared_with_workspace,
                request.workspace_id if request.HasField("workspace_id") else None,
            )
        return chat_pb2.ShareConversationResponse(conversation=_conversation(row))

    # Messages

    async def SendMessage(
        self, request: chat_pb2.SendMessageRequest, context: Context
    ) -> AsyncIterator[chat_pb2.SendMessageResponse]:
        reply = await self._replies.start(
            NewMessage(
                user_id=current_caller().user_id,
                conversation_id=request.conversation_id,
                content=request.content,
                image_urls=tuple(request.image_urls),
                web_search=request.web_search,
            )
        )
        # The stubs type the callback as a class of their own; any callable
        # taking the context is what grpc calls.
        context.add_done_callback(lambda _: reply.stop())  # type: ignore[arg-type]
        if context.done():
            reply.stop()
        # End the reply (cut off, charged for what was written) just before
        # the call's deadline, so that the caller still gets its `done`.
        budget = remaining(MAX_REPLY_SECONDS)
        timer = asyncio.get_running_loop().call_later(
            max(budget - DEADLINE_MARGIN_SECONDS, budget / 2), reply.stop
        )
        try:
            yield _started(reply)
            async for event in reply.events():
                yield _event(event)
        finally:
            timer.cancel()

    # Estimates and prompt enhancement

    async def EstimateChat(
        self, request: chat_pb2.EstimateChatRequest, context: Context
    ) -> chat_pb2.EstimateChatResponse:
        estimate = await self._conversations.estimate(
            request.model_id,
            request.input_text,
            request.image_count,
            request.context_tokens,
        )
        return chat_pb2.EstimateChatResponse(
            model_id=estimate.model_id,
            input_tokens=estimate.input_tokens,
            text_tokens=estimate.text_tokens,
            image_tokens=estimate.image_tokens,
            context_tokens=estimate.context_tokens,
            typical_output_tokens=TYPICAL_REPLY_TOKENS,
            typical_cost_micros=estimate.typical_cost,
            min_cost_micros=estimate.min_cost,
            max_cost_micros=estimate.max_cost,
            max_output_tokens=estimate.max_output_tokens,
        )

    async def EnhancePrompt(
        self, request: chat_pb2.EnhancePromptRequest, context: Context
    ) -> chat_pb2.EnhancePromptResponse:
        enhanced = await self._enhancer.enhance(
            current_caller().user_id,
            request.prompt,
            list(request.image_urls),
            request.variation_type,
        )
        return chat_pb2.EnhancePromptResponse(
            enhanced_prompt=enhanced.prompt,
            credits_micros=enhanced.credits,
            input_tokens=enhanced.input_tokens,
            output_tokens=enhanced.output_tokens,
            remaining_micros=enhanced.remaining,
        )

    async def EstimateEnhancePrompt(
        self, request: chat_pb2.EstimateEnhancePromptRequest, context: Context
    ) -> chat_pb2.EstimateEnhancePromptResponse:
        estimate = await self._enhancer.estimate(request.prompt, request.image_count)
        return chat_pb2.EstimateEnhancePromptResponse(
            estimated_cost_micros=estimate.cost,
            input_tokens=estimate.input_tokens,
            output_tokens=estimate.output_tokens,
        )


def definition(servicer: ChatServicer) -> ServiceDefinition:
    return ServiceDefinition(
        full_name=chat_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name,
        servicer=servicer,
        register=chat_pb2_grpc.add_ChatServiceServicer_to_server,
        access=ACCESS,
    )


def _started(reply: Reply) -> chat_pb2.SendMessageResponse:
    plan = reply.plan
    return chat_pb2.SendMessageResponse(
        started=chat_pb2.ReplyStarted(
            user_message_id=str(plan.user_message_id),
            assistant_message_id=str(plan.reply_id),
            held_micros=plan.budget.held,
            max_tokens=plan.budget.max_tokens,
        )
    )


def _event(event: ReplyEvent) -> chat_pb2.SendMessageResponse:
    if isinstance(event, Delta):
        return chat_pb2.SendMessageResponse(
            content=chat_pb2.ContentDelta(text=event.text)
        )
    if isinstance(event, Done):
        return chat_pb2.SendMessageResponse(
            done=chat_pb2.ReplyDone(
                message_id=event.message_id,
                input_tokens=event.input_tokens,
                output_tokens=event.output_tokens,
                credits_micros=event.credits,
                user_balance_micros=event.user_balance,
                finish_reason=event.finish_reason,
                title=event.title,
            )
        )
    return _failed(event)


def _failed(event: Failed) -> chat_pb2.SendMessageResponse:
    error = event.error
    retry = round(error.retry_after) if error.retry_after is not None else 0
    return chat_pb2.SendMessageResponse(
        error=chat_pb2.ReplyFailed(
            code=error.code, message=error.message, retry_after_seconds=retry
        )
    )


def _conversation(row: Conversation) -> chat_pb2.Conversation:
    return chat_pb2.Conversation(
        id=str(row.id),
        user_id=str(row.user_id),
        workspace_id=str(row.workspace_id or ""),
        shared_with_workspace=row.shared_with_workspace,
        title=row.title,
        model_id=row.model_id,
        model_name=row.model_name,
        system_prompt=row.system_prompt,
        total_input_tokens=row.total_input_tokens,
        total_output_tokens=row.total_output_tokens,
        total_credits_micros=row.total_credits_micros,
        message_count=row.message_count,
        created_at=timestamp(row.created_at),
        updated_at=timestamp(row.updated_at),
    )


def _message(row: Message) -> chat_pb2.Message:
    return chat_pb2.Message(
        id=str(row.id),
        conversation_id=str(row.conversation_id),
        role=row.role,
        content=row.content,
        image_urls=list(row.image_urls),
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        credits_micros=row.credits_micros,
        status=row.status,
        web_search_used=row.web_search_used,
        sequence=row.sequence,
        created_at=timestamp(row.created_at),
    )
