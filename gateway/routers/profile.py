"""/api/profile: the signed-in user's own profile. There is no user id in
these paths: nobody reads or changes another user's profile here."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import UTC
from typing import Any, TypeVar

from fastapi import APIRouter, Response
from omnihub.auth.v1 import auth_pb2
from pydantic.alias_generators import to_camel

from gateway.deps import UpstreamDep, UserDep
from gateway.schemas.profile import ProfileOut, ProfileStatsOut, ProfileUpdateBody
from libs.errors import FieldViolation, InvalidArgument

router = APIRouter(prefix="/api/profile", tags=["profile"])

ReplyT = TypeVar("ReplyT")


def _profile(profile: auth_pb2.Profile) -> ProfileOut:
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
        # TODO: count generations, published posts and likes received from
        # the generation service once it records them; until then a user has
        # none, so zero is the true count.
        stats=ProfileStatsOut(generations=0, published=0, likes_received=0),
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
    user: UserDep, upstream: UpstreamDep, response: Response
) -> ProfileOut:
    """The caller's profile."""
    reply = await upstream.call(
        upstream.auth.GetProfile, auth_pb2.GetProfileRequest(), user.authorization
    )
    response.headers["Cache-Control"] = "no-store"
    return _profile(reply.profile)


@router.put("")
async def update_profile(
    body: ProfileUpdateBody, user: UserDep, upstream: UpstreamDep
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
    reply = await _with_json_field_names(
        upstream.call(upstream.auth.UpdateProfile, request, user.authorization)
    )
    return _profile(reply.profile)


@router.post("/regenerate-nickname")
async def regenerate_nickname(user: UserDep, upstream: UpstreamDep) -> ProfileOut:
    """Replace the caller's nickname with a new random one nobody holds."""
    reply = await upstream.call(
        upstream.auth.RegenerateNickname,
        auth_pb2.RegenerateNicknameRequest(),
        user.authorization,
    )
    return _profile(reply.profile)
