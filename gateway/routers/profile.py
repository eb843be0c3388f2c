"""/api/profile: the signed-in user's own profile. There is no user id in
these paths: nobody reads or changes another user's profile here."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC
from typing import Any, TypeVar

from fastapi import APIRouter, Response
from omnihub.auth.v1 import auth_pb2
from omnihub.generation.v1 import community_pb2
from pydantic.alias_generators import to_camel

from gateway.deps import Principal, UpstreamDep, UserDep
from gateway.routers.community import CommunityClient, CommunityDep
from gateway.schemas.profile import ProfileOut, ProfileStatsOut, ProfileUpdateBody
from libs.errors import FieldViolation, InvalidArgument

router = APIRouter(prefix="/api/profile", tags=["profile"])

ReplyT = TypeVar("ReplyT")


async def _stats(community: CommunityClient, user: Principal) -> ProfileStatsOut:
    """The caller's generation, post and like counts (generation service)."""
    reply = await community.upstream.call(
        community.stub.GetUserStats,
        community_pb2.GetUserStatsRequest(user_id=user.id),
        user.authorization,
    )
    return ProfileStatsOut(
        generations=reply.generations,
        published=reply.published,
        likes_received=reply.likes_received,
    )


def _profile(profile: auth_pb2.Profile, stats: ProfileStatsOut) -> ProfileOut:
    return ProfileOut(
        id=profile.id,
        email=profile.email,
        name=profile.name,
        nickname=profile.nickname,
        bio=profile.bio or None,
        avatar_url=profile.avatar_url or None,
        is_public_profile=profile.is_public_profile,
        created_at=profile.created_at.ToDatetime(tzinfo=UTC),
        updated_at=profile.updated_at.ToDatetime(tzinfo=UTC),
        stats=stats,
    )


async def _with_json_field_names(call: Awaitable[ReplyT]) -> ReplyT:
    """Name refused fields as the request body does (`avatarUrl`), not as
    the auth service's message does (`avatar_url`)."""
    try:
        return await call
    except InvalidArgument as error:
        violations = tuple(
            FieldViolation(to_camel(v.field), v.message) for v in error.violations
        )
        raise InvalidArgument(error.message, violations=violations) from None


@router.get("")
async def get_profile(
    user: UserDep, upstream: UpstreamDep, community: CommunityDep, response: Response
) -> ProfileOut:
    """The caller's profile and figures."""
    reply, stats = await asyncio.gather(
        upstream.call(
            upstream.auth.GetProfile, auth_pb2.GetProfileRequest(), user.authorization
        ),
        _stats(community, user),
    )
    response.headers["Cache-Control"] = "no-store"
    return _profile(reply.profile, stats)


@router.put("")
async def update_profile(
    body: ProfileUpdateBody,
    user: UserDep,
    upstream: UpstreamDep,
    community: CommunityDep,
) -> ProfileOut:
    """Change the fields that are sent; the others keep their values.
    409 `nickname_taken` when another account holds the nickname in any
    letter case."""
    # The body's Python names are the request's field names. Null clears a
    # bio or avatar (the only fields that may be null): the auth service
    # reads a present empty string that way.
    changes: dict[str, Any] = {
        field: "" if value is None else value
        for field, value in body.model_dump(exclude_unset=True).items()
    }
    request = auth_pb2.UpdateProfileRequest(**changes)
    # Figures first: if they cannot be had, the change is not made either,
    # rather than made and reported as failed.
    stats = await _stats(community, user)
    reply = await _with_json_field_names(
        upstream.call(upstream.auth.UpdateProfile, request, user.authorization)
    )
    return _profile(reply.profile, stats)


@router.post("/regenerate-nickname")
async def regenerate_nickname(
    user: UserDep, upstream: UpstreamDep, community: CommunityDep
) -> ProfileOut:
    """Replace the caller's nickname with a new random one nobody holds."""
    stats = await _stats(community, user)
    reply = await upstream.call(
        upstream.auth.RegenerateNickname,
        auth_pb2.RegenerateNicknameRequest(),
        user.authorization,
    )
    return _profile(reply.profile, stats)
