"""Deleting a user through the admin service: a saga of one admin task per
service that holds their data (auth last), against every real service.

One user lives a full life first: team workspaces of their own (one with a
member, one alone with credits in its pool), membership of someone else's
team, a project, a published generation that was liked, a like of someone
else's post, a share link, a generation still running with credits held,
and a chat conversation. Each test then checks one service's part.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from omnihub.admin.v1 import users_pb2
from omnihub.auth.v1 import auth_pb2
from omnihub.chat.v1 import chat_pb2
from omnihub.generation.v1 import community_pb2, generation_pb2
from omnihub.workspace.v1 import workspace_pb2

from libs.config import Settings
from services.admin.main import AdminProcess
from services.chat.main import ChatProcess
from services.generation.main import GenerationProcess
from services.workspace.main import WorkspaceProcess
from tests.services.admin.users_api import (
    CREDIT,
    PASSWORD,
    Member,
    UsersApi,
    failure,
)
from tests.services.chat.factories import MODEL as CHAT_MODEL
from tests.services.generation.api import IMAGE_MODEL
from tests.services.generation.factories import GenerationRows

SERVICES = {"generation", "chat", "workspace", "billing", "auth"}


@dataclass(frozen=True)
class Life:
    """What the deleted user (`ann`) had, and the people around her."""

    ann: Member
    bob: Member
    cat: Member
    ann_team: str
    ann_alone: str
    cat_team: str
    personal: str
    bobs_post: str
    running_generation: str
    conversation: str
    ledger_entries: int
    deletion: users_pb2.DeleteUserResponse


@pytest.fixture(scope="module")
async def users(
    settings: Settings,
    admin_service: AdminProcess,
    workspace_service: WorkspaceProcess,
    generation_service: GenerationProcess,
    chat_service: ChatProcess,
) -> AsyncIterator[UsersApi]:
    client = UsersApi(settings)
    yield client
    await client.close()


@pytest.fixture(scope="module")
async def life(users: UsersApi, settings: Settings) -> Life:
    ann = await users.member("ann")
    bob = await users.member("bob")
    cat = await users.member("cat")
    await users.grant(ann.id, 20 * CREDIT)
    ann_team = await _team(users, ann, "Ann's team", bob)
    ann_alone = await _team(users, ann, "Ann alone")
    await users.workspace.AddCredits(
        workspace_pb2.AddCreditsRequest(
            workspace_id=ann_alone, amount_micros=CREDIT, request_id=str(uuid.uuid4())
        ),
        metadata=users.user(ann.access_token),
    )
    cat_team = await _team(users, cat, "Cat's team", ann)
    personal = await _personal(users, ann)
    await users.workspace.CreateProject(
        workspace_pb2.CreateProjectRequest(workspace_id=personal, name="Moodboard"),
        metadata=users.user(ann.access_token),
    )
    bobs_post = await _community(users, settings, ann, bob)
    running = await users.generation.CreateGenerations(
        generation_pb2.CreateGenerationsRequest(
            model_ids=[IMAGE_MODEL], type="image", prompt="a quiet harbour at dawn"
        ),
        metadata=users.user(ann.access_token),
    )
    conversation = await _chat(users, ann)
    entries = len(await users.ledger(ann.id))

    deletion = await users.delete(users.operator(), ann.id)

    return Life(
        ann,
        bob,
        cat,
        ann_team,
        ann_alone,
        cat_team,
        personal,
        bobs_post,
        running.generations[0].id,
        conversation,
        entries,
        deletion,
    )


async def _team(users: UsersApi, owner: Member, name: str, *members: Member) -> str:
    created = await users.workspace.CreateWorkspace(
        workspace_pb2.CreateWorkspaceRequest(name=name),
        metadata=users.user(owner.access_token),
    )
    workspace_id = str(created.workspace.id)
    for member in members:
        invite = await users.workspace.CreateInvite(
            workspace_pb2.CreateInviteRequest(workspace_id=workspace_id),
            metadata=users.user(owner.access_token),
        )
        await users.workspace.AcceptInvite(
            workspace_pb2.AcceptInviteRequest(token=invite.token),
            metadata=users.user(member.access_token),
        )
    return workspace_id


async def _personal(users: UsersApi, member: Member) -> str:
    listed = await users.workspace.ListWorkspaces(
        workspace_pb2.ListWorkspacesRequest(), metadata=users.user(member.access_token)
    )
    return next(w.id for w in listed.workspaces if w.is_personal)


async def _community(
    users: UsersApi, settings: Settings, ann: Member, bob: Member
) -> str:
    """Ann publishes and shares a generation Bob likes; Ann likes Bob's post.
    Returns Bob's post."""
    rows = GenerationRows(settings)
    try:
        anns = await rows.completed(ann.id, "a lighthouse in the fog")
        bobs = await rows.completed(bob.id, "a fox in the snow")
    finally:
        await rows.close()
    as_ann, as_bob = users.user(ann.access_token), users.user(bob.access_token)
    anns_post = await users.community.PublishGeneration(
        community_pb2.PublishGenerationRequest(generation_id=anns), metadata=as_ann
    )
    bobs_post = await users.community.PublishGeneration(
        community_pb2.PublishGenerationRequest(generation_id=bobs), metadata=as_bob
    )
    await users.community.ToggleLike(
        community_pb2.ToggleLikeRequest(post_id=anns_post.post.id), metadata=as_bob
    )
    await users.community.ToggleLike(
        community_pb2.ToggleLikeRequest(post_id=bobs_post.post.id), metadata=as_ann
    )
    await users.community.CreateShare(
        community_pb2.CreateShareRequest(generation_id=anns, allow_download=True),
        metadata=as_ann,
    )
    return str(bobs_post.post.id)


async def _chat(users: UsersApi, ann: Member) -> str:
    created = await users.chat.CreateConversation(
        chat_pb2.CreateConversationRequest(model_id=CHAT_MODEL),
        metadata=users.user(ann.access_token),
    )
    reply = users.chat.SendMessage(
        chat_pb2.SendMessageRequest(
            conversation_id=created.conversation.id, content="Hello there"
        ),
        metadata=users.user(ann.access_token),
    )
    async for _ in reply:
        pass
    return str(created.conversation.id)


def _id(value: str) -> uuid.UUID:
    return uuid.UUID(value)


class TestTheSaga:
    async def test_every_step_is_done(self, life: Life) -> None:
        assert life.deletion.completed
        assert {s.service for s in life.deletion.steps} == SERVICES
        assert {s.state for s in life.deletion.steps} == {"done"}

    async def test_the_audit_entry_settles_with_every_steps_result(
        self, users: UsersApi, life: Life
    ) -> None:
        (row,) = [
            r
            for r in await users.audit_rows(life.ann.id)
            if r["action"] == "user_deleted"
        ]

        assert row["id"] == life.deletion.audit_id
        assert row["status"] == "applied"
        assert set(row["after"]) == SERVICES
        assert row["after"]["auth"]["anonymised"] is True
        assert life.ann.email not in str(row["before"])

    async def test_running_it_again_is_harmless(
        self, users: UsersApi, life: Life
    ) -> None:
        again = await users.delete(users.operator(), life.ann.id)

        rows = await users.audit_rows(life.ann.id)
        last = rows[-1]
        assert again.completed
        assert last["id"] == again.audit_id
        assert last["after"]["auth"]["anonymised"] is False
        assert int(last["after"]["generation"]["deleted_generations"]) == 0
        assert int(last["after"]["workspace"]["left_workspaces"]) == 0

    async def test_only_a_superadmin_may_delete(
        self, users: UsersApi, life: Life
    ) -> None:
        code, _ = await failure(users.delete(users.operator("support"), life.bob.id))

        assert code is grpc.StatusCode.PERMISSION_DENIED


class TestAuth:
    async def test_the_account_is_anonymised(self, users: UsersApi, life: Life) -> None:
        reply = await users.auth.GetUser(
            auth_pb2.GetUserRequest(user_id=life.ann.id), metadata=users.service
        )

        assert reply.user.status == "deleted"
        assert reply.user.email == f"deleted-{life.ann.id}@deleted.invalid"
        assert reply.user.name == ""
        assert not reply.user.has_password
        assert reply.active_sessions == 0

    async def test_nobody_can_sign_in(self, users: UsersApi, life: Life) -> None:
        code, error = await failure(
            users.auth.Login(
                auth_pb2.LoginRequest(email=life.ann.email, password=PASSWORD),
                metadata=users.service,
            )
        )

        assert code is grpc.StatusCode.UNAUTHENTICATED
        assert error.code == "invalid_credentials"


class TestGeneration:
    async def test_every_generation_is_deleted(
        self, users: UsersApi, life: Life
    ) -> None:
        left = await users.count(
            "generation",
            "SELECT count(*) FROM generations WHERE user_id = :u"
            " AND deleted_at IS NULL",
            u=_id(life.ann.id),
        )

        assert left == 0

    async def test_the_running_one_was_cancelled_and_its_hold_returned(
        self, users: UsersApi, life: Life
    ) -> None:
        (row,) = await users.sql(
            "generation",
            "SELECT status FROM generations WHERE id = :id",
            id=_id(life.running_generation),
        )

        assert row["status"] in ("cancelled", "completed", "failed")
        assert (await users.balance(life.ann.id))[1] == 0

    async def test_posts_likes_and_shares_are_gone(
        self, users: UsersApi, life: Life
    ) -> None:
        left = await users.sql(
            "generation",
            "SELECT (SELECT count(*) FROM community_posts WHERE user_id = :u) AS posts,"
            " (SELECT count(*) FROM community_likes WHERE user_id = :u) AS likes,"
            " (SELECT count(*) FROM shares WHERE user_id = :u) AS shares",
            u=_id(life.ann.id),
        )

        assert left == [{"posts": 0, "likes": 0, "shares": 0}]

    async def test_her_like_no_longer_counts(self, users: UsersApi, life: Life) -> None:
        (row,) = await users.sql(
            "generation",
            "SELECT like_count FROM community_posts WHERE id = :id",
            id=_id(life.bobs_post),
        )

        assert row["like_count"] == 0


class TestWorkspace:
    async def test_she_is_a_member_of_nothing(
        self, users: UsersApi, life: Life
    ) -> None:
        left = await users.count(
            "workspace",
            "SELECT count(*) FROM members WHERE user_id = :u",
            u=_id(life.ann.id),
        )

        assert left == 0

    async def test_her_team_passes_to_its_longest_standing_member(
        self, users: UsersApi, life: Life
    ) -> None:
        reply = await users.workspace.GetWorkspace(
            workspace_pb2.GetWorkspaceRequest(workspace_id=life.ann_team),
            metadata=users.user(life.bob.access_token),
        )

        assert reply.workspace.role == "owner"
        assert reply.workspace.member_count == 1

    async def test_the_team_she_was_alone_in_is_deleted(
        self, users: UsersApi, life: Life
    ) -> None:
        gone = await users.count(
            "workspace",
            "SELECT count(*) FROM workspaces WHERE id = ANY(:ids)",
            ids=[_id(life.ann_alone), _id(life.personal)],
        )

        assert gone == 0

    async def test_someone_elses_team_stays(self, users: UsersApi, life: Life) -> None:
        reply = await users.workspace.GetWorkspace(
            workspace_pb2.GetWorkspaceRequest(workspace_id=life.cat_team),
            metadata=users.user(life.cat.access_token),
        )

        assert reply.workspace.member_count == 1

    async def test_her_projects_and_invites_are_gone(
        self, users: UsersApi, life: Life
    ) -> None:
        ann = _id(life.ann.id)
        projects = await users.count(
            "workspace", "SELECT count(*) FROM projects WHERE owner_id = :u", u=ann
        )
        invites = await users.count(
            "workspace",
            "SELECT count(*) FROM invites WHERE invited_by = :u OR accepted_by = :u",
            u=ann,
        )

        assert (projects, invites) == (0, 0)


class TestChat:
    async def test_conversations_and_messages_are_gone(
        self, users: UsersApi, life: Life
    ) -> None:
        conversations = await users.count(
            "chat",
            "SELECT count(*) FROM conversations WHERE user_id = :u",
            u=_id(life.ann.id),
        )
        messages = await users.count(
            "chat",
            "SELECT count(*) FROM messages WHERE conversation_id = :c",
            c=_id(life.conversation),
        )

        assert (conversations, messages) == (0, 0)


class TestBilling:
    async def test_the_ledger_is_kept(self, users: UsersApi, life: Life) -> None:
        entries = await users.ledger(life.ann.id)

        assert len(entries) >= life.ledger_entries

    async def test_no_credits_are_held_any_more(
        self, users: UsersApi, life: Life
    ) -> None:
        held = await users.count(
            "billing",
            "SELECT count(*) FROM holds h JOIN accounts a ON a.id = h.account_id"
            " WHERE a.owner_type = 'user' AND a.owner_id = :u AND h.status = 'held'",
            u=_id(life.ann.id),
        )

        assert held == 0
