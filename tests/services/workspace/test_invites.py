"""Invites over real gRPC: unguessable single-use tokens stored hashed, a
week of validity, withdrawal, binding to an e-mail address, and acceptance
that admits exactly one member however many try at once."""

from __future__ import annotations

import asyncio
import hashlib

import grpc
from omnihub.workspace.v1 import workspace_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.services.workspace.factories import (
    WorkspaceApi,
    build_team,
    failure,
    new_user,
)


async def _expire(engine: AsyncEngine, token: str) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE invites SET expires_at = now() - interval '1 second' "
                "WHERE token_hash = :hash"
            ),
            {"hash": hashlib.sha256(token.encode()).digest()},
        )


async def _member_ids(api: WorkspaceApi, workspace_id: str, by: str) -> list[str]:
    return [m.user_id for m in await api.members(workspace_id, by)]


async def _open_invites(
    api: WorkspaceApi, workspace_id: str, by: str
) -> list[workspace_pb2.Invite]:
    reply = await api.stub.ListInvites(
        workspace_pb2.ListInvitesRequest(workspace_id=workspace_id),
        metadata=api.user(by),
    )
    return list(reply.invites)


class TestCreateInvite:
    async def test_token_is_unguessable_and_only_its_hash_is_stored(
        self, api: WorkspaceApi, workspace_db: AsyncEngine
    ) -> None:
        owner = new_user()
        workspace_id = await api.create_workspace(owner)

        token = await api.invite(workspace_id, owner)

        async with workspace_db.connect() as connection:
            stored = (
                await connection.execute(
                    text(
                        "SELECT token_hash, i::text FROM invites i "
                        "WHERE workspace_id = :w"
                    ),
                    {"w": workspace_id},
                )
            ).one()
        assert len(token) >= 43  # 32 random bytes, URL-safe base64
        assert bytes(stored[0]) == hashlib.sha256(token.encode()).digest()
        assert token not in stored[1]

    async def test_invite_is_valid_for_seven_days(self, api: WorkspaceApi) -> None:
        owner = new_user()
        workspace_id = await api.create_workspace(owner)

        reply = await api.stub.CreateInvite(
            workspace_pb2.CreateInviteRequest(workspace_id=workspace_id),
            metadata=api.user(owner),
        )

        lifetime = reply.invite.expires_at.seconds - reply.invite.created_at.seconds
        assert abs(lifetime - 7 * 86400) <= 1

    async def test_second_open_invite_for_one_address_is_refused(
        self, api: WorkspaceApi
    ) -> None:
        owner = new_user()
        workspace_id = await api.create_workspace(owner)
        await api.invite(workspace_id, owner, email="Ann@Example.com")

        status, _ = await failure(
            api.invite(workspace_id, owner, email="ann@example.com")
        )

        assert status == grpc.StatusCode.ALREADY_EXISTS

    async def test_lapsed_invite_makes_way_for_a_new_one(
        self, api: WorkspaceApi, workspace_db: AsyncEngine
    ) -> None:
        owner = new_user()
        workspace_id = await api.create_workspace(owner)
        lapsed = await api.invite(workspace_id, owner, email="bo@example.com")
        await _expire(workspace_db, lapsed)

        fresh = await api.invite(workspace_id, owner, email="bo@example.com")

        assert fresh != lapsed

    async def test_inviting_a_members_address_is_refused(
        self, api: WorkspaceApi
    ) -> None:
        owner = new_user()
        workspace_id = await api.create_workspace(owner)
        member, email = await api.registered_user()
        await api.join(workspace_id, owner, member)

        status, error = await failure(api.invite(workspace_id, owner, email=email))

        assert status == grpc.StatusCode.ALREADY_EXISTS
        assert "already a member" in error.message

    async def test_malformed_address_is_invalid(self, api: WorkspaceApi) -> None:
        owner = new_user()
        workspace_id = await api.create_workspace(owner)

        status, error = await failure(
            api.invite(workspace_id, owner, email="not an address")
        )

        assert status == grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in error.violations] == ["email"]


class TestAcceptInvite:
    async def test_accepting_joins_the_workspace_as_a_member(
        self, api: WorkspaceApi
    ) -> None:
        owner, guest = new_user(), new_user()
        workspace_id = await api.create_workspace(owner)

        reply = await api.accept(await api.invite(workspace_id, owner), guest)

        assert (reply.workspace_id, reply.role) == (workspace_id, "member")
        assert guest in await _member_ids(api, workspace_id, owner)

    async def test_two_users_accepting_one_invite_at_once_admit_one(
        self, api: WorkspaceApi
    ) -> None:
        owner = new_user()
        workspace_id = await api.create_workspace(owner)
        token = await api.invite(workspace_id, owner)
        guests = [new_user() for _ in range(2)]

        outcomes = await asyncio.gather(
            *(api.accept(token, guest) for guest in guests), return_exceptions=True
        )

        failures = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
        assert len(failures) == 1
        assert failures[0].code() == grpc.StatusCode.NOT_FOUND
        members = await _member_ids(api, workspace_id, owner)
        assert len(members) == 2
        assert len(set(guests) & set(members)) == 1

    async def test_one_user_accepting_twice_at_once_joins_once(
        self, api: WorkspaceApi
    ) -> None:
        owner, guest = new_user(), new_user()
        workspace_id = await api.create_workspace(owner)
        token = await api.invite(workspace_id, owner)

        replies = await asyncio.gather(
            api.accept(token, guest), api.accept(token, guest)
        )

        assert {reply.workspace_id for reply in replies} == {workspace_id}
        assert sorted(await _member_ids(api, workspace_id, owner)) == sorted(
            [owner, guest]
        )

    async def test_used_invite_is_refused_to_someone_else(
        self, api: WorkspaceApi
    ) -> None:
        owner = new_user()
        workspace_id = await api.create_workspace(owner)
        token = await api.invite(workspace_id, owner)
        await api.accept(token, new_user())

        status, error = await failure(api.accept(token, new_user()))

        assert status == grpc.StatusCode.NOT_FOUND
        assert error.message == "This invite has already been used."

    async def test_expired_invite_is_refused(
        self, api: WorkspaceApi, workspace_db: AsyncEngine
    ) -> None:
        owner, guest = new_user(), new_user()
        workspace_id = await api.create_workspace(owner)
        token = await api.invite(workspace_id, owner)
        await _expire(workspace_db, token)

        status, error = await failure(api.accept(token, guest))

        assert status == grpc.StatusCode.NOT_FOUND
        assert "expired" in error.message
        assert guest not in await _member_ids(api, workspace_id, owner)

    async def test_revoked_invite_is_refused(self, api: WorkspaceApi) -> None:
        owner, guest = new_user(), new_user()
        workspace_id = await api.create_workspace(owner)
        created = await api.stub.CreateInvite(
            workspace_pb2.CreateInviteRequest(workspace_id=workspace_id),
            metadata=api.user(owner),
        )
        await api.stub.RevokeInvite(
            workspace_pb2.RevokeInviteRequest(
                workspace_id=workspace_id, invite_id=created.invite.id
            ),
            metadata=api.user(owner),
        )

        status, error = await failure(api.accept(created.token, guest))

        assert status == grpc.StatusCode.NOT_FOUND
        assert error.message == "This invite was withdrawn."

    async def test_email_bound_invite_refuses_another_account(
        self, api: WorkspaceApi
    ) -> None:
        owner = new_user()
        workspace_id = await api.create_workspace(owner)
        token = await api.invite(workspace_id, owner, email="invited@example.com")
        other, _ = await api.registered_user()

        status, _ = await failure(api.accept(token, other))

        assert status == grpc.StatusCode.PERMISSION_DENIED
        assert other not in await _member_ids(api, workspace_id, owner)
        assert len(await _open_invites(api, workspace_id, owner)) == 1

    async def test_email_bound_invite_admits_the_invited_account_in_any_case(
        self, api: WorkspaceApi
    ) -> None:
        owner = new_user()
        workspace_id = await api.create_workspace(owner)
        invited, email = await api.registered_user()
        token = await api.invite(workspace_id, owner, email=email.upper())

        reply = await api.accept(token, invited)

        assert reply.workspace_id == workspace_id

    async def test_member_accepting_another_invite_is_refused_and_it_stays_open(
        self, api: WorkspaceApi
    ) -> None:
        owner, member = new_user(), new_user()
        workspace_id = await api.create_workspace(owner)
        await api.join(workspace_id, owner, member)
        token = await api.invite(workspace_id, owner)

        status, _ = await failure(api.accept(token, member))

        assert status == grpc.StatusCode.ALREADY_EXISTS
        assert len(await _open_invites(api, workspace_id, owner)) == 1

    async def test_unknown_token_is_not_found(self, api: WorkspaceApi) -> None:
        status, _ = await failure(api.accept("no-such-token", new_user()))

        assert status == grpc.StatusCode.NOT_FOUND


class TestPreviewInvite:
    async def test_anyone_holding_the_token_sees_where_it_leads(
        self, api: WorkspaceApi
    ) -> None:
        owner, _ = await api.registered_user(name="Ines")
        workspace_id = await api.create_workspace(owner, name="Atelier")
        token = await api.invite(workspace_id, owner, email="guest@example.com")

        reply = await api.stub.PreviewInvite(
            workspace_pb2.PreviewInviteRequest(token=token)
        )

        assert (reply.workspace_name, reply.inviter_name) == ("Atelier", "Ines")
        assert reply.email_bound
        assert "guest@example.com" not in str(reply)

    async def test_expired_invite_is_not_found(
        self, api: WorkspaceApi, workspace_db: AsyncEngine
    ) -> None:
        owner = new_user()
        workspace_id = await api.create_workspace(owner)
        token = await api.invite(workspace_id, owner)
        await _expire(workspace_db, token)

        status, _ = await failure(
            api.stub.PreviewInvite(workspace_pb2.PreviewInviteRequest(token=token))
        )

        assert status == grpc.StatusCode.NOT_FOUND


class TestListAndRevoke:
    async def test_list_shows_only_open_invites(
        self, api: WorkspaceApi, workspace_db: AsyncEngine
    ) -> None:
        owner = new_user()
        workspace_id = await api.create_workspace(owner)
        await api.join(workspace_id, owner, new_user())
        await _expire(workspace_db, await api.invite(workspace_id, owner))
        open_one = await api.stub.CreateInvite(
            workspace_pb2.CreateInviteRequest(
                workspace_id=workspace_id, email="open@example.com"
            ),
            metadata=api.user(owner),
        )

        listed = await _open_invites(api, workspace_id, owner)

        assert [(i.id, i.email) for i in listed] == [
            (open_one.invite.id, "open@example.com")
        ]

    async def test_revoking_twice_changes_nothing_more(self, api: WorkspaceApi) -> None:
        owner = new_user()
        workspace_id = await api.create_workspace(owner)
        created = await api.stub.CreateInvite(
            workspace_pb2.CreateInviteRequest(workspace_id=workspace_id),
            metadata=api.user(owner),
        )
        request = workspace_pb2.RevokeInviteRequest(
            workspace_id=workspace_id, invite_id=created.invite.id
        )
        await api.stub.RevokeInvite(request, metadata=api.user(owner))

        await api.stub.RevokeInvite(request, metadata=api.user(owner))

        assert await _open_invites(api, workspace_id, owner) == []

    async def test_revoking_an_accepted_invite_is_refused(
        self, api: WorkspaceApi
    ) -> None:
        owner = new_user()
        workspace_id = await api.create_workspace(owner)
        created = await api.stub.CreateInvite(
            workspace_pb2.CreateInviteRequest(workspace_id=workspace_id),
            metadata=api.user(owner),
        )
        await api.accept(created.token, new_user())

        status, _ = await failure(
            api.stub.RevokeInvite(
                workspace_pb2.RevokeInviteRequest(
                    workspace_id=workspace_id, invite_id=created.invite.id
                ),
                metadata=api.user(owner),
            )
        )

        assert status == grpc.StatusCode.FAILED_PRECONDITION

    async def test_invite_of_another_workspace_is_not_found(
        self, api: WorkspaceApi
    ) -> None:
        team = await build_team(api)
        other_owner = new_user()
        other = await api.create_workspace(other_owner)
        foreign = await api.stub.CreateInvite(
            workspace_pb2.CreateInviteRequest(workspace_id=other),
            metadata=api.user(other_owner),
        )

        status, _ = await failure(
            api.stub.RevokeInvite(
                workspace_pb2.RevokeInviteRequest(
                    workspace_id=team.workspace_id, invite_id=foreign.invite.id
                ),
                metadata=api.user(team.owner),
            )
        )

        assert status == grpc.StatusCode.NOT_FOUND
        assert len(await _open_invites(api, other, other_owner)) == 1
