"""Generations written straight into the generation schema, for tests of
what happens to them afterwards (publishing, sharing, profile figures),
and a CommunityService client with the identities callers really have.

A row made here looks like one the worker finished: a job, and a
generation with its result and thumbnail URLs. The behaviour under test
still goes through gRPC or HTTP; only the set-up skips the provider.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import grpc
from omnihub.auth.v1 import auth_pb2, auth_pb2_grpc
from omnihub.generation.v1 import community_pb2, community_pb2_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.config import Settings
from libs.db import create_engine
from libs.errors import DomainError
from libs.grpc.identity import AUTHORIZATION_KEY, INTERNAL_TOKEN_KEY
from libs.grpc.status import from_rpc_error
from libs.tokens import Audience, InternalTokenSource, TokenSigner
from services.generation.models import SCHEMA

Metadata = tuple[tuple[str, str], ...]

MEDIA = "https://media.example.com"


def new_user() -> str:
    return str(uuid.uuid4())


def marker() -> str:
    """A word no other test's prompt contains, to search the feed for."""
    return f"mk{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class GenerationRow:
    """What a test may choose about a generation; the rest is filled in."""

    user_id: str
    prompt: str = "a lighthouse at dusk"
    type: str = "image"
    status: str = "completed"
    model_id: str = "fal-flux-pro-v1.1"
    model_name: str = "FLUX1.1 [pro]"
    source_generation_id: str | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def finished(self) -> bool:
        return self.status == "completed"

    @property
    def result_url(self) -> str | None:
        extension = "mp4" if self.type == "video" else "png"
        return f"{MEDIA}/{self.id}.{extension}" if self.finished else None

    @property
    def thumbnail_url(self) -> str | None:
        return f"{MEDIA}/{self.id}-thumb.jpg" if self.finished else None


class GenerationRows:
    """SQL on the generation schema for setting up and inspecting state."""

    def __init__(self, settings: Settings) -> None:
        self.engine: AsyncEngine = create_engine(settings, SCHEMA)

    async def close(self) -> None:
        await self.engine.dispose()

    async def add(self, row: GenerationRow) -> str:
        """A job and its generation, as the worker leaves them."""
        job_id = str(uuid.uuid4())
        async with self.engine.begin() as db:
            await db.execute(
                text(
                    "INSERT INTO jobs (id, user_id, kind, model_id, endpoint,"
                    " payload, state, deadline_at, finished_at)"
                    " VALUES (:id, :user_id, :kind, :model_id, :endpoint,"
                    " '{}'::jsonb, :state, now() + interval '10 minutes',"
                    " CASE WHEN :finished THEN now() END)"
                ),
                {
                    "id": job_id,
                    "user_id": row.user_id,
                    "kind": "upscale" if row.type == "upscale" else "generate",
                    "model_id": row.model_id,
                    "endpoint": f"fal-ai/{row.model_id}",
                    "state": "finished" if row.finished else "submitted",
                    "finished": row.finished,
                },
            )
            await db.execute(
                text(
                    "INSERT INTO generations (id, job_id, user_id, workspace_id,"
                    " type, model_id, model_name, prompt, options, credits_micros,"
                    " payer_type, payer_id, credit_source, max_wait_seconds,"
                    " status, result_url, thumbnail_url, source_generation_id,"
                    " completed_at)"
                    " VALUES (:id, :job_id, :user_id, :workspace_id, :type,"
                    " :model_id, :model_name, :prompt, '{}'::jsonb, 40000, 1,"
                    " :user_id, 'personal', 300, :status, :result_url,"
                    " :thumbnail_url, :source_generation_id,"
                    " CASE WHEN :finished THEN now() END)"
                ),
                {
                    "id": row.id,
                    "job_id": job_id,
                    "user_id": row.user_id,
                    "workspace_id": str(uuid.uuid4()),
                    "type": row.type,
                    "model_id": row.model_id,
                    "model_name": row.model_name,
                    "prompt": row.prompt,
                    "status": row.status,
                    "result_url": row.result_url,
                    "thumbnail_url": row.thumbnail_url,
                    "source_generation_id": row.source_generation_id,
                    "finished": row.finished,
                },
            )
        return row.id

    async def completed(self, user_id: str, prompt: str = "a lighthouse") -> str:
        return await self.add(GenerationRow(user_id, prompt=prompt))

    async def soft_delete(self, generation_id: str) -> None:
        """What deleting a generation does first: mark it deleted."""
        await self.execute(
            "UPDATE generations SET deleted_at = now() WHERE id = :id",
            id=generation_id,
        )

    async def remove(self, generation_id: str) -> None:
        await self.execute("DELETE FROM generations WHERE id = :id", id=generation_id)

    async def publish_time(self, post_id: str, age: timedelta) -> None:
        """Move a post's publishing time `age` into the past."""
        await self.execute(
            "UPDATE community_posts SET published_at = now() - CAST(:age AS interval)"
            " WHERE id = :id",
            id=post_id,
            age=age,
        )

    async def share_expiry(self, token: str, expires_at: datetime) -> None:
        await self.execute(
            "UPDATE shares SET expires_at = :at WHERE token = :token",
            token=token,
            at=expires_at,
        )

    async def like_rows(self, post_id: str) -> int:
        rows = await self.fetch(
            "SELECT count(*) FROM community_likes WHERE post_id = :id", id=post_id
        )
        return int(rows[0][0])

    async def post_rows(self, generation_id: str) -> int:
        rows = await self.fetch(
            "SELECT count(*) FROM community_posts WHERE generation_id = :id",
            id=generation_id,
        )
        return int(rows[0][0])

    async def execute(self, statement: str, **params: Any) -> None:
        async with self.engine.begin() as db:
            await db.execute(text(statement), _typed(params))

    async def fetch(self, statement: str, **params: Any) -> list[Any]:
        async with self.engine.connect() as db:
            return list((await db.execute(text(statement), _typed(params))).all())


def _typed(params: dict[str, Any]) -> dict[str, Any]:
    """asyncpg wants UUID objects for uuid columns."""
    typed: dict[str, Any] = {}
    for key, value in params.items():
        try:
            typed[key] = uuid.UUID(value) if isinstance(value, str) else value
        except ValueError:
            typed[key] = value
    return typed


class CommunityApi:
    """The CommunityService stub and the metadata callers send with it."""

    def __init__(self, settings: Settings) -> None:
        self.signer = TokenSigner(settings.signing_secret())
        self._internal = InternalTokenSource(self.signer, "tests", 300)
        self._channels = [
            grpc.aio.insecure_channel(settings.generation_address),
            grpc.aio.insecure_channel(settings.auth_address),
        ]
        self.stub = community_pb2_grpc.CommunityServiceStub(self._channels[0])
        self.auth = auth_pb2_grpc.AuthServiceStub(self._channels[1])

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    async def registered_user(self) -> auth_pb2.User:
        """An account in auth, so that it has a nickname to show."""
        reply = await self.auth.Register(
            auth_pb2.RegisterRequest(
                email=f"community-{uuid.uuid4().hex[:12]}@example.com",
                password="a-good-password",
                name="Gallery Author",
            ),
            metadata=self.anonymous,
        )
        return reply.user

    @property
    def anonymous(self) -> Metadata:
        """A signed-out visitor, through the gateway."""
        return ((INTERNAL_TOKEN_KEY, self._internal.token()),)

    def user(self, user_id: str) -> Metadata:
        """A signed-in user, through the gateway."""
        token = self.signer.issue(
            Audience.USER, user_id, 900, session_id=str(uuid.uuid4())
        )
        return (*self.anonymous, (AUTHORIZATION_KEY, f"Bearer {token}"))

    async def publish(
        self, user_id: str, generation_id: str, **fields: Any
    ) -> community_pb2.Post:
        reply = await self.stub.PublishGeneration(
            community_pb2.PublishGenerationRequest(
                generation_id=generation_id, **fields
            ),
            metadata=self.user(user_id),
        )
        return reply.post

    async def like(
        self, user_id: str, post_id: str
    ) -> community_pb2.ToggleLikeResponse:
        return await self.stub.ToggleLike(
            community_pb2.ToggleLikeRequest(post_id=post_id),
            metadata=self.user(user_id),
        )

    async def feed(
        self, viewer: str | None = None, **fields: Any
    ) -> community_pb2.ListPostsResponse:
        return await self.stub.ListPosts(
            community_pb2.ListPostsRequest(**fields),
            metadata=self.user(viewer) if viewer else self.anonymous,
        )

    async def post(self, post_id: str, viewer: str | None = None) -> community_pb2.Post:
        reply = await self.stub.GetPost(
            community_pb2.GetPostRequest(id=post_id),
            metadata=self.user(viewer) if viewer else self.anonymous,
        )
        return reply.post

    async def share(
        self, user_id: str, generation_id: str, **fields: Any
    ) -> community_pb2.Share:
        fields.setdefault("allow_download", True)
        reply = await self.stub.CreateShare(
            community_pb2.CreateShareRequest(generation_id=generation_id, **fields),
            metadata=self.user(user_id),
        )
        return reply.share

    async def shared(self, share_id: str) -> community_pb2.SharedGeneration:
        reply = await self.stub.GetSharedGeneration(
            community_pb2.GetSharedGenerationRequest(id=share_id),
            metadata=self.anonymous,
        )
        return reply.generation


async def failure(call: Awaitable[object]) -> tuple[grpc.StatusCode, DomainError]:
    """The status and domain error of a call that must fail."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code(), from_rpc_error(error)
    raise AssertionError("the call succeeded")
