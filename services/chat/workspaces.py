"""What the workspace service decides for chat: which account pays for a
reply (ResolvePayer) and who may read a conversation shared with a workspace
(CheckVisibility, the workspace's `chatVisibility`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from omnihub.billing.v1 import billing_pb2
from omnihub.workspace.v1 import workspace_pb2, workspace_pb2_grpc

from libs.errors import NotFound
from libs.grpc.client import Upstreams

CHAT_CONTENT = "chat"
RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")


@dataclass(frozen=True)
class Payer:
    account: billing_pb2.AccountRef
    # "workspace" (its pool), "allocated" or "personal".
    source: str
    balance: int


@dataclass(frozen=True)
class PayerChoice:
    """The accounts that may pay, in the workspace's order."""

    payers: list[Payer]
    # The first that holds the amount asked about; None if none does.
    covering: Payer | None
    # For the hold, so that the workspace's usage report finds the charge.
    tags: dict[str, str]

    @property
    def richest(self) -> Payer:
        """The payer with the most credits (the first of equals)."""
        return max(self.payers, key=lambda payer: payer.balance)

    @property
    def personal_balance(self) -> int | None:
        return next(
            (p.balance for p in self.payers if p.source == "personal"),
            None,
        )


class Workspaces:
    def __init__(
        self, stub: workspace_pb2_grpc.WorkspaceServiceAsyncStub, upstreams: Upstreams
    ) -> None:
        self._stub = stub
        self._upstreams = upstreams

    async def payers(self, workspace_id: str, user_id: str, amount: int) -> PayerChoice:
        """Who pays `amount` for `user_id`'s reply; NOT_FOUND when the user is
        not a member of the workspace."""
        reply = await self._upstreams.call(
            self._stub.ResolvePayer,
            workspace_pb2.ResolvePayerRequest(
                workspace_id=workspace_id, user_id=user_id, amount_micros=amount
            ),
        )
        payers = [
            Payer(payer.account, payer.source, payer.balance_micros)
            for payer in reply.payers
        ]
        return PayerChoice(
            payers=payers,
            covering=payers[reply.covering_index] if reply.covered else None,
            tags={**reply.tags, "usage_type": CHAT_CONTENT},
        )

    async def check_member(self, workspace_id: str, user_id: str) -> None:
        """NOT_FOUND unless `user_id` belongs to the workspace."""
        await self.payers(workspace_id, user_id, 0)

    async def may_read(self, workspace_id: str, viewer_id: str, author_id: str) -> bool:
        """Whether the workspace lets `viewer_id` read `author_id`'s shared
        conversations (False for a workspace that no longer exists)."""
        try:
            reply = await self._upstreams.call(
                self._stub.CheckVisibility,
                workspace_pb2.CheckVisibilityRequest(
                    workspace_id=workspace_id,
                    viewer_id=viewer_id,
                    author_id=author_id,
                    content_type=CHAT_CONTENT,
                ),
            )
        except NotFound:
            return False
        return bool(reply.visible)
