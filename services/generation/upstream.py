"""The services a generation depends on: catalog (models and prices),
workspace (who pays, membership) and billing (holds).

Every billing call carries a key made from the generation id, so a retry after
a timeout, a second worker or a webhook racing a poll moves credits once.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TypeVar

from omnihub.billing.v1 import billing_pb2, billing_pb2_grpc
from omnihub.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from omnihub.workspace.v1 import workspace_pb2, workspace_pb2_grpc

from libs.error_reports import ErrorReports
from libs.errors import InsufficientCredits
from libs.grpc.client import Upstreams

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")

PERSONAL_WORKSPACE_CACHE = 10_000


def account(owner_type: int, owner_id: str) -> billing_pb2.AccountRef:
    return billing_pb2.AccountRef(
        owner_type=billing_pb2.OwnerType.ValueType(owner_type), owner_id=owner_id
    )


@dataclass(frozen=True)
class ChosenPayer:
    owner_type: int
    owner_id: str
    source: str
    balance: int
    tags: dict[str, str]

    @property
    def account(self) -> billing_pb2.AccountRef:
        return account(self.owner_type, self.owner_id)


class Platform:
    """Calls to the other OmniHub services, as this service."""

    def __init__(self, upstreams: Upstreams) -> None:
        self._upstreams = upstreams
        self.catalog = catalog_pb2_grpc.CatalogServiceStub(upstreams.channel("catalog"))
        self.workspace = workspace_pb2_grpc.WorkspaceServiceStub(
            upstreams.channel("workspace")
        )
        self.billing = billing_pb2_grpc.BillingServiceStub(upstreams.channel("billing"))
        # Provider failures for the operators' error log (admin service).
        self.errors = ErrorReports(upstreams)
        self._personal: OrderedDict[str, str] = OrderedDict()

    async def model(self, model_id: str) -> catalog_pb2.Model:
        reply = await self._upstreams.call(
            self.catalog.GetModel, catalog_pb2.GetModelRequest(id=model_id)
        )
        return reply.model

    async def quote(
        self, model_id: str, options: dict[str, str], count: int
    ) -> catalog_pb2.QuotePriceResponse:
        return await self._upstreams.call(
            self.catalog.QuotePrice,
            catalog_pb2.QuotePriceRequest(
                model_id=model_id, options=options, count=count
            ),
        )

    async def upscalers(self) -> list[catalog_pb2.Model]:
        reply = await self._upstreams.call(
            self.catalog.ListModels, catalog_pb2.ListModelsRequest(category="upscale")
        )
        return list(reply.models)

    async def personal_workspace(self, user_id: str) -> str:
        """The user's personal workspace id, which never changes."""
        if (found := self._personal.get(user_id)) is not None:
            return found
        reply = await self._upstreams.call(
            self.workspace.EnsurePersonalWorkspace,
            workspace_pb2.EnsurePersonalWorkspaceRequest(user_id=user_id),
        )
        self._personal[user_id] = reply.workspace_id
        if len(self._personal) > PERSONAL_WORKSPACE_CACHE:
            self._personal.popitem(last=False)
        return reply.workspace_id

    async def payer(self, workspace_id: str, user_id: str, amount: int) -> ChosenPayer:
        """The account that pays `amount` of the user's work in the workspace;
        InsufficientCredits when none holds it."""
        reply = await self._upstreams.call(
            self.workspace.ResolvePayer,
            workspace_pb2.ResolvePayerRequest(
                workspace_id=workspace_id, user_id=user_id, amount_micros=amount
            ),
        )
        if not reply.covered:
            best = max((p.balance_micros for p in reply.payers), default=0)
            raise InsufficientCredits.amounts(amount, best)
        chosen = reply.payers[reply.covering_index]
        source = chosen.source
        if source == "personal" and reply.covering_index > 0:
            source = "personal_fallback"
        return ChosenPayer(
            chosen.account.owner_type,
            chosen.account.owner_id,
            source,
            chosen.balance_micros,
            dict(reply.tags),
        )

    async def is_member(self, workspace_id: str, user_id: str) -> bool:
        """Whether the user belongs to the workspace (ResolvePayer refuses
        anyone else)."""
        await self._upstreams.call(
            self.workspace.ResolvePayer,
            workspace_pb2.ResolvePayerRequest(
                workspace_id=workspace_id, user_id=user_id, amount_micros=0
            ),
        )
        return True

    async def can_see(
        self, workspace_id: str, viewer_id: str, author_id: str, content_type: str
    ) -> bool:
        reply = await self._upstreams.call(
            self.workspace.CheckVisibility,
            workspace_pb2.CheckVisibilityRequest(
                workspace_id=workspace_id,
                viewer_id=viewer_id,
                author_id=author_id,
                content_type=content_type,
            ),
        )
        return reply.visible

    async def hold(
        self,
        generation_id: str,
        payer: ChosenPayer,
        amount: int,
        usage_type: str,
    ) -> billing_pb2.HoldResponse:
        return await self._upstreams.call(
            self.billing.Hold,
            billing_pb2.HoldRequest(
                account=payer.account,
                amount_micros=amount,
                idempotency_key=f"generation:{generation_id}:hold",
                reason="generation",
                reference=generation_id,
                tags={**payer.tags, "usage_type": usage_type},
            ),
        )

    async def capture(self, generation_id: str, hold_id: str, amount: int) -> int:
        reply = await self._upstreams.call(
            self.billing.Capture,
            billing_pb2.CaptureRequest(
                hold_id=hold_id,
                amount_micros=amount,
                idempotency_key=f"generation:{generation_id}:capture",
            ),
        )
        return reply.captured_micros

    async def release(self, generation_id: str, hold_id: str) -> int:
        reply = await self._upstreams.call(
            self.billing.Release,
            billing_pb2.ReleaseRequest(
                hold_id=hold_id, idempotency_key=f"generation:{generation_id}:release"
            ),
        )
        return reply.released_micros

    async def balance(self, owner_type: int, owner_id: str) -> int:
        reply = await self._upstreams.call(
            self.billing.GetBalances,
            billing_pb2.GetBalancesRequest(accounts=[account(owner_type, owner_id)]),
        )
        return reply.balances[0].balance_micros if reply.balances else 0
