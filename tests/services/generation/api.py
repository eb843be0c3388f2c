"""A generation client for the service tests, with the identities callers
really have, credits granted through billing, and checks of the ledger.

Users are fresh UUIDs with tokens signed by the suite's secret, the way auth
signs them; their credits are a billing grant.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import grpc
import httpx
from omnihub.auth.v1 import auth_pb2, auth_pb2_grpc
from omnihub.billing.v1 import billing_pb2, billing_pb2_grpc
from omnihub.generation.v1 import generation_pb2, generation_pb2_grpc
from sqlalchemy import text

from libs.config import Settings
from libs.db import create_engine, session_factory
from libs.grpc.identity import AUTHORIZATION_KEY, INTERNAL_TOKEN_KEY
from libs.tokens import Audience, InternalTokenSource, TokenSigner
from services.billing.models import SCHEMA as BILLING_SCHEMA
from services.billing.service import BillingService
from services.generation.models import SCHEMA

Metadata = tuple[tuple[str, str], ...]

CREDIT = 1_000_000
# An image model whose price is simple (base 0.04 credits, x1 options).
IMAGE_MODEL = "fal-flux-pro-v1.1"
VIDEO_MODEL = "fal-kling-v2.6-pro-t2v"
FINISHED = ("completed", "failed", "cancelled")


class GenerationApi:
    def __init__(self, settings: Settings, fal_url: str) -> None:
        self.settings = settings
        self.signer = TokenSigner(settings.signing_secret())
        self._internal = InternalTokenSource(self.signer, "tests", 300)
        self._channels = [
            grpc.aio.insecure_channel(settings.generation_address),
            grpc.aio.insecure_channel(settings.billing_address),
            grpc.aio.insecure_channel(settings.auth_address),
        ]
        self.auth = auth_pb2_grpc.AuthServiceStub(self._channels[2])
        self.stub = generation_pb2_grpc.GenerationServiceStub(self._channels[0])
        self.billing = billing_pb2_grpc.BillingServiceStub(self._channels[1])
        self.fal = httpx.AsyncClient(base_url=fal_url, timeout=10)
        self._engine = create_engine(settings, SCHEMA)
        self._billing_engine = create_engine(settings, BILLING_SCHEMA)

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()
        await self.fal.aclose()
        await self._engine.dispose()
        await self._billing_engine.dispose()

    @property
    def service(self) -> Metadata:
        return ((INTERNAL_TOKEN_KEY, self._internal.token()),)

    def user(self, user_id: str) -> Metadata:
        token = self.signer.issue(
            Audience.USER, user_id, 900, session_id=str(uuid.uuid4())
        )
        return (*self.service, (AUTHORIZATION_KEY, f"Bearer {token}"))

    async def new_user(self, credits: float = 10.0) -> str:
        """A user signed up through auth (so they have a personal workspace)
        whose balance is then set to exactly `credits`."""
        reply = await self.auth.Register(
            auth_pb2.RegisterRequest(
                email=f"gen-{uuid.uuid4().hex[:12]}@example.com",
                password="a-good-password",
                name="Generation Tester",
            ),
            metadata=self.service,
        )
        user_id = str(reply.user.id)
        balance = await self._signup_balance(user_id)
        await self.adjust(user_id, int(credits * CREDIT) - balance)
        return user_id

    async def _signup_balance(self, user_id: str) -> int:
        """The balance once sign-up credits (granted through auth's outbox)
        have arrived."""
        deadline = time.monotonic() + 5
        while (balance := await self.balance(user_id)) == 0:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        return balance

    async def adjust(self, user_id: str, delta: int) -> None:
        if delta == 0:
            return
        await self.billing.Adjust(
            billing_pb2.AdjustRequest(
                account=billing_pb2.AccountRef(
                    owner_type=billing_pb2.OWNER_TYPE_USER, owner_id=user_id
                ),
                delta_micros=delta,
                idempotency_key=f"test:{uuid.uuid4()}",
                reason="test",
                actor="tests",
            ),
            metadata=self.service,
        )

    async def grant(self, user_id: str, micros: int) -> None:
        await self.billing.Grant(
            billing_pb2.GrantRequest(
                account=billing_pb2.AccountRef(
                    owner_type=billing_pb2.OWNER_TYPE_USER, owner_id=user_id
                ),
                amount_micros=micros,
                idempotency_key=f"test:{uuid.uuid4()}",
                reason="test",
            ),
            metadata=self.service,
        )

    async def balance(self, user_id: str) -> int:
        reply = await self.billing.GetBalances(
            billing_pb2.GetBalancesRequest(
                accounts=[
                    billing_pb2.AccountRef(
                        owner_type=billing_pb2.OWNER_TYPE_USER, owner_id=user_id
                    )
                ]
            ),
            metadata=self.service,
        )
        return reply.balances[0].balance_micros

    async def create(
        self, user_id: str, prompt: str, model: str = IMAGE_MODEL, **fields: Any
    ) -> generation_pb2.CreateGenerationsResponse:
        fields.setdefault("type", "video" if "kling" in model else "image")
        return await self.stub.CreateGenerations(
            generation_pb2.CreateGenerationsRequest(
                model_ids=[model], prompt=prompt, **fields
            ),
            metadata=self.user(user_id),
        )

    async def get(self, user_id: str, generation_id: str) -> generation_pb2.Generation:
        reply = await self.stub.GetGeneration(
            generation_pb2.GetGenerationRequest(id=generation_id),
            metadata=self.user(user_id),
        )
        return reply.generation

    async def wait(
        self,
        user_id: str,
        generation_id: str,
        statuses: tuple[str, ...] = FINISHED,
        within: float = 15.0,
    ) -> generation_pb2.Generation:
        deadline = time.monotonic() + within
        while True:
            generation = await self.get(user_id, generation_id)
            if generation.status in statuses:
                return generation
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"generation stayed {generation.status}, wanted {statuses}"
                )
            await asyncio.sleep(0.05)

    async def wait_settled(self, generation_id: str, within: float = 15.0) -> None:
        deadline = time.monotonic() + within
        while True:
            async with session_factory(self._engine)() as db:
                settled = await db.scalar(
                    text(
                        "SELECT settlement IS NOT NULL AND settled_at IS NOT NULL"
                        " FROM generations WHERE id = :id"
                    ),
                    {"id": generation_id},
                )
            if settled:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"generation {generation_id} never settled")
            await asyncio.sleep(0.05)

    async def fault(self, mode: str, prompt_contains: str, **extra: Any) -> None:
        reply = await self.fal.post(
            "/simulator/faults",
            json={"mode": mode, "prompt_contains": prompt_contains, **extra},
        )
        reply.raise_for_status()

    async def submissions(self, prompt: str) -> list[dict[str, Any]]:
        reply = await self.fal.get("/simulator/requests")
        reply.raise_for_status()
        body = reply.json()
        items = body["items"]
        return [item for item in items if prompt in str(item.get("prompt", ""))]

    async def unbalanced_accounts(self) -> list[Any]:
        async with session_factory(self._billing_engine)() as db:
            return list(await BillingService().unbalanced_accounts(db))

    async def sql(self, statement: str, **params: Any) -> None:
        async with session_factory(self._engine).begin() as db:
            await db.execute(text(statement), params)


def unique_prompt(words: str = "a lighthouse at dusk") -> str:
    return f"{words} #{uuid.uuid4().hex[:10]}"
