"""Profiles in the auth service: GetProfile, UpdateProfile and
RegenerateNickname over real gRPC, and the nickname update's SQL, against
PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from omnihub.auth.v1 import auth_pb2
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from libs.config import Settings
from libs.db import create_engine, session_factory
from services.auth import repository
from services.auth.main import AuthProcess
from services.auth.models import SCHEMA
from tests.services.auth.test_rpc import (
    AuthClient,
    auth_client,
    field_violations,
    reason,
    refusal,
    signed_in_admin,
    sql,
    suspend,
)

NICKNAME = re.compile(r"[A-Za-z0-9_-]{3,30}")


@pytest.fixture(scope="module")
async def auth(
    settings: Settings, auth_service: AuthProcess
) -> AsyncIterator[AuthClient]:
    async for client in auth_client(settings.auth_address, settings):
        yield client


@pytest.fixture(scope="module")
async def database(
    settings: Settings, auth_service: AuthProcess
) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings, SCHEMA)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
async def member(auth: AuthClient) -> auth_pb2.RegisterResponse:
    """An account shared by the tests whose every change is refused, so that
    each of them need not pay for a sign-up."""
    return await auth.register()


@pytest.fixture(scope="module")
def sessions(database: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(database)


async def get_profile(auth: AuthClient, access_token: str) -> auth_pb2.Profile:
    response: auth_pb2.GetProfileResponse = await auth.stub.GetProfile(
        auth_pb2.GetProfileRequest(), metadata=auth.as_user(access_token), timeout=10
    )
    return response.profile


async def update_profile(
    auth: AuthClient, access_token: str, **fields: Any
) -> auth_pb2.Profile:
    response: auth_pb2.UpdateProfileResponse = await auth.stub.UpdateProfile(
        auth_pb2.UpdateProfileRequest(**fields),
        metadata=auth.as_user(access_token),
        timeout=10,
    )
    return response.profile


async def regenerate_nickname(auth: AuthClient, access_token: str) -> auth_pb2.Profile:
    response: auth_pb2.RegenerateNicknameResponse = await auth.stub.RegenerateNickname(
        auth_pb2.RegenerateNicknameRequest(),
        metadata=auth.as_user(access_token),
        timeout=10,
    )
    return response.profile


def unique_nickname(label: str = "Nick") -> str:
    return f"{label}_{uuid.uuid4().hex[:12]}"


class TestGetProfile:
    async def test_new_account_has_a_nickname_and_a_private_empty_profile(
        self, auth: AuthClient
    ) -> None:
        registered = await auth.register()

        profile = await get_profile(auth, registered.tokens.access_token)

        assert profile.id == registered.user.id
        assert profile.email == registered.user.email
        assert profile.name == "Test User"
        assert profile.nickname == registered.user.nickname
        assert NICKNAME.fullmatch(profile.nickname)
        assert (profile.bio, profile.avatar_url) == ("", "")
        assert profile.is_public_profile is False
        assert profile.created_at.seconds > 0

    async def test_suspended_user_is_refused(
        self, auth: AuthClient, database: AsyncEngine
    ) -> None:
        registered = await auth.register()
        await suspend(database, registered.user.email)

        error = await refusal(get_profile(auth, registered.tokens.access_token))

        assert error.code() is grpc.StatusCode.PERMISSION_DENIED
        assert reason(error) == "account_disabled"

    async def test_operator_token_is_permission_denied(
        self, settings: Settings, auth: AuthClient
    ) -> None:
        admin_token = await signed_in_admin(settings, auth)

        error = await refusal(get_profile(auth, admin_token))

        assert error.code() is grpc.StatusCode.PERMISSION_DENIED

    async def test_service_token_alone_is_unauthenticated(
        self, auth: AuthClient
    ) -> None:
        error = await refusal(
            auth.stub.GetProfile(
                auth_pb2.GetProfileRequest(), metadata=auth.internal(), timeout=10
            )
        )

        assert error.code() is grpc.StatusCode.UNAUTHENTICATED


class TestUpdateProfile:
    async def test_every_profile_field_can_change(self, auth: AuthClient) -> None:
        registered = await auth.register()
        nickname = unique_nickname()

        updated = await update_profile(
            auth,
            registered.tokens.access_token,
            name="Ann Lee",
            nickname=nickname,
            bio="Draws foxes.\nMostly at night.",
            avatar_url="https://cdn.example.com/ann.png",
            is_public_profile=True,
        )

        assert updated == await get_profile(auth, registered.tokens.access_token)
        assert (updated.name, updated.nickname) == ("Ann Lee", nickname)
        assert updated.bio == "Draws foxes.\nMostly at night."
        assert updated.avatar_url == "https://cdn.example.com/ann.png"
        assert updated.is_public_profile is True

    async def test_fields_not_sent_keep_their_values(self, auth: AuthClient) -> None:
        registered = await auth.register()
        token = registered.tokens.access_token
        await update_profile(auth, token, bio="First bio", is_public_profile=True)

        updated = await update_profile(auth, token, name="Renamed")

        assert updated.name == "Renamed"
        assert updated.bio == "First bio"
        assert updated.is_public_profile is True
        assert updated.nickname == registered.user.nickname

    async def test_text_is_stored_trimmed(self, auth: AuthClient) -> None:
        registered = await auth.register()
        nickname = unique_nickname()

        updated = await update_profile(
            auth,
            registered.tokens.access_token,
            name="  Ann  ",
            nickname=f" {nickname} ",
            bio="\n  Hello  \n",
        )

        assert (updated.name, updated.nickname, updated.bio) == (
            "Ann",
            nickname,
            "Hello",
        )

    async def test_empty_bio_and_avatar_url_remove_them(
        self, auth: AuthClient, database: AsyncEngine
    ) -> None:
        registered = await auth.register()
        token = registered.tokens.access_token
        await update_profile(
            auth, token, bio="Bio", avatar_url="https://cdn.example.com/a.png"
        )

        updated = await update_profile(auth, token, bio="  ", avatar_url="")

        assert (updated.bio, updated.avatar_url) == ("", "")
        stored = await sql(
            database,
            "SELECT bio IS NULL AND avatar_url IS NULL FROM auth.users WHERE id = :id",
            id=uuid.UUID(registered.user.id),
        )
        assert stored is True

    async def test_a_change_moves_updated_at(self, auth: AuthClient) -> None:
        registered = await auth.register()
        before = await get_profile(auth, registered.tokens.access_token)

        updated = await update_profile(
            auth, registered.tokens.access_token, is_public_profile=True
        )

        assert updated.updated_at.ToDatetime() > before.updated_at.ToDatetime()

    async def test_an_empty_update_writes_nothing(self, auth: AuthClient) -> None:
        registered = await auth.register()
        before = await get_profile(auth, registered.tokens.access_token)

        after = await update_profile(auth, registered.tokens.access_token)

        assert after == before

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("name", ""),
            ("name", "   "),
            ("name", "x" * 101),
            ("name", "Ann\x00Lee"),
            ("name", "Ann\nLee"),
            ("nickname", "ab"),
            ("nickname", "x" * 31),
            ("nickname", "two words"),
            ("nickname", "dot.ted"),
            ("nickname", "émile"),
            ("nickname", "nick\x00"),
            ("bio", "x" * 501),
            ("bio", "Hello\x00"),
            ("bio", "Bell\x07"),
            ("avatar_url", "http://cdn.example.com/a.png"),
            ("avatar_url", "javascript:alert(1)"),
            ("avatar_url", "data:image/png;base64,iVBORw0KGgo="),
            ("avatar_url", "https://"),
            ("avatar_url", "https://[::1/a.png"),
            ("avatar_url", "https://ann:secret@cdn.example.com/a.png"),
            ("avatar_url", "https://cdn.example.com/a b.png"),
            ("avatar_url", "https://cdn.example.com/" + "a" * 2030),
        ],
    )
    async def test_unacceptable_value_is_refused_naming_the_field(
        self,
        auth: AuthClient,
        member: auth_pb2.RegisterResponse,
        field: str,
        value: str,
    ) -> None:
        error = await refusal(
            update_profile(auth, member.tokens.access_token, **{field: value})
        )

        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert reason(error) == "invalid_argument"
        assert set(field_violations(error)) == {field}

    async def test_every_unacceptable_field_is_named_at_once(
        self, auth: AuthClient, member: auth_pb2.RegisterResponse
    ) -> None:
        error = await refusal(
            update_profile(
                auth,
                member.tokens.access_token,
                name="",
                nickname="!",
                bio="x" * 501,
                avatar_url="ftp://example.com/a.png",
            )
        )

        assert set(field_violations(error)) == {"name", "nickname", "bio", "avatar_url"}

    async def test_a_refused_field_leaves_the_valid_ones_unwritten(
        self, auth: AuthClient, member: auth_pb2.RegisterResponse
    ) -> None:
        token = member.tokens.access_token

        await refusal(update_profile(auth, token, name="New Name", nickname="!"))

        assert (await get_profile(auth, token)).name == "Test User"

    @pytest.mark.parametrize("spelling", [str, str.upper, str.lower, str.swapcase])
    async def test_nickname_held_by_another_account_in_any_case_is_taken(
        self, auth: AuthClient, member: auth_pb2.RegisterResponse, spelling: Any
    ) -> None:
        holder = member
        other = await auth.register()

        error = await refusal(
            update_profile(
                auth, other.tokens.access_token, nickname=spelling(holder.user.nickname)
            )
        )

        assert error.code() is grpc.StatusCode.ALREADY_EXISTS
        assert reason(error) == "nickname_taken"
        profile = await get_profile(auth, other.tokens.access_token)
        assert profile.nickname == other.user.nickname

    async def test_own_nickname_in_another_case_is_accepted(
        self, auth: AuthClient
    ) -> None:
        registered = await auth.register()
        respelled = registered.user.nickname.upper()

        updated = await update_profile(
            auth, registered.tokens.access_token, nickname=respelled
        )

        assert updated.nickname == respelled

    @pytest.mark.parametrize("nickname", ["admin", "Support", "OMNIHUB"])
    async def test_reserved_nickname_is_taken(
        self, auth: AuthClient, member: auth_pb2.RegisterResponse, nickname: str
    ) -> None:
        error = await refusal(
            update_profile(auth, member.tokens.access_token, nickname=nickname)
        )

        assert reason(error) == "nickname_taken"

    async def test_users_racing_for_one_nickname_exactly_one_wins(
        self, auth: AuthClient, database: AsyncEngine
    ) -> None:
        racers = [await auth.register() for _ in range(4)]
        nickname = unique_nickname("Race")
        spellings = [nickname, nickname.upper(), nickname.lower(), nickname]

        outcomes = await asyncio.gather(
            *(
                update_profile(auth, racer.tokens.access_token, nickname=spelling)
                for racer, spelling in zip(racers, spellings, strict=True)
            ),
            return_exceptions=True,
        )

        winners = [o for o in outcomes if isinstance(o, auth_pb2.Profile)]
        losers = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
        assert len(winners) == 1, outcomes
        assert [reason(error) for error in losers] == ["nickname_taken"] * 3
        holders = await sql(
            database,
            "SELECT count(*) FROM auth.users WHERE lower(nickname) = lower(:n)",
            n=nickname,
        )
        assert holders == 1

    async def test_field_unknown_to_the_service_is_refused_not_dropped(
        self, settings: Settings, auth: AuthClient, member: auth_pb2.RegisterResponse
    ) -> None:
        # What a caller built from a newer contract would send: name = 1 and
        # a field 15 that this build does not have (say, an e-mail address).
        registered = member
        known = auth_pb2.UpdateProfileRequest(name="Changed").SerializeToString()
        unknown_field_15 = b"\x7a\x0fmal@example.com"
        async with grpc.aio.insecure_channel(settings.auth_address) as channel:
            call = channel.unary_unary(
                "/omnihub.auth.v1.AuthService/UpdateProfile",
                request_serializer=lambda raw: raw,
                response_deserializer=auth_pb2.UpdateProfileResponse.FromString,
            )
            error = await refusal(
                call(
                    known + unknown_field_15,
                    metadata=auth.as_user(registered.tokens.access_token),
                    timeout=10,
                )
            )

        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert set(field_violations(error)) == {"15"}
        profile = await get_profile(auth, registered.tokens.access_token)
        assert profile.name == "Test User"

    async def test_suspended_user_cannot_change_the_profile(
        self, auth: AuthClient, database: AsyncEngine
    ) -> None:
        registered = await auth.register()
        await suspend(database, registered.user.email)

        error = await refusal(
            update_profile(auth, registered.tokens.access_token, name="Changed")
        )

        assert error.code() is grpc.StatusCode.PERMISSION_DENIED
        assert reason(error) == "account_disabled"


class TestRegenerateNickname:
    async def test_gives_a_new_valid_nickname(self, auth: AuthClient) -> None:
        registered = await auth.register()

        profile = await regenerate_nickname(auth, registered.tokens.access_token)

        assert profile.nickname.lower() != registered.user.nickname.lower()
        assert NICKNAME.fullmatch(profile.nickname)
        stored = await get_profile(auth, registered.tokens.access_token)
        assert stored.nickname == profile.nickname

    async def test_the_old_nickname_becomes_free(self, auth: AuthClient) -> None:
        first = await auth.register()
        second = await auth.register()
        await regenerate_nickname(auth, first.tokens.access_token)

        taken_over = await update_profile(
            auth, second.tokens.access_token, nickname=first.user.nickname
        )

        assert taken_over.nickname == first.user.nickname

    async def test_suspended_user_is_refused(
        self, auth: AuthClient, database: AsyncEngine
    ) -> None:
        registered = await auth.register()
        await suspend(database, registered.user.email)

        error = await refusal(regenerate_nickname(auth, registered.tokens.access_token))

        assert reason(error) == "account_disabled"


class TestUpdateProfileSql:
    """The retry of RegenerateNickname relies on this: a nickname collision
    answers None and the transaction goes on."""

    async def test_taken_nickname_leaves_the_transaction_usable(
        self, auth: AuthClient, sessions: async_sessionmaker[AsyncSession]
    ) -> None:
        holder = (await auth.register()).user
        mover = (await auth.register()).user
        free = unique_nickname()

        async with sessions.begin() as db:
            refused = await repository.update_profile(
                db, uuid.UUID(mover.id), {"nickname": holder.nickname.swapcase()}
            )
            moved = await repository.update_profile(
                db, uuid.UUID(mover.id), {"nickname": free}
            )

        assert refused is None
        assert moved is not None
        assert moved.nickname == free
