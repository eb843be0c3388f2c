"""services/chat/service.py over real gRPC: conversations, who may read and
change them, their pages and search, sharing with a workspace, and
estimates."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable

import grpc
import pytest
from omnihub.catalog.v1 import catalog_pb2
from omnihub.chat.v1 import chat_pb2
from omnihub.workspace.v1 import workspace_pb2

from tests.fixtures.chat import LocalLLM
from tests.services.chat.factories import (
    MODEL,
    TEXT_ONLY_MODEL,
    ChatApi,
    failure,
    new_user,
    remaining_events,
)

# A catalog model no other test uses, disabled and enabled again here.
SPARE_MODEL = "mistralai/mistral-large-2411"


async def _chat_visibility(
    api: ChatApi, workspace_id: str, owner: str, to: str
) -> None:
    await api.workspace.UpdateWorkspace(
        workspace_pb2.UpdateWorkspaceRequest(
            workspace_id=workspace_id,
            privacy_settings=workspace_pb2.PrivacySettings(chat_visibility=to),
        ),
        metadata=api.user(owner),
    )


class TestCreate:
    async def test_defaults(self, api: ChatApi) -> None:
        user = new_user()

        reply = await api.stub.CreateConversation(
            chat_pb2.CreateConversationRequest(), metadata=api.user(user)
        )

        conversation = reply.conversation
        assert conversation.title == "New Chat"
        assert conversation.model_id == MODEL
        assert conversation.model_name == "GPT-4o Mini"
        assert conversation.user_id == user
        assert conversation.workspace_id == ""

    async def test_a_model_that_is_not_for_chat_is_refused(self, api: ChatApi) -> None:
        status, error = await failure(api.conversation(new_user(), "fal-flux-schnell"))

        assert status == grpc.StatusCode.INVALID_ARGUMENT
        assert error.violations[0].field == "model_id"

    async def test_a_disabled_model_is_refused(self, api: ChatApi) -> None:
        await _set_enabled(api, SPARE_MODEL, enabled=False)
        try:
            status, _ = await failure(api.conversation(new_user(), SPARE_MODEL))
        finally:
            await _set_enabled(api, SPARE_MODEL, enabled=True)

        assert status == grpc.StatusCode.INVALID_ARGUMENT

    async def test_a_workspace_needs_membership(self, api: ChatApi) -> None:
        outsider = new_user()
        workspace_id = await api.team(new_user())

        status, _ = await failure(api.conversation(outsider, workspace_id=workspace_id))

        assert status == grpc.StatusCode.NOT_FOUND

    @pytest.mark.parametrize(
        ("fields", "field"),
        [
            ({"title": "t" * 201}, "title"),
            ({"system_prompt": "s" * 8001}, "system_prompt"),
        ],
    )
    async def test_overlong_fields_are_refused(
        self, api: ChatApi, fields: dict[str, str], field: str
    ) -> None:
        status, error = await failure(api.conversation(new_user(), **fields))

        assert status == grpc.StatusCode.INVALID_ARGUMENT
        assert error.violations[0].field == field


class TestAccess:
    async def test_someone_elses_conversation_does_not_exist_for_them(
        self, api: ChatApi
    ) -> None:
        owner, other = new_user(), new_user()
        conversation = await api.conversation(owner)
        calls: list[Awaitable[object]] = [
            api.read(other, conversation.id),
            api.stub.UpdateConversation(
                chat_pb2.UpdateConversationRequest(
                    conversation_id=conversation.id, title="x"
                ),
                metadata=api.user(other),
            ),
            api.stub.DeleteConversation(
                chat_pb2.DeleteConversationRequest(conversation_id=conversation.id),
                metadata=api.user(other),
            ),
            api.stub.ShareConversation(
                chat_pb2.ShareConversationRequest(conversation_id=conversation.id),
                metadata=api.user(other),
            ),
            api.send(other, conversation.id, "hi"),
        ]

        for call in calls:
            status, error = await failure(call)
            assert status == grpc.StatusCode.NOT_FOUND
            assert error.message == "Conversation not found."

    async def test_an_id_that_is_not_a_uuid_is_simply_not_found(
        self, api: ChatApi
    ) -> None:
        status, _ = await failure(api.read(new_user(), "not-a-uuid"))

        assert status == grpc.StatusCode.NOT_FOUND

    async def test_private_chat_visibility_hides_shared_conversations(
        self, api: ChatApi
    ) -> None:
        owner, member = new_user(), new_user()
        workspace_id = await api.team(owner, member)
        conversation = await api.conversation(owner, workspace_id=workspace_id)
        await api.stub.ShareConversation(
            chat_pb2.ShareConversationRequest(
                conversation_id=conversation.id, shared_with_workspace=True
            ),
            metadata=api.user(owner),
        )

        await _chat_visibility(api, workspace_id, owner, "private")
        hidden, _ = await failure(api.read(member, conversation.id))
        await _chat_visibility(api, workspace_id, owner, "members")
        seen = await api.read(member, conversation.id)

        assert hidden == grpc.StatusCode.NOT_FOUND
        assert seen.is_owner is False
        status, _ = await failure(api.send(member, conversation.id, "hi"))
        assert status == grpc.StatusCode.PERMISSION_DENIED


class TestListing:
    async def test_pages_follow_each_other_without_gaps(self, api: ChatApi) -> None:
        user = new_user()
        created = [(await api.conversation(user)).id for _ in range(5)]
        seen: list[str] = []
        token = ""

        while True:
            page = await api.stub.ListConversations(
                chat_pb2.ListConversationsRequest(page_size=2, page_token=token),
                metadata=api.user(user),
            )
            seen += [c.id for c in page.conversations]
            token = page.next_page_token
            if not token:
                break

        assert seen == list(reversed(created))

    async def test_a_page_token_not_issued_here_is_refused(self, api: ChatApi) -> None:
        status, error = await failure(
            api.stub.ListConversations(
                chat_pb2.ListConversationsRequest(page_token="12.nope"),
                metadata=api.user(new_user()),
            )
        )

        assert status == grpc.StatusCode.INVALID_ARGUMENT
        assert error.violations[0].field == "page_token"

    async def test_a_reply_moves_its_conversation_to_the_top(
        self, api: ChatApi
    ) -> None:
        user = await api.funded_user()
        older = await api.conversation(user, title="Older")
        await api.conversation(user, title="Newer")

        await api.send(user, older.id, "bump [tokens=2]")

        page = await api.stub.ListConversations(
            chat_pb2.ListConversationsRequest(), metadata=api.user(user)
        )
        assert page.conversations[0].id == older.id

    async def test_search_treats_wildcards_as_text(self, api: ChatApi) -> None:
        user = new_user()
        await api.conversation(user, title="100% sure")
        await api.conversation(user, title="100 percent")

        page = await api.stub.ListConversations(
            chat_pb2.ListConversationsRequest(query="0%"), metadata=api.user(user)
        )

        assert [c.title for c in page.conversations] == ["100% sure"]

    async def test_a_workspace_listing_shows_own_and_shared_ones(
        self, api: ChatApi
    ) -> None:
        owner, member = new_user(), new_user()
        workspace_id = await api.team(owner, member)
        await _chat_visibility(api, workspace_id, owner, "members")
        shared = await api.conversation(owner, workspace_id=workspace_id)
        await api.conversation(owner, workspace_id=workspace_id)  # not shared
        own = await api.conversation(member, workspace_id=workspace_id)
        await api.conversation(member)  # outside the workspace
        await api.stub.ShareConversation(
            chat_pb2.ShareConversationRequest(
                conversation_id=shared.id, shared_with_workspace=True
            ),
            metadata=api.user(owner),
        )

        page = await api.stub.ListConversations(
            chat_pb2.ListConversationsRequest(workspace_id=workspace_id),
            metadata=api.user(member),
        )

        assert {c.id for c in page.conversations} == {shared.id, own.id}


class TestMessagesPage:
    async def test_pages_go_back_in_time_and_end(self, api: ChatApi) -> None:
        user = await api.funded_user()
        conversation = await api.conversation(user, title="Paged")
        for n in range(3):
            await api.send(user, conversation.id, f"turn {n} [tokens=2]")

        newest = await api.read(user, conversation.id, message_page_size=2)
        older = await api.read(
            user,
            conversation.id,
            message_page_size=10,
            message_page_token=newest.next_message_page_token,
        )

        assert [m.sequence for m in newest.messages] == [4, 5]
        assert [m.sequence for m in older.messages] == [0, 1, 2, 3]
        assert older.next_message_page_token == ""


class TestUpdate:
    async def test_title_model_and_system_prompt_change(self, api: ChatApi) -> None:
        user = new_user()
        conversation = await api.conversation(user)

        reply = await api.stub.UpdateConversation(
            chat_pb2.UpdateConversationRequest(
                conversation_id=conversation.id,
                title="  Two   words ",
                model_id=TEXT_ONLY_MODEL,
                system_prompt="Be terse.",
            ),
            metadata=api.user(user),
        )

        assert reply.conversation.title == "Two words"
        assert reply.conversation.model_id == TEXT_ONLY_MODEL
        assert reply.conversation.model_name == "DeepSeek V3"
        assert reply.conversation.system_prompt == "Be terse."

    async def test_an_empty_title_is_refused(self, api: ChatApi) -> None:
        user = new_user()
        conversation = await api.conversation(user)

        status, _ = await failure(
            api.stub.UpdateConversation(
                chat_pb2.UpdateConversationRequest(
                    conversation_id=conversation.id, title="  "
                ),
                metadata=api.user(user),
            )
        )

        assert status == grpc.StatusCode.INVALID_ARGUMENT


class TestDelete:
    async def test_delete_waits_for_a_reply_under_way(
        self, api: ChatApi, llm_simulator: LocalLLM
    ) -> None:
        user = await api.funded_user()
        conversation = await api.conversation(user, title="Busy")
        marker = llm_simulator.marker()
        await llm_simulator.fault("slow", marker, delay=0.05)
        call = api.stub.SendMessage(
            chat_pb2.SendMessageRequest(
                conversation_id=conversation.id, content=f"{marker} [tokens=100]"
            ),
            metadata=api.user(user),
        )
        await call.read()
        delete = api.stub.DeleteConversation(
            chat_pb2.DeleteConversationRequest(conversation_id=conversation.id),
            metadata=api.user(user),
        )

        status, _ = await failure(delete)
        events = await remaining_events(call)
        await api.stub.DeleteConversation(
            chat_pb2.DeleteConversationRequest(conversation_id=conversation.id),
            metadata=api.user(user),
        )

        assert status == grpc.StatusCode.FAILED_PRECONDITION
        assert events[-1].WhichOneof("event") == "done"
        gone, _ = await failure(api.read(user, conversation.id))
        assert gone == grpc.StatusCode.NOT_FOUND


class TestShare:
    async def test_sharing_needs_a_workspace(self, api: ChatApi) -> None:
        user = new_user()
        conversation = await api.conversation(user)

        status, error = await failure(
            api.stub.ShareConversation(
                chat_pb2.ShareConversationRequest(
                    conversation_id=conversation.id, shared_with_workspace=True
                ),
                metadata=api.user(user),
            )
        )

        assert status == grpc.StatusCode.INVALID_ARGUMENT
        assert error.violations[0].field == "workspace_id"

    async def test_taking_it_out_of_its_workspace_unshares_it(
        self, api: ChatApi
    ) -> None:
        user = new_user()
        workspace_id = await api.team(user)
        conversation = await api.conversation(user, workspace_id=workspace_id)

        reply = await api.stub.ShareConversation(
            chat_pb2.ShareConversationRequest(
                conversation_id=conversation.id,
                shared_with_workspace=False,
                workspace_id="",
            ),
            metadata=api.user(user),
        )

        assert reply.conversation.workspace_id == ""
        assert reply.conversation.shared_with_workspace is False


class TestEstimate:
    async def test_anyone_may_ask_and_it_is_priced_by_the_catalog(
        self, api: ChatApi
    ) -> None:
        reply = await api.stub.EstimateChat(
            chat_pb2.EstimateChatRequest(
                model_id=MODEL, input_text="Hello", context_tokens=100
            )
        )

        assert reply.text_tokens == 2
        assert reply.input_tokens == 102
        assert reply.max_output_tokens == 16_384
        assert reply.typical_cost_micros == await api.price(102, 500)
        assert reply.max_cost_micros == await api.price(102, 16_384)

    @pytest.mark.parametrize(
        ("fields", "field"),
        [
            ({"image_count": 5}, "image_count"),
            ({"image_count": -1}, "image_count"),
            ({"context_tokens": 10**9}, "context_tokens"),
        ],
    )
    async def test_impossible_counts_are_refused(
        self, api: ChatApi, fields: dict[str, int], field: str
    ) -> None:
        status, error = await failure(
            api.stub.EstimateChat(
                chat_pb2.EstimateChatRequest(model_id=MODEL, **fields)  # type: ignore[arg-type]
            )
        )

        assert status == grpc.StatusCode.INVALID_ARGUMENT
        assert error.violations[0].field == field


async def _set_enabled(api: ChatApi, model_id: str, *, enabled: bool) -> None:
    await api.catalog.UpdateModel(
        catalog_pb2.UpdateModelRequest(
            id=model_id,
            changes=catalog_pb2.ModelChanges(enabled=enabled),
            actor=f"tests-{uuid.uuid4().hex[:6]}",
        ),
        metadata=api.service,
    )
