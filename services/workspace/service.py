"""Business rules of the workspace service. Functions take a database
session and never commit; the servicer owns the transaction.

Who may do what (`services.workspace.roles.may`; every cell is tested in
tests/services/workspace/test_permissions.py). A caller who is not a member
gets NOT_FOUND for every workspace action, so workspace ids reveal nothing;
a member without the right gets PERMISSION_DENIED.

| action                        | owner     | admin            | member          |
| ----------------------------- | --------- | ---------------- | --------------- |
| view it, its members, usage   | yes       | yes              | yes             |
| rename                        | yes       | yes              | no              |
| credit mode, privacy settings | yes       | no               | no              |
| delete (never a personal one) | yes       | no               | no              |
| transfer ownership            | yes       | no               | no              |
| invite; list, revoke invites  | yes       | invite: admins,  | invite: members |
|                               |           | members          |                 |
| make a member an admin        | yes       | admin: promote   | no              |
| make an admin a member        | yes       | no               | no              |
| remove a member               | yes       | yes              | no              |
| remove an admin               | yes       | no               | no              |
| leave                         | no (*)    | yes              | yes             |
| add own credits to the pool   | yes       | no               | no              |
| allocate pool credits         | unless    | allocate: admins | no              |
|                               | allocate: |                  |                 |
|                               | none      |                  |                 |

"invite: X" means whoCanInvite is X, "admin: promote" whoCanBeAdmin is
admins_can_promote, "allocate: X" whoCanAllocateCredits is X.
(*) The owner transfers ownership first (FAILED_PRECONDITION). Nobody
removes the owner or changes the owner's role; ownership moves only by
transfer, and there is always exactly one owner. Anyone holding an invite
token may preview it; any signed-in user may accept it, and when it is bound
to an e-mail address only the account with that address. The defaults are
whoCanInvite `admins`, whoCanAllocateCredits `owner_only`, whoCanBeAdmin
`owner_only`.

Visibility (`chatVisibility`, `imageVisibility`, `videoVisibility`):
`private` the author alone sees their items, `members` every member does,
`public` anyone does. Other services ask through CheckVisibility.

A personal workspace pays with each member's own credits: it has no pool,
no allocations and no credit mode to change, it cannot be deleted and its
ownership cannot be transferred.

Credits: a team workspace in `shared` mode pays from its pool, then from a
member's allocation, then from the member's own credits; in `individual`
mode from the member's allocation, then their own credits (ResolvePayer).
Allocations are made in `individual` mode only. Removing a member, or a
member leaving, returns their allocation to the pool; deleting a workspace
returns the pool and every allocation to the owner's own credits.
"""

from __future__ import annotations

import hashlib
import secrets
import unicodedata
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy.ext.asyncio import AsyncSession

from libs.errors import (
    Conflict,
    FailedPrecondition,
    InsufficientCredits,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from libs.logs import get_logger
from services.workspace import repository
from services.workspace.directory import Person, UserDirectory
from services.workspace.ledger import (
    AccountRef,
    Ledger,
    allocation_account,
    pool_account,
    user_account,
)
from services.workspace.models import (
    ASSET_KINDS,
    DEFAULT_PROJECT_COLOR,
    Invite,
    Project,
    ProjectAsset,
)
from services.workspace.repository import (
    Lock,
    MemberRecord,
    MembershipRow,
    WorkspaceRecord,
)
from services.workspace.roles import (
    ADMIN,
    ASSIGNABLE_ROLES,
    CONTENT_TYPES,
    DEFAULT_PRIVACY,
    MEMBER,
    OWNER,
    Action,
    can_see,
    changed_privacy,
    complete_privacy,
    may,
)

log = get_logger(__name__)

MAX_NAME_LENGTH = 100
PERSONAL_SUFFIX = "'s Workspace"
TEAM_CREDIT_MODES = ("shared", "individual")
DEFAULT_WORKSPACE_PAGE = 100
MAX_WORKSPACE_PAGE = 100
DEFAULT_MEMBER_PAGE = 50
MAX_MEMBER_PAGE = 100
MAX_OPEN_INVITES = 100
INVITE_LIFETIME = timedelta(days=7)
MAX_EMAIL_LENGTH = 254
MAX_TOKEN_LENGTH = 128
MAX_REQUEST_ID_LENGTH = 128
# 10^15 micro-credits is a billion credits, billing's own ceiling.
MAX_AMOUNT_MICROS = 10**15

NO_SUCH_WORKSPACE = "No such workspace."
NO_SUCH_MEMBER = "No such member in this workspace."
NO_SUCH_INVITE = "This invite does not exist or is no longer valid."


@dataclass(frozen=True)
class WorkspaceView:
    """A workspace as one of its members sees it."""

    workspace: WorkspaceRecord
    role: str
    member_count: int
    pool: int = 0
    allocated: int = 0

    @property
    def privacy(self) -> dict[str, str]:
        return complete_privacy(self.workspace.privacy_settings)

    @property
    def is_default(self) -> bool:
        """The member's own personal workspace (they may be a guest in
        someone else's)."""
        return self.workspace.is_personal and self.role == OWNER


@dataclass(frozen=True)
class WorkspacePage:
    workspaces: list[WorkspaceView]
    next_page_token: str


@dataclass(frozen=True)
class WorkspaceUpdate:
    """What to change; None (or an empty privacy value) keeps a field."""

    name: str | None = None
    credit_mode: str | None = None
    privacy: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MemberView:
    member: MemberRecord
    allocated: int
    person: Person | None


@dataclass(frozen=True)
class MemberPage:
    members: list[MemberView]
    next_page_token: str


@dataclass(frozen=True)
class CreatedInvite:
    invite: Invite
    token: str


@dataclass(frozen=True)
class InvitePreview:
    workspace_name: str
    inviter_name: str
    email_bound: bool
    expires_at: datetime


@dataclass(frozen=True)
class Joined:
    workspace_id: str
    role: str


@dataclass(frozen=True)
class PoolTopUp:
    pool: int
    personal: int


@dataclass(frozen=True)
class Allocation:
    pool: int
    allocated: int


@dataclass(frozen=True)
class TypeUsage:
    type: str
    count: int
    total: int


@dataclass(frozen=True)
class MemberUsage:
    user_id: str
    person: Person | None
    count: int
    total: int


@dataclass(frozen=True)
class Usage:
    pool: int
    total: int
    by_type: list[TypeUsage]
    by_member: list[MemberUsage]


@dataclass(frozen=True)
class PersonalWorkspace:
    workspace_id: str
    created: bool


@dataclass
class UserDataDeleted:
    left_workspaces: int = 0
    transferred_workspaces: int = 0
    deleted_workspaces: int = 0
    deleted_projects: int = 0
    deleted_invites: int = 0


@dataclass(frozen=True)
class Payer:
    account: AccountRef
    source: str
    balance: int


@dataclass(frozen=True)
class PayerChoice:
    payers: list[Payer]
    # The first payer holding the whole amount; None if none does.
    covering_index: int | None
    tags: dict[str, str]


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _clean_name(name: str) -> str:
    cleaned = name.strip()
    if not 1 <= len(cleaned) <= MAX_NAME_LENGTH:
        raise InvalidArgument.for_field(
            "name", f"Enter a workspace name of 1 to {MAX_NAME_LENGTH} characters."
        )
    if any(unicodedata.category(char) == "Cc" for char in cleaned):
        raise InvalidArgument.for_field(
            "name", "A workspace name cannot contain control characters."
        )
    return cleaned


def _clean_email(email: str) -> str | None:
    cleaned = email.strip().lower()
    if not cleaned:
        return None
    local, at, domain = cleaned.partition("@")
    if (
        len(cleaned) > MAX_EMAIL_LENGTH
        or not at
        or not local
        or "." not in domain
        or any(char.isspace() or char == "@" for char in local + domain)
    ):
        raise InvalidArgument.for_field("email", "Enter a valid e-mail address.")
    return cleaned


def _check_amount(amount: int) -> None:
    if not 1 <= amount <= MAX_AMOUNT_MICROS:
        raise InvalidArgument.for_field(
            "amount_micros",
            f"amount_micros must be between 1 and {MAX_AMOUNT_MICROS}.",
        )


def _check_request_id(request_id: str) -> None:
    if (
        not 1 <= len(request_id) <= MAX_REQUEST_ID_LENGTH
        or not request_id.isprintable()
    ):
        raise InvalidArgument.for_field(
            "request_id",
            f"request_id must be 1 to {MAX_REQUEST_ID_LENGTH} printable characters.",
        )


def _require(member: MemberRecord, workspace: WorkspaceRecord, action: Action) -> None:
    if not may(member.role, action, complete_privacy(workspace.privacy_settings)):
        raise PermissionDenied(f"Your role in this workspace may not {action.value}.")


def _refuse_personal(workspace: WorkspaceRecord, what: str) -> None:
    if workspace.is_personal:
        raise FailedPrecondition(f"A personal workspace cannot {what}.")


# Page tokens are the listing position of the last row returned.


# Whole microseconds since the epoch, in integers: a float would round some
# moments to a neighbouring microsecond and skip or repeat a row.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def _micros(moment: datetime) -> int:
    return (moment - EPOCH) // MICROSECOND


def _moment(micros: int) -> datetime:
    return EPOCH + micros * MICROSECOND


def _bad_token() -> InvalidArgument:
    return InvalidArgument.for_field(
        "page_token", "page_token is not one this service issued."
    )


def _workspace_token(row: MembershipRow) -> str:
    workspace = row.workspace
    own_personal = int(workspace.is_personal and row.member.role == OWNER)
    return f"{own_personal}.{_micros(workspace.created_at)}.{workspace.id}"


def _workspace_position(token: str) -> tuple[bool, datetime, uuid.UUID] | None:
    if not token:
        return None
    personal, _, rest = token.partition(".")
    micros, _, raw_id = rest.partition(".")
    parsed = _uuid(raw_id)
    if personal not in ("0", "1") or not _is_micros(micros) or parsed is None:
        raise _bad_token()
    return personal == "1", _moment(int(micros)), parsed


def _is_micros(text: str) -> bool:
    """ASCII digits ("²".isdigit() holds) of a moment before the year 5000,
    so that neither int() nor the datetime sum can raise."""
    return text.isascii() and text.isdigit() and len(text) <= 17


def _member_token(member: MemberRecord) -> str:
    return f"{member.role_rank}.{_micros(member.joined_at)}.{member.id}"


def _member_position(token: str) -> tuple[int, datetime, uuid.UUID] | None:
    if not token:
        return None
    rank, _, rest = token.partition(".")
    micros, _, raw_id = rest.partition(".")
    parsed = _uuid(raw_id)
    if rank not in ("0", "1", "2") or not _is_micros(micros) or parsed is None:
        raise _bad_token()
    return int(rank), _moment(int(micros)), parsed


def _page_size(requested: int, default: int, maximum: int) -> int:
    if requested < 0:
        raise InvalidArgument.for_field("page_size", "page_size may not be negative.")
    return min(requested or default, maximum)


class WorkspaceService:
    def __init__(self, ledger: Ledger, directory: UserDirectory) -> None:
        self._ledger = ledger
        self._directory = directory

    # Workspaces

    async def list_workspaces(
        self, db: AsyncSession, user_id: str, page_size: int, page_token: str
    ) -> WorkspacePage:
        size = _page_size(page_size, DEFAULT_WORKSPACE_PAGE, MAX_WORKSPACE_PAGE)
        after = _workspace_position(page_token)
        caller = _uuid(user_id)
        if caller is None:
            return WorkspacePage([], "")
        rows = await repository.workspaces_page(db, caller, after, size + 1)
        views = await self._views(rows[:size])
        more = len(rows) > size
        return WorkspacePage(views, _workspace_token(rows[size - 1]) if more else "")

    async def create_workspace(
        self, db: AsyncSession, user_id: str, name: str
    ) -> WorkspaceView:
        owner = _uuid(user_id)
        if owner is None:
            raise NotFound("No such user.")
        workspace = await repository.insert_workspace(
            db,
            name=_clean_name(name),
            owner_id=owner,
            is_personal=False,
            credit_mode="shared",
            privacy_settings=dict(DEFAULT_PRIVACY),
        )
        assert workspace is not None
        await repository.insert_member(db, workspace.id, owner, OWNER)
        log.info("workspace.created", workspace_id=str(workspace.id), owner_id=user_id)
        return WorkspaceView(workspace, OWNER, 1)

    async def get_workspace(
        self, db: AsyncSession, user_id: str, workspace_id: str
    ) -> WorkspaceView:
        workspace, member = await self._membership(db, user_id, workspace_id)
        return await self._view(db, workspace, member)

    async def update_workspace(
        self,
        db: AsyncSession,
        user_id: str,
        workspace_id: str,
        update: WorkspaceUpdate,
    ) -> WorkspaceView:
        workspace, member = await self._membership(
            db, user_id, workspace_id, Lock.NO_KEY_UPDATE
        )
        configures = update.credit_mode is not None or any(update.privacy.values())
        if update.name is not None:
            _require(member, workspace, Action.RENAME)
        if configures:
            _require(member, workspace, Action.CONFIGURE)
        values = self._changes(workspace, update)
        if values:
            workspace = await repository.update_workspace(db, workspace.id, values)
            log.info(
                "workspace.updated", workspace_id=workspace_id, fields=sorted(values)
            )
        return await self._view(db, workspace, member)

    def _changes(
        self, workspace: WorkspaceRecord, update: WorkspaceUpdate
    ) -> dict[str, object]:
        values: dict[str, object] = {}
        if update.name is not None:
            values["name"] = _clean_name(update.name)
        if update.credit_mode is not None:
            _refuse_personal(workspace, "change its credit mode")
            if update.credit_mode not in TEAM_CREDIT_MODES:
                raise InvalidArgument.for_field(
                    "credit_mode", "credit_mode must be shared or individual."
                )
            values["credit_mode"] = update.credit_mode
        if any(update.privacy.values()):
            values["privacy_settings"] = changed_privacy(
                workspace.privacy_settings, update.privacy
            )
        return values

    async def delete_workspace(
        self, db: AsyncSession, user_id: str, workspace_id: str
    ) -> int:
        """Delete a team workspace; returns the credits given back to the
        owner (its pool and every member's allocation)."""
        workspace, member = await self._membership(
            db, user_id, workspace_id, Lock.UPDATE
        )
        _require(member, workspace, Action.DELETE)
        if str(workspace.owner_id) != str(member.user_id):
            # An ownership transfer committed while this call waited for the
            # lock: the locked workspace row, not the joined role, is current.
            raise PermissionDenied("Only the owner may delete the workspace.")
        _refuse_personal(workspace, "be deleted")
        accounts = [pool_account(workspace_id)] if workspace.has_pool else []
        accounts += [
            allocation_account(str(membership_id))
            for membership_id in await repository.allocated_membership_ids(
                db, workspace.id
            )
        ]
        await self._refuse_running_work(accounts)
        returned = 0
        owner = user_account(str(workspace.owner_id))
        for account in accounts:
            returned += await self._ledger.drain(
                account,
                owner,
                f"Credits of deleted workspace {workspace.name}",
                {"workspace_id": workspace_id},
            )
        await repository.delete_workspace(db, workspace.id)
        log.info(
            "workspace.deleted", workspace_id=workspace_id, returned_micros=returned
        )
        return returned

    async def _refuse_running_work(self, accounts: list[AccountRef]) -> None:
        """Credits held for running work would come back to an account
        nobody can reach any more; wait for the work to finish."""
        balances = await self._ledger.balances(accounts) if accounts else {}
        if any(balance.held > 0 for balance in balances.values()):
            raise FailedPrecondition(
                "Work paid from these credits is still running. Try again when "
                "it has finished."
            )

    # Members

    async def list_members(
        self,
        db: AsyncSession,
        user_id: str,
        workspace_id: str,
        page_size: int,
        page_token: str,
    ) -> MemberPage:
        workspace, _ = await self._membership(db, user_id, workspace_id)
        size = _page_size(page_size, DEFAULT_MEMBER_PAGE, MAX_MEMBER_PAGE)
        after = _member_position(page_token)
        rows = await repository.members_page(db, workspace.id, after, size + 1)
        page = rows[:size]
        people = await self._directory.people([str(m.user_id) for m in page])
        allocations = await self._allocations(workspace, page)
        members = [
            MemberView(m, allocations.get(str(m.id), 0), people.get(str(m.user_id)))
            for m in page
        ]
        more = len(rows) > size
        return MemberPage(members, _member_token(page[-1]) if more else "")

    async def _allocations(
        self, workspace: WorkspaceRecord, members: list[MemberRecord]
    ) -> dict[str, int]:
        accounts = [allocation_account(str(m.id)) for m in members if m.has_allocation]
        if not accounts:
            return {}
        balances = await self._ledger.balances(accounts)
        return {owner_id: b.balance for (_, owner_id), b in balances.items()}

    async def change_role(
        self,
        db: AsyncSession,
        user_id: str,
        workspace_id: str,
        target_user_id: str,
        role: str,
    ) -> str:
        workspace, member = await self._membership(
            db, user_id, workspace_id, Lock.KEY_SHARE
        )
        if role not in ASSIGNABLE_ROLES:
            raise InvalidArgument.for_field(
                "role",
                "Ownership moves only by transferring it."
                if role == OWNER
                else "role must be admin or member.",
            )
        _require(member, workspace, Action.PROMOTE if role == ADMIN else Action.DEMOTE)
        target = await self._target(db, workspace, target_user_id, Lock.NO_KEY_UPDATE)
        if target.role == OWNER:
            raise FailedPrecondition(
                "The owner's role changes only by transferring ownership."
            )
        if target.role != role:
            await repository.set_role(db, target.id, role)
            log.info(
                "workspace.role_changed",
                workspace_id=workspace_id,
                user_id=target_user_id,
                role=role,
            )
        return role

    async def remove_member(
        self,
        db: AsyncSession,
        user_id: str,
        workspace_id: str,
        target_user_id: str,
    ) -> int:
        """Remove a member; returns their allocation, moved back to the pool."""
        if target_user_id == user_id:
            return await self.leave(db, user_id, workspace_id)
        workspace, member = await self._membership(
            db, user_id, workspace_id, Lock.KEY_SHARE
        )
        _require(member, workspace, Action.REMOVE_MEMBER)
        target = await self._target(db, workspace, target_user_id, Lock.UPDATE)
        if target.role == OWNER:
            raise PermissionDenied("The owner cannot be removed from the workspace.")
        if target.role == ADMIN:
            _require(member, workspace, Action.REMOVE_ADMIN)
        return await self._end_membership(db, workspace, target)

    async def leave(self, db: AsyncSession, user_id: str, workspace_id: str) -> int:
        workspace, member = await self._membership(
            db, user_id, workspace_id, Lock.KEY_SHARE
        )
        if member.role == OWNER:
            raise FailedPrecondition(
                "The owner cannot leave. Transfer ownership to another member first."
            )
        own = await repository.member_of(db, workspace.id, member.user_id, Lock.UPDATE)
        if own is None:
            raise NotFound(NO_SUCH_WORKSPACE)
        return await self._end_membership(db, workspace, own)

    async def _end_membership(
        self, db: AsyncSession, workspace: WorkspaceRecord, member: MemberRecord
    ) -> int:
        returned = 0
        if member.has_allocation:
            allocation = allocation_account(str(member.id))
            await self._refuse_running_work([allocation])
            returned = await self._ledger.drain(
                allocation,
                pool_account(str(workspace.id)),
                "Allocation returned to the workspace pool",
                {"workspace_id": str(workspace.id), "member_id": str(member.user_id)},
            )
        await repository.delete_member(db, member.id)
        log.info(
            "workspace.member_removed",
            workspace_id=str(workspace.id),
            user_id=str(member.user_id),
            returned_micros=returned,
        )
        return returned

    async def transfer_ownership(
        self,
        db: AsyncSession,
        user_id: str,
        workspace_id: str,
        target_user_id: str,
    ) -> None:
        workspace, member = await self._membership(
            db, user_id, workspace_id, Lock.NO_KEY_UPDATE
        )
        _require(member, workspace, Action.TRANSFER_OWNERSHIP)
        _refuse_personal(workspace, "be handed to someone else")
        target = await self._target(db, workspace, target_user_id, Lock.NO_KEY_UPDATE)
        if target.id == member.id:
            raise InvalidArgument.for_field(
                "user_id", "You already own this workspace."
            )
        # Demote first: a workspace has one owner at every moment.
        await repository.set_role(db, member.id, ADMIN)
        await repository.set_role(db, target.id, OWNER)
        await repository.update_workspace(
            db, workspace.id, {"owner_id": target.user_id}
        )
        log.info(
            "workspace.ownership_transferred",
            workspace_id=workspace_id,
            from_user_id=user_id,
            to_user_id=target_user_id,
        )

    # Invites

    async def create_invite(
        self, db: AsyncSession, user_id: str, workspace_id: str, email: str
    ) -> CreatedInvite:
        workspace, member = await self._membership(
            db, user_id, workspace_id, Lock.KEY_SHARE
        )
        _require(member, workspace, Action.INVITE)
        address = _clean_email(email)
        if address is not None:
            await self._refuse_member_address(db, workspace, address)
            await repository.expire_stale_invites(db, workspace.id, address)
        if await repository.open_invite_count(db, workspace.id) >= MAX_OPEN_INVITES:
            raise FailedPrecondition(
                f"A workspace may have {MAX_OPEN_INVITES} open invites. Withdraw "
                "some first."
            )
        token = secrets.token_urlsafe(32)
        invite = await repository.insert_invite(
            db,
            workspace_id=workspace.id,
            token_hash=hash_token(token),
            email=address,
            invited_by=member.user_id,
            expires_at=datetime.now(UTC) + INVITE_LIFETIME,
        )
        if invite is None:
            raise Conflict(
                "This address already has an open invite. Withdraw it to send "
                "a new one."
            )
        log.info(
            "workspace.invite_created",
            workspace_id=workspace_id,
            invite_id=str(invite.id),
            email_bound=address is not None,
        )
        return CreatedInvite(invite, token)

    async def _refuse_member_address(
        self, db: AsyncSession, workspace: WorkspaceRecord, address: str
    ) -> None:
        invitee = await self._directory.by_email(address)
        invitee_id = _uuid(invitee.id) if invitee else None
        if invitee_id and await repository.member_of(db, workspace.id, invitee_id):
            raise Conflict("This person is already a member of the workspace.")

    async def list_invites(
        self, db: AsyncSession, user_id: str, workspace_id: str
    ) -> list[Invite]:
        workspace, member = await self._membership(db, user_id, workspace_id)
        _require(member, workspace, Action.INVITE)
        return await repository.open_invites(db, workspace.id, MAX_OPEN_INVITES)

    async def revoke_invite(
        self, db: AsyncSession, user_id: str, workspace_id: str, invite_id: str
    ) -> None:
        workspace, member = await self._membership(
            db, user_id, workspace_id, Lock.KEY_SHARE
        )
        _require(member, workspace, Action.INVITE)
        parsed = _uuid(invite_id)
        invite = (
            await repository.revoke_invite(db, workspace.id, parsed) if parsed else None
        )
        if invite is None:
            raise NotFound("No such invite in this workspace.")
        if invite.status == "accepted":
            raise FailedPrecondition("This invite has already been accepted.")
        log.info(
            "workspace.invite_revoked", workspace_id=workspace_id, invite_id=invite_id
        )

    async def preview_invite(self, db: AsyncSession, token: str) -> InvitePreview:
        invite, workspace = await self._invite(db, token)
        _require_open(invite)
        inviter = await self._directory.person(str(invite.invited_by))
        return InvitePreview(
            workspace_name=workspace.name,
            inviter_name=inviter.name if inviter else "",
            email_bound=invite.email is not None,
            expires_at=invite.expires_at,
        )

    async def accept_invite(self, db: AsyncSession, user_id: str, token: str) -> Joined:
        """Join the caller to the invite's workspace. Acceptances of one token
        queue on its row: the first admits its user, the others find it used;
        the same user accepting again gets the same answer."""
        invite, workspace = await self._invite(db, token, lock=True)
        caller = _uuid(user_id)
        if caller is None:
            raise NotFound(NO_SUCH_INVITE)
        if invite.status == "accepted" and invite.accepted_by == caller:
            already = await repository.member_of(db, workspace.id, caller)
            if already is not None:
                return Joined(str(workspace.id), already.role)
        _require_open(invite)
        if invite.email is not None:
            await self._require_invited_address(user_id, invite.email)
        if await repository.insert_member(db, workspace.id, caller, MEMBER) is None:
            raise Conflict("You are already a member of this workspace.")
        await repository.accept_invite(db, invite.id, caller)
        log.info(
            "workspace.invite_accepted",
            workspace_id=str(workspace.id),
            invite_id=str(invite.id),
            user_id=user_id,
        )
        return Joined(str(workspace.id), MEMBER)

    async def _invite(
        self, db: AsyncSession, token: str, *, lock: bool = False
    ) -> tuple[Invite, WorkspaceRecord]:
        found = None
        if 0 < len(token) <= MAX_TOKEN_LENGTH:
            found = await repository.invite_by_token_hash(
                db, hash_token(token), lock=lock
            )
        if found is None:
            raise NotFound(NO_SUCH_INVITE)
        return found

    async def _require_invited_address(self, user_id: str, email: str) -> None:
        person = await self._directory.person(user_id)
        if person is None or person.email.lower() != email:
            raise PermissionDenied(
                "This invite is for another e-mail address. Sign in with the "
                "invited address to accept it."
            )

    # Credits

    async def add_credits(
        self,
        db: AsyncSession,
        user_id: str,
        workspace_id: str,
        amount: int,
        request_id: str,
    ) -> PoolTopUp:
        """Move the caller's own credits into the pool, once per request id."""
        workspace, member = await self._membership(
            db, user_id, workspace_id, Lock.KEY_SHARE
        )
        _require(member, workspace, Action.ADD_CREDITS)
        _refuse_personal(workspace, "hold pooled credits")
        _check_amount(amount)
        _check_request_id(request_id)
        await repository.mark_pool_funded(db, workspace.id)
        moved = await self._ledger.transfer(
            user_account(user_id),
            pool_account(workspace_id),
            amount,
            f"workspace:add:{workspace_id}:{user_id}:{request_id}",
            f"Added to the pool of workspace {workspace.name}",
            {"workspace_id": workspace_id, "member_id": user_id},
        )
        log.info(
            "workspace.credits_added", workspace_id=workspace_id, amount_micros=amount
        )
        return PoolTopUp(pool=moved.target_after, personal=moved.source_after)

    async def allocate_credits(
        self,
        db: AsyncSession,
        user_id: str,
        workspace_id: str,
        target_user_id: str,
        amount: int,
        request_id: str,
    ) -> Allocation:
        """Move pool credits to a member's allocation, once per request id."""
        workspace, member = await self._membership(
            db, user_id, workspace_id, Lock.KEY_SHARE
        )
        _require(member, workspace, Action.ALLOCATE_CREDITS)
        _refuse_personal(workspace, "allocate credits")
        if workspace.credit_mode != "individual":
            raise FailedPrecondition(
                "Credits are allocated in individual mode only. Switch the "
                "workspace's credit mode first."
            )
        _check_amount(amount)
        _check_request_id(request_id)
        target = await self._target(db, workspace, target_user_id, Lock.KEY_SHARE)
        await repository.mark_allocation_funded(db, target.id)
        try:
            moved = await self._ledger.transfer(
                pool_account(workspace_id),
                allocation_account(str(target.id)),
                amount,
                f"workspace:allocate:{workspace_id}:{user_id}:{request_id}",
                "Allocation from the workspace pool",
                {"workspace_id": workspace_id, "member_id": target_user_id},
            )
        except InsufficientCredits as short:
            available = short.context.get("available", "0")
            raise InsufficientCredits(
                f"The workspace pool has {available} credits, not enough for this.",
                context=short.context,
            ) from None
        log.info(
            "workspace.credits_allocated",
            workspace_id=workspace_id,
            user_id=target_user_id,
            amount_micros=amount,
        )
        return Allocation(pool=moved.source_after, allocated=moved.target_after)

    async def usage(self, db: AsyncSession, user_id: str, workspace_id: str) -> Usage:
        workspace, _ = await self._membership(db, user_id, workspace_id)
        groups = await self._ledger.usage(workspace_id)
        pool = 0
        if workspace.has_pool:
            pool = (await self._ledger.balance(pool_account(workspace_id))).balance
        by_type: dict[str, TypeUsage] = {}
        by_member: dict[str, MemberUsage] = {}
        for group in groups:
            kind = by_type.get(group.usage_type, TypeUsage(group.usage_type, 0, 0))
            by_type[group.usage_type] = TypeUsage(
                kind.type, kind.count + group.count, kind.total + group.captured
            )
            who = by_member.get(
                group.member_id, MemberUsage(group.member_id, None, 0, 0)
            )
            by_member[group.member_id] = MemberUsage(
                who.user_id, None, who.count + group.count, who.total + group.captured
            )
        people = await self._directory.people(
            [uid for uid in by_member if _uuid(uid) is not None]
        )
        return Usage(
            pool=pool,
            total=sum(kind.total for kind in by_type.values()),
            by_type=sorted(by_type.values(), key=lambda k: -k.total),
            by_member=[
                MemberUsage(m.user_id, people.get(m.user_id), m.count, m.total)
                for m in sorted(by_member.values(), key=lambda m: -m.total)
            ],
        )

    # Internal: for the auth service and the services that charge

    async def ensure_personal_workspace(
        self, db: AsyncSession, user_id: str
    ) -> PersonalWorkspace:
        """The user's personal workspace, created on the first call. Calls
        racing to create it wait on the unique index; one creates it and the
        others return it."""
        owner = _uuid(user_id)
        if owner is None:
            raise InvalidArgument.for_field("user_id", "user_id must be a UUID.")
        existing = await repository.personal_workspace_of(db, owner)
        if existing is not None:
            return PersonalWorkspace(str(existing.id), created=False)
        person = await self._directory.person(user_id)
        if person is None:
            raise NotFound("No such user.")
        name = person.name[: MAX_NAME_LENGTH - len(PERSONAL_SUFFIX)] + PERSONAL_SUFFIX
        workspace = await repository.insert_workspace(
            db,
            name=name,
            owner_id=owner,
            is_personal=True,
            credit_mode="user",
            privacy_settings=dict(DEFAULT_PRIVACY),
        )
        if workspace is None:
            existing = await repository.personal_workspace_of(db, owner)
            assert existing is not None
            return PersonalWorkspace(str(existing.id), created=False)
        await repository.insert_member(db, workspace.id, owner, OWNER)
        log.info("workspace.personal_created", workspace_id=str(workspace.id))
        return PersonalWorkspace(str(workspace.id), created=True)

    async def resolve_payer(
        self, db: AsyncSession, workspace_id: str, user_id: str, amount: int
    ) -> PayerChoice:
        """The accounts that pay for `user_id`'s work, in order, with their
        balances and the first that holds `amount`."""
        payer = _uuid(user_id)
        if payer is None:
            raise InvalidArgument.for_field("user_id", "user_id must be a UUID.")
        if not 0 <= amount <= MAX_AMOUNT_MICROS:
            raise InvalidArgument.for_field(
                "amount_micros",
                f"amount_micros must be between 0 and {MAX_AMOUNT_MICROS}.",
            )
        sources = [("personal", user_account(str(payer)))]
        tags: dict[str, str] = {}
        if workspace_id:
            workspace, member = await self._membership(db, user_id, workspace_id)
            sources = _payment_order(workspace, member) + sources
            tags = {"workspace_id": str(workspace.id), "member_id": str(payer)}
        balances = await self._ledger.balances([account for _, account in sources])
        payers = [
            Payer(
                account,
                source,
                balances[(account.owner_type, account.owner_id)].balance,
            )
            for source, account in sources
        ]
        covering = next(
            (index for index, found in enumerate(payers) if found.balance >= amount),
            None,
        )
        return PayerChoice(payers, covering, tags)

    async def check_visibility(
        self,
        db: AsyncSession,
        workspace_id: str,
        viewer_id: str,
        author_id: str,
        content_type: str,
    ) -> bool:
        if content_type not in CONTENT_TYPES:
            raise InvalidArgument.for_field(
                "content_type", "content_type must be chat, image or video."
            )
        parsed = _uuid(workspace_id)
        workspace = await repository.workspace_by_id(db, parsed) if parsed else None
        if workspace is None:
            raise NotFound(NO_SUCH_WORKSPACE)
        viewer = _uuid(viewer_id) if viewer_id else None
        is_member = viewer is not None and (
            await repository.member_of(db, workspace.id, viewer) is not None
        )
        setting = complete_privacy(workspace.privacy_settings)[
            f"{content_type}_visibility"
        ]
        return can_see(
            setting,
            viewer_is_author=viewer is not None and viewer == _uuid(author_id),
            viewer_is_member=is_member,
        )

    # Shared steps

    # A deleted user (the admin service's user deletion)

    async def delete_user_data(self, db: AsyncSession, user_id: str) -> UserDataDeleted:
        """Take the user out of every workspace under the members' own rules,
        then delete their personal workspace, projects and invites."""
        user = _uuid(user_id)
        if user is None:
            raise InvalidArgument.for_field("user_id", "user_id must be a UUID.")
        outcome = UserDataDeleted()
        outcome.deleted_projects = await repository.delete_projects_of_owner(db, user)
        outcome.deleted_invites = await repository.delete_invites_of(db, user)
        for workspace_id in await repository.workspace_ids_of_member(db, user):
            await self._withdraw(db, workspace_id, user, outcome)
        personal = await repository.personal_workspace_of(db, user)
        if personal is not None:
            # No pool and no allocations: nothing to pay back.
            await repository.delete_workspace(db, personal.id)
            outcome.deleted_workspaces += 1
        log.info("workspace.user_data_deleted", user_id=user_id, **vars(outcome))
        return outcome

    async def _withdraw(
        self,
        db: AsyncSession,
        workspace_id: uuid.UUID,
        user: uuid.UUID,
        outcome: UserDataDeleted,
    ) -> None:
        """Leave one workspace; an owner hands it on first, or deletes it
        when nobody else is in it. Their personal one waits for the end."""
        found = await repository.membership(db, workspace_id, user, Lock.UPDATE)
        if found is None:
            return
        workspace, member = found
        if workspace.is_personal and workspace.owner_id == user:
            return
        if member.role == OWNER:
            heir = await repository.successor(db, workspace.id, Lock.NO_KEY_UPDATE)
            if heir is None:
                await self._delete_abandoned(db, workspace)
                outcome.deleted_workspaces += 1
                return
            await repository.set_role(db, member.id, ADMIN)
            await repository.set_role(db, heir.id, OWNER)
            await repository.update_workspace(
                db, workspace.id, {"owner_id": heir.user_id}
            )
            outcome.transferred_workspaces += 1
            log.info(
                "workspace.ownership_transferred",
                workspace_id=str(workspace.id),
                from_user_id=str(user),
                to_user_id=str(heir.user_id),
            )
        own = await repository.member_of(db, workspace.id, user, Lock.UPDATE)
        assert own is not None
        await self._end_membership(db, workspace, own)
        outcome.left_workspaces += 1

    async def _delete_abandoned(
        self, db: AsyncSession, workspace: WorkspaceRecord
    ) -> None:
        """Delete a team workspace its owner alone was in; its pool and
        allocations go to the owner's own credits, as on any deletion."""
        workspace_id = str(workspace.id)
        accounts = [pool_account(workspace_id)] if workspace.has_pool else []
        accounts += [
            allocation_account(str(membership_id))
            for membership_id in await repository.allocated_membership_ids(
                db, workspace.id
            )
        ]
        await self._refuse_running_work(accounts)
        owner = user_account(str(workspace.owner_id))
        for account in accounts:
            await self._ledger.drain(
                account,
                owner,
                f"Credits of deleted workspace {workspace.name}",
                {"workspace_id": workspace_id},
            )
        await repository.delete_workspace(db, workspace.id)
        log.info("workspace.deleted", workspace_id=workspace_id, reason="owner_deleted")

    async def _membership(
        self,
        db: AsyncSession,
        user_id: str,
        workspace_id: str,
        lock: Lock | None = None,
    ) -> tuple[WorkspaceRecord, MemberRecord]:
        """The workspace and the caller's membership; NOT_FOUND for anyone
        else, whether or not the workspace exists."""
        workspace = _uuid(workspace_id)
        caller = _uuid(user_id)
        found = None
        if workspace is not None and caller is not None:
            found = await repository.membership(db, workspace, caller, lock)
        if found is None:
            raise NotFound(NO_SUCH_WORKSPACE)
        return found

    async def _target(
        self, db: AsyncSession, workspace: WorkspaceRecord, user_id: str, lock: Lock
    ) -> MemberRecord:
        parsed = _uuid(user_id)
        target = (
            await repository.member_of(db, workspace.id, parsed, lock)
            if parsed
            else None
        )
        if target is None:
            raise NotFound(NO_SUCH_MEMBER)
        return target

    async def _view(
        self, db: AsyncSession, workspace: WorkspaceRecord, member: MemberRecord
    ) -> WorkspaceView:
        count = await repository.member_count(db, workspace.id)
        return (await self._views([MembershipRow(workspace, member, count)]))[0]

    async def _views(self, rows: list[MembershipRow]) -> list[WorkspaceView]:
        """Views with balances: one billing call for every funded pool and
        allocation of the caller's among `rows` (none if there are none)."""
        accounts: list[AccountRef] = []
        for row in rows:
            if row.workspace.has_pool:
                accounts.append(pool_account(str(row.workspace.id)))
            if row.member.has_allocation:
                accounts.append(allocation_account(str(row.member.id)))
        balances = await self._ledger.balances(accounts) if accounts else {}

        def balance_of(account: AccountRef) -> int:
            found = balances.get((account.owner_type, account.owner_id))
            return found.balance if found else 0

        return [
            WorkspaceView(
                row.workspace,
                row.member.role,
                row.member_count,
                pool=balance_of(pool_account(str(row.workspace.id))),
                allocated=balance_of(allocation_account(str(row.member.id))),
            )
            for row in rows
        ]


def _payment_order(
    workspace: WorkspaceRecord, member: MemberRecord
) -> list[tuple[str, AccountRef]]:
    """The workspace's accounts that pay before the member's own credits."""
    if workspace.is_personal:
        return []
    pool = ("workspace", pool_account(str(workspace.id)))
    allocation = ("allocated", allocation_account(str(member.id)))
    if workspace.credit_mode == "individual":
        return [allocation]
    return [pool, allocation]


def _require_open(invite: Invite) -> None:
    if invite.status == "revoked":
        raise NotFound("This invite was withdrawn.")
    if invite.status == "accepted":
        raise NotFound("This invite has already been used.")
    if invite.status == "expired" or invite.expires_at <= datetime.now(UTC):
        raise NotFound("This invite has expired. Ask for a new one.")


# Projects
#
# A project belongs to its owner, in a workspace the owner was a member of
# when making it (by default their personal one). The owner sees and changes
# it; the workspace's other members see it only while it is shared with the
# workspace, and of them only the workspace owner may change or delete it.
# Everyone else gets NOT_FOUND, so project ids reveal nothing. Assets are
# added by those who may change the project.

MAX_PROJECT_NAME = 100
MAX_DESCRIPTION = 2000
MAX_ASSET_TITLE = 200
MAX_URL_LENGTH = 2048
DEFAULT_PROJECT_PAGE = 50
MAX_PROJECT_PAGE = 100
NO_SUCH_PROJECT = "No such project."
_COLOR_DIGITS = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class ProjectView:
    project: Project
    asset_count: int


@dataclass(frozen=True)
class ProjectChanges:
    """The fields a caller may set; None keeps the current value."""

    name: str | None = None
    description: str | None = None
    color: str | None = None
    shared_with_workspace: bool | None = None


@dataclass(frozen=True)
class NewAsset:
    kind: str
    url: str
    generation_id: str
    title: str


@dataclass(frozen=True)
class SavedAsset:
    asset: ProjectAsset
    created: bool


def _project_name(name: str) -> str:
    cleaned = name.strip()
    if not 1 <= len(cleaned) <= MAX_PROJECT_NAME or not cleaned.isprintable():
        raise InvalidArgument.for_field(
            "name",
            f"Enter a project name of 1 to {MAX_PROJECT_NAME} printable characters.",
        )
    return cleaned


def _description(description: str) -> str:
    if len(description) > MAX_DESCRIPTION:
        raise InvalidArgument.for_field(
            "description",
            f"A description holds at most {MAX_DESCRIPTION} characters.",
        )
    return description


def _color(color: str) -> str:
    cleaned = color.strip().lower()
    if len(cleaned) != 7 or cleaned[0] != "#" or set(cleaned[1:]) - _COLOR_DIGITS:
        raise InvalidArgument.for_field("color", "Enter a colour like #8b5cf6.")
    return cleaned


def _asset_url(url: str) -> str:
    """Only web addresses: a data: or javascript: URL would be shown to every
    member who opens the project."""
    parts = urlsplit(url)
    if (
        len(url) > MAX_URL_LENGTH
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or any(char.isspace() or not char.isprintable() for char in url)
    ):
        raise InvalidArgument.for_field(
            "url",
            f"Enter an http(s) address of at most {MAX_URL_LENGTH} characters.",
        )
    return url


def _asset_values(asset: NewAsset) -> dict[str, object]:
    if asset.kind not in ASSET_KINDS:
        raise InvalidArgument.for_field(
            "kind", f"kind must be one of {', '.join(ASSET_KINDS)}."
        )
    generation_id = None
    if asset.generation_id:
        generation_id = _uuid(asset.generation_id)
        if generation_id is None:
            raise InvalidArgument.for_field(
                "generation_id", "generation_id must be a UUID."
            )
    if not asset.url and generation_id is None:
        raise InvalidArgument.for_field("url", "Enter the asset's address.")
    if len(asset.title) > MAX_ASSET_TITLE:
        raise InvalidArgument.for_field(
            "title", f"A title holds at most {MAX_ASSET_TITLE} characters."
        )
    return {
        "kind": asset.kind,
        "url": _asset_url(asset.url) if asset.url else None,
        "generation_id": generation_id,
        "title": asset.title.strip(),
    }


def _project_values(changes: ProjectChanges) -> dict[str, object]:
    """The columns to write, chosen here: request keys never name columns."""
    values: dict[str, object] = {}
    if changes.name is not None:
        values["name"] = _project_name(changes.name)
    if changes.description is not None:
        values["description"] = _description(changes.description)
    if changes.color is not None:
        values["color"] = _color(changes.color)
    if changes.shared_with_workspace is not None:
        values["shared_with_workspace"] = changes.shared_with_workspace
    return values


def _may_see(row: repository.ProjectRow, viewer: uuid.UUID) -> bool:
    project = row.project
    return project.owner_id == viewer or (
        project.shared_with_workspace and row.viewer_is_member
    )


def _may_change(row: repository.ProjectRow, viewer: uuid.UUID) -> bool:
    return row.project.owner_id == viewer or (
        _may_see(row, viewer) and row.workspace_owner_id == viewer
    )


class ProjectService:
    async def list_projects(
        self, db: AsyncSession, user_id: str, workspace_id: str, page_size: int
    ) -> list[ProjectView]:
        viewer = _uuid(user_id)
        workspace = _uuid(workspace_id) if workspace_id else None
        if viewer is None or (workspace_id and workspace is None):
            return []
        size = _page_size(page_size, DEFAULT_PROJECT_PAGE, MAX_PROJECT_PAGE)
        rows = await repository.visible_projects(db, viewer, workspace, size)
        return [ProjectView(project, count) for project, count in rows]

    async def create_project(
        self,
        db: AsyncSession,
        user_id: str,
        workspace_id: str,
        changes: ProjectChanges,
    ) -> ProjectView:
        owner = _uuid(user_id)
        if owner is None:
            raise NotFound("No such user.")
        values = _project_values(
            ProjectChanges(
                name=changes.name or "",
                description=changes.description,
                color=changes.color or DEFAULT_PROJECT_COLOR,
                shared_with_workspace=changes.shared_with_workspace,
            )
        )
        workspace = await self._workspace_for(db, owner, workspace_id)
        project = await repository.insert_project(
            db, workspace_id=workspace, owner_id=owner, values=values
        )
        log.info(
            "project.created", project_id=str(project.id), workspace_id=str(workspace)
        )
        return ProjectView(project, 0)

    async def _workspace_for(
        self, db: AsyncSession, owner: uuid.UUID, workspace_id: str
    ) -> uuid.UUID:
        """The named workspace if the owner belongs to it, else their
        personal one."""
        if not workspace_id:
            personal = await repository.personal_workspace_of(db, owner)
            if personal is None:
                raise NotFound(NO_SUCH_WORKSPACE)
            return personal.id
        workspace = _uuid(workspace_id)
        if workspace is None or not await repository.member_of(db, workspace, owner):
            raise NotFound(NO_SUCH_WORKSPACE)
        return workspace

    async def update_project(
        self,
        db: AsyncSession,
        user_id: str,
        project_id: str,
        changes: ProjectChanges,
    ) -> ProjectView:
        row = await self._changeable(db, user_id, project_id)
        values = _project_values(changes)
        project = row.project
        if values:
            project = await repository.update_project(db, project.id, values)
            log.info(
                "project.updated", project_id=project_id, fields=sorted(values.keys())
            )
        return ProjectView(project, row.asset_count)

    async def delete_project(
        self, db: AsyncSession, user_id: str, project_id: str
    ) -> None:
        row = await self._changeable(db, user_id, project_id)
        await repository.delete_project(db, row.project.id)
        log.info("project.deleted", project_id=project_id, by=user_id)

    async def list_assets(
        self, db: AsyncSession, user_id: str, project_id: str, page_size: int
    ) -> list[ProjectAsset]:
        viewer, row = await self._project(db, user_id, project_id)
        if not _may_see(row, viewer):
            raise NotFound(NO_SUCH_PROJECT)
        size = _page_size(page_size, DEFAULT_PROJECT_PAGE, MAX_PROJECT_PAGE)
        return await repository.project_assets(db, row.project.id, size)

    async def add_asset(
        self, db: AsyncSession, user_id: str, project_id: str, asset: NewAsset
    ) -> SavedAsset:
        row = await self._changeable(db, user_id, project_id)
        values = _asset_values(asset)
        saved, created = await repository.insert_asset(
            db, {**values, "project_id": row.project.id, "added_by": _uuid(user_id)}
        )
        if created:
            log.info("project.asset_added", project_id=project_id, kind=asset.kind)
        return SavedAsset(saved, created)

    async def _changeable(
        self, db: AsyncSession, user_id: str, project_id: str
    ) -> repository.ProjectRow:
        viewer, row = await self._project(db, user_id, project_id)
        if not _may_change(row, viewer):
            raise NotFound(NO_SUCH_PROJECT)
        return row

    async def _project(
        self, db: AsyncSession, user_id: str, project_id: str
    ) -> tuple[uuid.UUID, repository.ProjectRow]:
        viewer, project = _uuid(user_id), _uuid(project_id)
        row = None
        if viewer is not None and project is not None:
            row = await repository.project_for(db, project, viewer)
        if viewer is None or row is None:
            raise NotFound(NO_SUCH_PROJECT)
        return viewer, row
