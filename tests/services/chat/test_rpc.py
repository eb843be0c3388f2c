"""services/chat/rpc.py over real gRPC: who may call which method, and
requests this build cannot read in full."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.message import Message
from omnihub.chat.v1 import chat_pb2

from libs.grpc.identity import AUTHORIZATION_KEY
from services.chat.rpc import ACCESS
from tests.services.chat.factories import MODEL, ChatApi, failure, new_user

USER_REQUESTS: dict[str, Message] = {
    "ListConversations": chat_pb2.ListConversationsRequest(),
    "CreateConversation": chat_pb2.CreateConversationRequest(),
    "GetConversation": chat_pb2.GetConversationRequest(conversation_id="x"),
    "UpdateConversation": chat_pb2.UpdateConversationRequest(conversation_id="x"),
    "DeleteConversation": chat_pb2.DeleteConversationRequest(conversation_id="x"),
    "ShareConversation": chat_pb2.ShareConversationRequest(conversation_id="x"),
    "EnhancePrompt": chat_pb2.EnhancePromptRequest(prompt="x"),
}


def test_every_method_has_an_access_rule() -> None:
    methods = chat_pb2.DESCRIPTOR.services_by_name["ChatService"].methods_by_name
    assert set(ACCESS) == set(methods)


@pytest.mark.parametrize("method", sorted(USER_REQUESTS))
async def test_user_methods_refuse_an_anonymous_caller(
    api: ChatApi, method: str
) -> None:
    status, _ = await failure(getattr(api.stub, method)(USER_REQUESTS[method]))

    assert status == grpc.StatusCode.UNAUTHENTICATED


async def test_sending_refuses_a_service_acting_for_nobody(api: ChatApi) -> None:
    call = api.stub.SendMessage(
        chat_pb2.SendMessageRequest(conversation_id="x", content="hi"),
        metadata=api.service,
    )

    status, _ = await failure(call.read())

    assert status == grpc.StatusCode.UNAUTHENTICATED


async def test_a_user_token_without_the_internal_one_is_enough(api: ChatApi) -> None:
    # The gateway adds its internal token, but the user's own is what counts.
    user_only = tuple(
        pair for pair in api.user(new_user()) if pair[0] == AUTHORIZATION_KEY
    )

    reply = await api.stub.ListConversations(
        chat_pb2.ListConversationsRequest(), metadata=user_only
    )

    assert list(reply.conversations) == []


async def test_estimates_are_public(api: ChatApi) -> None:
    chat = await api.stub.EstimateChat(chat_pb2.EstimateChatRequest(model_id=MODEL))
    enhance = await api.stub.EstimateEnhancePrompt(
        chat_pb2.EstimateEnhancePromptRequest(prompt="a cat")
    )

    assert chat.max_cost_micros > 0
    assert enhance.estimated_cost_micros > 0


async def test_update_with_a_field_this_build_does_not_know_is_refused(
    api: ChatApi,
) -> None:
    user = new_user()
    conversation = await api.conversation(user)
    request = chat_pb2.UpdateConversationRequest(conversation_id=conversation.id)
    # Field 99 stands for one a newer contract added.
    raw = request.SerializeToString() + b"\x98\x06\x01"

    status, error = await failure(
        api.stub.UpdateConversation(
            chat_pb2.UpdateConversationRequest.FromString(raw),
            metadata=api.user(user),
        )
    )

    assert status == grpc.StatusCode.INVALID_ARGUMENT
    assert error.violations[0].field == "99"
