"""A chat client for the service tests, with the identities callers really
have: users are fresh UUIDs with tokens signed by the suite's secret (the
chat service needs no account in auth), funded by billing grants."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import grpc
from omnihub.billing.v1 import billing_pb2, billing_pb2_grpc
from omnihub.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from omnihub.chat.v1 import chat_pb2, chat_pb2_grpc
from omnihub.workspace.v1 import workspace_pb2, workspace_pb2_grpc

from libs.config import Settings
from libs.errors import DomainError
from libs.grpc.identity import AUTHORIZATION_KEY, INTERNAL_TOKEN_KEY
from libs.grpc.status import from_rpc_error
from libs.tokens import Audience, InternalTokenSource, TokenSigner

Metadata = tuple[tuple[str, str], ...]

CREDIT = 1_000_000
MODEL = "openai/gpt-4o-mini"
# Catalog models with and without vision and web search.
TEXT_ONLY_MODEL = "deepseek/deepseek-chat"
FREE_MODEL = "google/gemini-2.0-flash-exp:free"


def new_user() -> str:
    return str(uuid.uuid4())


def user_account(user_id: str) -> billing_pb2.AccountRef:
    return billing_pb2.AccountRef(
        owner_type=billing_pb2.OWNER_TYPE_USER, owner_id=user_id
    )


def pool_account(workspace_id: str) -> billing_pb2.AccountRef:
    return billing_pb2.AccountRef(
        owner_type=billing_pb2.OWNER_TYPE_WORKSPACE, owner_id=workspace_id
    )


@dataclass
class Sent:
    """The events of one SendMessage call, sorted by kind."""

    events: list[chat_pb2.SendMessageResponse] = field(default_factory=list)

    @property
    def started(self) -> chat_pb2.ReplyStarted:
        assert self.events[0].WhichOneof("event") == "started", self.events[0]
        return self.events[0].started

    @property
    def pieces(self) -> list[str]:
        return [e.content.text for e in self.events if e.HasField("content")]

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def done(self) -> chat_pb2.ReplyDone:
        last = self.events[-1]
        assert last.WhichOneof("event") == "done", last
        return last.done

    @property
    def error(self) -> chat_pb2.ReplyFailed:
        last = self.events[-1]
        assert last.WhichOneof("event") == "error", last
        return last.error


class ChatApi:
    """The chat stub, plus billing and workspace stubs to set up and check."""

    def __init__(self, settings: Settings) -> None:
        self.signer = TokenSigner(settings.signing_secret())
        self._internal = InternalTokenSource(self.signer, "tests", 300)
        self._channels = [
            grpc.aio.insecure_channel(settings.chat_address),
            grpc.aio.insecure_channel(settings.billing_address),
            grpc.aio.insecure_channel(settings.workspace_address),
            grpc.aio.insecure_channel(settings.catalog_address),
        ]
        self.stub = chat_pb2_grpc.ChatServiceStub(self._channels[0])
        self.billing = billing_pb2_grpc.BillingServiceStub(self._channels[1])
        self.workspace = workspace_pb2_grpc.WorkspaceServiceStub(self._channels[2])
        self.catalog = catalog_pb2_grpc.CatalogServiceStub(self._channels[3])

    @property
    def service(self) -> Metadata:
        return ((INTERNAL_TOKEN_KEY, self._internal.token()),)

    def user(self, user_id: str) -> Metadata:
        """A signed-in user calling through the gateway."""
        token = self.signer.issue(
            Audience.USER, user_id, 900, session_id=str(uuid.uuid4())
        )
        return (*self.service, (AUTHORIZATION_KEY, f"Bearer {token}"))

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    # Money

    async def fund(self, user_id: str, micros: int) -> None:
        await self.billing.Grant(
            billing_pb2.GrantRequest(
                account=user_account(user_id),
                amount_micros=micros,
                idempotency_key=f"test:{uuid.uuid4()}",
                reason="Test funds",
            ),
            metadata=self.service,
        )

    async def funded_user(self, credits: int = 10) -> str:
        user = new_user()
        await self.fund(user, credits * CREDIT)
        return user

    async def balance(self, account: billing_pb2.AccountRef) -> tuple[int, int]:
        """Balance and the amount held, in micro-credits."""
        reply = await self.billing.GetBalance(
            billing_pb2.GetBalanceRequest(account=account), metadata=self.service
        )
        return reply.balance_micros, reply.held_micros

    async def leave_only(self, user_id: str, micros: int) -> None:
        """Take a user's credits away down to `micros`, as an operator would."""
        balance = await self.own_balance(user_id)
        await self.billing.Adjust(
            billing_pb2.AdjustRequest(
                account=user_account(user_id),
                delta_micros=micros - balance,
                idempotency_key=f"test:{uuid.uuid4()}",
                reason="Test: spend down",
                actor="tests",
            ),
            metadata=self.service,
        )

    async def own_balance(self, user_id: str) -> int:
        return (await self.balance(user_account(user_id)))[0]

    async def ledger(self, user_id: str) -> list[billing_pb2.LedgerEntry]:
        reply = await self.billing.ListTransactions(
            billing_pb2.ListTransactionsRequest(
                account=user_account(user_id), page_size=100
            ),
            metadata=self.service,
        )
        return list(reply.entries)

    async def price(
        self,
        input_tokens: int,
        output_tokens: int,
        provider_cost_micros: int = 0,
        model_id: str = MODEL,
    ) -> int:
        """What the catalog charges for a reply (QuoteChat, the one rule)."""
        reply = await self.catalog.QuoteChat(
            catalog_pb2.QuoteChatRequest(
                model_id=model_id,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                provider_cost_micros=provider_cost_micros,
            )
        )
        return int(reply.price_micros)

    # Conversations

    async def conversation(
        self, user_id: str, model_id: str = MODEL, **fields: str
    ) -> chat_pb2.Conversation:
        reply = await self.stub.CreateConversation(
            chat_pb2.CreateConversationRequest(model_id=model_id, **fields),
            metadata=self.user(user_id),
        )
        return reply.conversation

    async def read(
        self, user_id: str, conversation_id: str, **fields: object
    ) -> chat_pb2.GetConversationResponse:
        return await self.stub.GetConversation(
            chat_pb2.GetConversationRequest(
                conversation_id=conversation_id,
                **fields,  # type: ignore[arg-type]
            ),
            metadata=self.user(user_id),
        )

    async def send(
        self, user_id: str, conversation_id: str, content: str, **fields: object
    ) -> Sent:
        call = self.stub.SendMessage(
            chat_pb2.SendMessageRequest(
                conversation_id=conversation_id,
                content=content,
                **fields,  # type: ignore[arg-type]
            ),
            metadata=self.user(user_id),
        )
        sent = Sent()
        async for event in call:
            sent.events.append(event)
        return sent

    # Workspaces

    async def team(self, owner: str, *members: str) -> str:
        """A team workspace of `owner` with `members` joined."""
        created = await self.workspace.CreateWorkspace(
            workspace_pb2.CreateWorkspaceRequest(name="Chat team"),
            metadata=self.user(owner),
        )
        workspace_id = str(created.workspace.id)
        for member in members:
            invite = await self.workspace.CreateInvite(
                workspace_pb2.CreateInviteRequest(workspace_id=workspace_id),
                metadata=self.user(owner),
            )
            await self.workspace.AcceptInvite(
                workspace_pb2.AcceptInviteRequest(token=invite.token),
                metadata=self.user(member),
            )
        return workspace_id


async def remaining_events(
    call: grpc.aio.UnaryStreamCall[Any, chat_pb2.SendMessageResponse],
) -> list[chat_pb2.SendMessageResponse]:
    """The rest of a stream whose first events were taken with read()."""
    events = []
    while isinstance(event := await call.read(), chat_pb2.SendMessageResponse):
        events.append(event)
    return events


async def failure(call: Awaitable[object]) -> tuple[grpc.StatusCode, DomainError]:
    """The status and domain error of a call that must fail."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code(), from_rpc_error(error)
    raise AssertionError("the call succeeded")
