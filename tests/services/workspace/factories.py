"""A workspace client for the tests, with the identities callers really have,
and teams built through the service's own RPCs.

Users are fresh UUIDs with tokens signed by the suite's secret, the way auth
signs them; they need no account in auth unless a test reads names or
e-mail addresses (then `registered_user` signs one up through auth).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field

import grpc
from omnihub.auth.v1 import auth_pb2, auth_pb2_grpc
from omnihub.billing.v1 import billing_pb2, billing_pb2_grpc
from omnihub.workspace.v1 import workspace_pb2, workspace_pb2_grpc

from libs.config import Settings
from libs.errors import DomainError
from libs.grpc.identity import AUTHORIZATION_KEY, INTERNAL_TOKEN_KEY
from libs.grpc.status import from_rpc_error
from libs.tokens import Audience, InternalTokenSource, TokenSigner

Metadata = tuple[tuple[str, str], ...]

CREDIT = 1_000_000
PASSWORD = "a-good-password"


def new_user() -> str:
    return str(uuid.uuid4())


def new_key() -> str:
    return f"test:{uuid.uuid4()}"


def user_account(user_id: str) -> billing_pb2.AccountRef:
    return billing_pb2.AccountRef(
        owner_type=billing_pb2.OWNER_TYPE_USER, owner_id=user_id
    )


def pool_account(workspace_id: str) -> billing_pb2.AccountRef:
    return billing_pb2.AccountRef(
        owner_type=billing_pb2.OWNER_TYPE_WORKSPACE, owner_id=workspace_id
    )


def allocation_account(membership_id: str) -> billing_pb2.AccountRef:
    return billing_pb2.AccountRef(
        owner_type=billing_pb2.OWNER_TYPE_MEMBER, owner_id=membership_id
    )


class WorkspaceApi:
    """The workspace stub, plus billing and auth stubs to set up and check."""

    def __init__(self, settings: Settings) -> None:
        self.signer = TokenSigner(settings.signing_secret())
        self._internal = InternalTokenSource(self.signer, "tests", 300)
        self._channels = [
            grpc.aio.insecure_channel(settings.workspace_address),
            grpc.aio.insecure_channel(settings.billing_address),
            grpc.aio.insecure_channel(settings.auth_address),
        ]
        self.stub = workspace_pb2_grpc.WorkspaceServiceStub(self._channels[0])
        self.billing = billing_pb2_grpc.BillingServiceStub(self._channels[1])
        self.auth = auth_pb2_grpc.AuthServiceStub(self._channels[2])

    @property
    def service(self) -> Metadata:
        """Another OmniHub service calling (an internal token only)."""
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

    # Set-up

    async def create_workspace(self, owner: str, name: str = "Team") -> str:
        reply = await self.stub.CreateWorkspace(
            workspace_pb2.CreateWorkspaceRequest(name=name), metadata=self.user(owner)
        )
        return str(reply.workspace.id)

    async def invite(self, workspace_id: str, inviter: str, email: str = "") -> str:
        reply = await self.stub.CreateInvite(
            workspace_pb2.CreateInviteRequest(workspace_id=workspace_id, email=email),
            metadata=self.user(inviter),
        )
        return str(reply.token)

    async def accept(self, token: str, user: str) -> workspace_pb2.AcceptInviteResponse:
        return await self.stub.AcceptInvite(
            workspace_pb2.AcceptInviteRequest(token=token), metadata=self.user(user)
        )

    async def join(self, workspace_id: str, inviter: str, user: str) -> None:
        await self.accept(await self.invite(workspace_id, inviter), user)

    async def set_role(
        self, workspace_id: str, by: str, user_id: str, role: str
    ) -> None:
        await self.stub.UpdateMemberRole(
            workspace_pb2.UpdateMemberRoleRequest(
                workspace_id=workspace_id, user_id=user_id, role=role
            ),
            metadata=self.user(by),
        )

    async def update(
        self, workspace_id: str, by: str, **fields: object
    ) -> workspace_pb2.Workspace:
        privacy = fields.pop("privacy", None)
        request = workspace_pb2.UpdateWorkspaceRequest(
            workspace_id=workspace_id,
            privacy_settings=workspace_pb2.PrivacySettings(**privacy or {}),  # type: ignore[arg-type]
            **fields,  # type: ignore[arg-type]
        )
        reply = await self.stub.UpdateWorkspace(request, metadata=self.user(by))
        return reply.workspace

    async def workspace(self, workspace_id: str, by: str) -> workspace_pb2.Workspace:
        reply = await self.stub.GetWorkspace(
            workspace_pb2.GetWorkspaceRequest(workspace_id=workspace_id),
            metadata=self.user(by),
        )
        return reply.workspace

    async def members(
        self, workspace_id: str, by: str, page_size: int = 100
    ) -> list[workspace_pb2.Member]:
        reply = await self.stub.ListMembers(
            workspace_pb2.ListMembersRequest(
                workspace_id=workspace_id, page_size=page_size
            ),
            metadata=self.user(by),
        )
        return list(reply.members)

    async def membership_id(self, workspace_id: str, by: str, user_id: str) -> str:
        found = [
            m for m in await self.members(workspace_id, by) if m.user_id == user_id
        ]
        return str(found[0].id)

    # Credits

    async def fund(self, user_id: str, credits: int) -> None:
        """Give a user credits of their own, as a grant from the platform."""
        await self.billing.Grant(
            billing_pb2.GrantRequest(
                account=user_account(user_id),
                amount_micros=credits * CREDIT,
                idempotency_key=new_key(),
                reason="Test funds",
            ),
            metadata=self.service,
        )

    async def balance(self, account: billing_pb2.AccountRef) -> int:
        reply = await self.billing.GetBalance(
            billing_pb2.GetBalanceRequest(account=account), metadata=self.service
        )
        return int(reply.balance_micros)

    async def add_credits(
        self, workspace_id: str, by: str, credits: int, request_id: str | None = None
    ) -> workspace_pb2.AddCreditsResponse:
        return await self.stub.AddCredits(
            workspace_pb2.AddCreditsRequest(
                workspace_id=workspace_id,
                amount_micros=credits * CREDIT,
                request_id=request_id or new_key(),
            ),
            metadata=self.user(by),
        )

    async def allocate(
        self,
        workspace_id: str,
        by: str,
        user_id: str,
        credits: int,
        request_id: str | None = None,
    ) -> workspace_pb2.AllocateCreditsResponse:
        return await self.stub.AllocateCredits(
            workspace_pb2.AllocateCreditsRequest(
                workspace_id=workspace_id,
                user_id=user_id,
                amount_micros=credits * CREDIT,
                request_id=request_id or new_key(),
            ),
            metadata=self.user(by),
        )

    async def charge(
        self, account: billing_pb2.AccountRef, credits: int, **tags: str
    ) -> None:
        """What a generation does: hold on an account, then capture it all."""
        hold = await self.billing.Hold(
            billing_pb2.HoldRequest(
                account=account,
                amount_micros=credits * CREDIT,
                idempotency_key=new_key(),
                reason="Test work",
                tags=tags,
            ),
            metadata=self.service,
        )
        await self.billing.Capture(
            billing_pb2.CaptureRequest(
                hold_id=hold.hold_id,
                amount_micros=credits * CREDIT,
                idempotency_key=new_key(),
            ),
            metadata=self.service,
        )

    # Accounts in auth

    async def registered_user(self, name: str = "Test User") -> tuple[str, str]:
        """Sign a user up through auth; returns their id and e-mail address.
        Sign-up also makes their personal workspace (the auth outbox)."""
        email = f"ws-{uuid.uuid4().hex[:12]}@example.com"
        reply = await self.auth.Register(
            auth_pb2.RegisterRequest(email=email, password=PASSWORD, name=name),
            metadata=self.service,
        )
        return str(reply.user.id), email


@dataclass
class Team:
    """A team workspace with one member of every kind, and an outsider."""

    workspace_id: str
    owner: str = field(default_factory=new_user)
    admin: str = field(default_factory=new_user)
    admin2: str = field(default_factory=new_user)
    member: str = field(default_factory=new_user)
    member2: str = field(default_factory=new_user)
    outsider: str = field(default_factory=new_user)

    def by_role(self, role: str) -> str:
        user: str = getattr(self, role)
        return user


async def build_team(api: WorkspaceApi, **privacy: str) -> Team:
    owner = new_user()
    team = Team(await api.create_workspace(owner), owner=owner)
    for user in (team.admin, team.admin2, team.member, team.member2):
        await api.join(team.workspace_id, owner, user)
    for user in (team.admin, team.admin2):
        await api.set_role(team.workspace_id, owner, user, "admin")
    if privacy:
        await api.update(team.workspace_id, owner, privacy=privacy)
    return team


async def failure(call: Awaitable[object]) -> tuple[grpc.StatusCode, DomainError]:
    """The status and domain error of a call that must fail."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code(), from_rpc_error(error)
    raise AssertionError("the call succeeded")
