"""All SQL of the workspace service.

Row locks order the operations that must not interleave: whatever moves
credits of a workspace or admits, changes or removes one of its members
holds `FOR KEY SHARE` on the workspace row, and deleting the workspace
needs `FOR UPDATE` on it, so a deletion waits for those to finish and they
find the workspace gone if it went first. A member row being removed is
locked `FOR UPDATE`; an allocation to that member holds `FOR KEY SHARE` on it.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    Select,
    bindparam,
    delete,
    exists,
    func,
    literal_column,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from services.workspace.models import (
    Invite,
    Member,
    Project,
    ProjectAsset,
    Workspace,
)

StatementT = TypeVar("StatementT", bound=Select)  # type: ignore[type-arg]


class Lock(enum.Enum):
    # Keeps the row from being deleted (or its key changed), nothing more.
    KEY_SHARE = "key share"
    # For changes to the row's columns.
    NO_KEY_UPDATE = "no key update"
    # For deleting the row.
    UPDATE = "update"


def _locked(statement: StatementT, lock: Lock | None, of: Any) -> StatementT:
    if lock is Lock.KEY_SHARE:
        return statement.with_for_update(read=True, key_share=True, of=of)
    if lock is Lock.NO_KEY_UPDATE:
        return statement.with_for_update(key_share=True, of=of)
    if lock is Lock.UPDATE:
        return statement.with_for_update(of=of)
    return statement


@dataclass(frozen=True, slots=True)
class WorkspaceRecord:
    """A workspaces row, read with Core: lists build many of them, and ORM
    objects cost three times as much to load."""

    id: uuid.UUID
    name: str
    owner_id: uuid.UUID
    is_personal: bool
    credit_mode: str
    privacy_settings: dict[str, str]
    has_pool: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class MemberRecord:
    """A members row, read with Core."""

    id: uuid.UUID
    workspace_id: uuid.UUID
    user_id: uuid.UUID
    role: str
    role_rank: int
    has_allocation: bool
    joined_at: datetime


_WORKSPACE = [getattr(Workspace, f.name) for f in fields(WorkspaceRecord)]
_MEMBER = [getattr(Member, f.name) for f in fields(MemberRecord)]


def _workspace(row: Sequence[Any]) -> WorkspaceRecord:
    return WorkspaceRecord(*row[: len(_WORKSPACE)])


def _member(row: Sequence[Any], start: int = 0) -> MemberRecord:
    return MemberRecord(*row[start : start + len(_MEMBER)])


@dataclass(frozen=True)
class MembershipRow:
    """A workspace seen by one of its members."""

    workspace: WorkspaceRecord
    member: MemberRecord
    member_count: int


# Workspaces


def _member_count() -> Any:
    """Members of the outer query's workspace (its own alias of `members`,
    which the outer query joins too)."""
    counted = aliased(Member)
    return (
        select(func.count())
        .where(counted.workspace_id == Workspace.id)
        .correlate(Workspace)
        .scalar_subquery()
    )


# Built once: making the alias and subquery on every call cost more than
# running the query (it is behind /api/auth/me and every workspace list).
_MEMBER_COUNT = _member_count()


async def membership(
    db: AsyncSession,
    workspace_id: uuid.UUID,
    user_id: uuid.UUID,
    lock: Lock | None = None,
) -> tuple[WorkspaceRecord, MemberRecord] | None:
    """A workspace and the user's membership of it, with the workspace row
    locked as asked; None when either is missing."""
    statement = (
        select(*_WORKSPACE, *_MEMBER)
        .join(Member, Member.workspace_id == Workspace.id)
        .where(Workspace.id == workspace_id, Member.user_id == user_id)
    )
    row = (await db.execute(_locked(statement, lock, Workspace))).one_or_none()
    if row is None:
        return None
    return _workspace(row), _member(row, len(_WORKSPACE))


async def member_count(db: AsyncSession, workspace_id: uuid.UUID) -> int:
    statement = select(func.count()).where(Member.workspace_id == workspace_id)
    return int((await db.execute(statement)).scalar_one())


async def workspace_by_id(
    db: AsyncSession, workspace_id: uuid.UUID
) -> WorkspaceRecord | None:
    statement = select(*_WORKSPACE).where(Workspace.id == workspace_id)
    row = (await db.execute(statement)).one_or_none()
    return _workspace(row) if row else None


async def personal_workspace_of(
    db: AsyncSession, user_id: uuid.UUID
) -> WorkspaceRecord | None:
    statement = select(*_WORKSPACE).where(
        Workspace.owner_id == user_id, Workspace.is_personal
    )
    row = (await db.execute(statement)).one_or_none()
    return _workspace(row) if row else None


async def insert_workspace(
    db: AsyncSession,
    *,
    name: str,
    owner_id: uuid.UUID,
    is_personal: bool,
    credit_mode: str,
    privacy_settings: dict[str, str],
) -> WorkspaceRecord | None:
    """The new workspace; None if it is a personal one and the owner already
    has one (a concurrent insert waits for the other to commit first)."""
    statement = pg_insert(Workspace).values(
        id=uuid.uuid4(),
        name=name,
        owner_id=owner_id,
        is_personal=is_personal,
        credit_mode=credit_mode,
        privacy_settings=privacy_settings,
    )
    if is_personal:
        statement = statement.on_conflict_do_nothing(
            index_elements=[Workspace.owner_id],
            # The partial index's own predicate, word for word.
            index_where=literal_column("is_personal"),
        )
    row = (await db.execute(statement.returning(*_WORKSPACE))).one_or_none()
    return _workspace(row) if row else None


def _workspaces_page_statements() -> tuple[Any, Any]:
    """The first page and a later page of a user's workspaces, built once
    with bound parameters: their own personal one first, then newest first,
    after the (own personal, created_at, id) position of a later page."""
    user_id = bindparam("user_id", type_=Workspace.owner_id.type)
    own_personal = Workspace.is_personal & (Workspace.owner_id == user_id)
    first = (
        select(*_WORKSPACE, *_MEMBER, _MEMBER_COUNT)
        .join(Member, Member.workspace_id == Workspace.id)
        .where(Member.user_id == user_id)
        .order_by(own_personal.desc(), Workspace.created_at.desc(), Workspace.id.desc())
        .limit(bindparam("limit"))
    )
    position = tuple_(own_personal, Workspace.created_at, Workspace.id)
    after = tuple_(
        bindparam("after_personal"),
        bindparam("after_created_at", type_=Workspace.created_at.type),
        bindparam("after_id", type_=Workspace.id.type),
    )
    return first, first.where(position < after)


_FIRST_WORKSPACES, _LATER_WORKSPACES = _workspaces_page_statements()


async def workspaces_page(
    db: AsyncSession,
    user_id: uuid.UUID,
    after: tuple[bool, datetime, uuid.UUID] | None,
    limit: int,
) -> list[MembershipRow]:
    """The user's workspaces, their own personal one first, then newest
    first, after the (own personal, created_at, id) position `after`."""
    values: dict[str, Any] = {"user_id": user_id, "limit": limit}
    statement = _FIRST_WORKSPACES
    if after is not None:
        statement = _LATER_WORKSPACES
        values.update(
            after_personal=after[0], after_created_at=after[1], after_id=after[2]
        )
    return [
        MembershipRow(_workspace(row), _member(row, len(_WORKSPACE)), int(row[-1]))
        for row in await db.execute(statement, values)
    ]


async def update_workspace(
    db: AsyncSession, workspace_id: uuid.UUID, values: dict[str, Any]
) -> WorkspaceRecord:
    statement = (
        update(Workspace)
        .where(Workspace.id == workspace_id)
        .values(**values, updated_at=func.now())
        .returning(*_WORKSPACE)
    )
    return _workspace((await db.execute(statement)).one())


async def delete_workspace(db: AsyncSession, workspace_id: uuid.UUID) -> None:
    """Deletes the workspace; its members and invites go with it (CASCADE)."""
    await db.execute(delete(Workspace).where(Workspace.id == workspace_id))


async def mark_pool_funded(db: AsyncSession, workspace_id: uuid.UUID) -> None:
    # Only the first funding writes (and briefly locks) the row.
    await db.execute(
        update(Workspace)
        .where(Workspace.id == workspace_id, Workspace.has_pool.is_(False))
        .values(has_pool=True)
    )


# Members


async def insert_member(
    db: AsyncSession, workspace_id: uuid.UUID, user_id: uuid.UUID, role: str
) -> MemberRecord | None:
    """The new membership; None if the user is already a member."""
    statement = (
        pg_insert(Member)
        .values(id=uuid.uuid4(), workspace_id=workspace_id, user_id=user_id, role=role)
        .on_conflict_do_nothing(index_elements=[Member.workspace_id, Member.user_id])
        .returning(*_MEMBER)
    )
    row = (await db.execute(statement)).one_or_none()
    return _member(row) if row else None


async def member_of(
    db: AsyncSession,
    workspace_id: uuid.UUID,
    user_id: uuid.UUID,
    lock: Lock | None = None,
) -> MemberRecord | None:
    statement = select(*_MEMBER).where(
        Member.workspace_id == workspace_id, Member.user_id == user_id
    )
    row = (await db.execute(_locked(statement, lock, Member))).one_or_none()
    return _member(row) if row else None


async def members_page(
    db: AsyncSession,
    workspace_id: uuid.UUID,
    after: tuple[int, datetime, uuid.UUID] | None,
    limit: int,
) -> list[MemberRecord]:
    """Members in listing order (owner, admins, members; then by joining),
    after the (role_rank, joined_at, id) position `after` when given."""
    statement = select(*_MEMBER).where(Member.workspace_id == workspace_id)
    if after is not None:
        position = tuple_(Member.role_rank, Member.joined_at, Member.id)
        statement = statement.where(position > tuple_(*after))
    statement = statement.order_by(Member.role_rank, Member.joined_at, Member.id).limit(
        limit
    )
    return [_member(row) for row in await db.execute(statement)]


async def allocated_membership_ids(
    db: AsyncSession, workspace_id: uuid.UUID
) -> list[uuid.UUID]:
    """Members whose allocation account was ever funded."""
    statement = select(Member.id).where(
        Member.workspace_id == workspace_id, Member.has_allocation
    )
    return list((await db.execute(statement)).scalars())


async def mark_allocation_funded(db: AsyncSession, member_id: uuid.UUID) -> None:
    await db.execute(
        update(Member)
        .where(Member.id == member_id, Member.has_allocation.is_(False))
        .values(has_allocation=True)
    )


async def set_role(db: AsyncSession, member_id: uuid.UUID, role: str) -> None:
    await db.execute(update(Member).where(Member.id == member_id).values(role=role))


async def delete_member(db: AsyncSession, member_id: uuid.UUID) -> None:
    await db.execute(delete(Member).where(Member.id == member_id))


async def workspace_ids_of_member(
    db: AsyncSession, user_id: uuid.UUID
) -> list[uuid.UUID]:
    statement = (
        select(Member.workspace_id)
        .where(Member.user_id == user_id)
        .order_by(Member.joined_at, Member.workspace_id)
    )
    return list((await db.execute(statement)).scalars())


async def successor(
    db: AsyncSession, workspace_id: uuid.UUID, lock: Lock
) -> MemberRecord | None:
    """Who takes over a workspace from its owner: the longest-standing admin,
    else the longest-standing member."""
    statement = (
        select(*_MEMBER)
        .where(Member.workspace_id == workspace_id, Member.role != "owner")
        .order_by(Member.role_rank, Member.joined_at, Member.id)
        .limit(1)
    )
    row = (await db.execute(_locked(statement, lock, Member))).one_or_none()
    return _member(row) if row else None


# Invites


async def expire_stale_invites(
    db: AsyncSession, workspace_id: uuid.UUID, email: str
) -> None:
    """Mark an address's lapsed pending invite expired, so a new one may be
    made for it."""
    await db.execute(
        update(Invite)
        .where(
            Invite.workspace_id == workspace_id,
            Invite.email == email,
            Invite.status == "pending",
            Invite.expires_at <= func.now(),
        )
        .values(status="expired", settled_at=func.now())
    )


async def insert_invite(
    db: AsyncSession,
    *,
    workspace_id: uuid.UUID,
    token_hash: bytes,
    email: str | None,
    invited_by: uuid.UUID,
    expires_at: datetime,
) -> Invite | None:
    """The new invite; None while the address has another open invite."""
    statement = (
        pg_insert(Invite)
        .values(
            id=uuid.uuid4(),
            workspace_id=workspace_id,
            token_hash=token_hash,
            email=email,
            invited_by=invited_by,
            expires_at=expires_at,
        )
        .on_conflict_do_nothing()
        .returning(Invite)
    )
    return (await db.execute(statement)).scalar_one_or_none()


async def open_invites(
    db: AsyncSession, workspace_id: uuid.UUID, limit: int
) -> list[Invite]:
    """Pending, unexpired invites, newest first."""
    statement = (
        select(Invite)
        .where(
            Invite.workspace_id == workspace_id,
            Invite.status == "pending",
            Invite.expires_at > func.now(),
        )
        .order_by(Invite.created_at.desc())
        .limit(limit)
    )
    return list((await db.execute(statement)).scalars())


async def open_invite_count(db: AsyncSession, workspace_id: uuid.UUID) -> int:
    statement = select(func.count()).where(
        Invite.workspace_id == workspace_id,
        Invite.status == "pending",
        Invite.expires_at > func.now(),
    )
    return int((await db.execute(statement)).scalar_one())


async def invite_by_token_hash(
    db: AsyncSession, token_hash: bytes, *, lock: bool = False
) -> tuple[Invite, WorkspaceRecord] | None:
    """An invite and its workspace; with `lock`, the invite row is held
    `FOR UPDATE`: acceptances of one token queue here, and so does deleting
    the workspace, whose cascade deletes the invite."""
    statement = select(Invite).where(Invite.token_hash == token_hash)
    if lock:
        statement = statement.with_for_update()
    invite = (await db.execute(statement)).scalar_one_or_none()
    if invite is None:
        return None
    workspace = await workspace_by_id(db, invite.workspace_id)
    return (invite, workspace) if workspace else None


async def accept_invite(
    db: AsyncSession, invite_id: uuid.UUID, user_id: uuid.UUID
) -> None:
    await db.execute(
        update(Invite)
        .where(Invite.id == invite_id)
        .values(status="accepted", accepted_by=user_id, settled_at=func.now())
    )


async def revoke_invite(
    db: AsyncSession, workspace_id: uuid.UUID, invite_id: uuid.UUID
) -> Invite | None:
    """Withdraw a pending invite; None if the workspace has no invite by that
    id. An invite no longer pending is returned unchanged."""
    statement = (
        update(Invite)
        .where(
            Invite.id == invite_id,
            Invite.workspace_id == workspace_id,
            Invite.status == "pending",
        )
        .values(status="revoked", settled_at=func.now())
        .returning(Invite)
    )
    revoked = (await db.execute(statement)).scalar_one_or_none()
    if revoked is not None:
        return revoked
    found = select(Invite).where(
        Invite.id == invite_id, Invite.workspace_id == workspace_id
    )
    return (await db.execute(found)).scalar_one_or_none()


# Projects


@dataclass(frozen=True)
class ProjectRow:
    """A project as one user sees it: whether they are a member of its
    workspace, who owns that workspace, and how many assets it holds."""

    project: Project
    workspace_owner_id: uuid.UUID
    viewer_is_member: bool
    asset_count: int


def _asset_count() -> Any:
    return (
        select(func.count())
        .where(ProjectAsset.project_id == Project.id)
        .correlate(Project)
        .scalar_subquery()
    )


def _is_member(viewer: uuid.UUID) -> Any:
    return exists().where(
        Member.workspace_id == Project.workspace_id, Member.user_id == viewer
    )


async def project_for(
    db: AsyncSession, project_id: uuid.UUID, viewer: uuid.UUID
) -> ProjectRow | None:
    statement = (
        select(Project, Workspace.owner_id, _is_member(viewer), _asset_count())
        .join(Workspace, Workspace.id == Project.workspace_id)
        .where(Project.id == project_id)
    )
    row = (await db.execute(statement)).one_or_none()
    if row is None:
        return None
    return ProjectRow(row[0], row[1], bool(row[2]), int(row[3]))


async def visible_projects(
    db: AsyncSession,
    viewer: uuid.UUID,
    workspace_id: uuid.UUID | None,
    limit: int,
) -> list[tuple[Project, int]]:
    """The viewer's own projects and the shared ones of workspaces they
    belong to, newest first."""
    shared = Project.shared_with_workspace & _is_member(viewer)
    statement = select(Project, _asset_count()).where(
        (Project.owner_id == viewer) | shared
    )
    if workspace_id is not None:
        statement = statement.where(Project.workspace_id == workspace_id)
    statement = statement.order_by(Project.created_at.desc(), Project.id.desc())
    rows = await db.execute(statement.limit(limit))
    return [(row[0], int(row[1])) for row in rows]


async def insert_project(
    db: AsyncSession,
    *,
    workspace_id: uuid.UUID,
    owner_id: uuid.UUID,
    values: dict[str, Any],
) -> Project:
    statement = (
        pg_insert(Project)
        .values(id=uuid.uuid4(), workspace_id=workspace_id, owner_id=owner_id, **values)
        .returning(Project)
    )
    return (await db.execute(statement)).scalar_one()


async def update_project(
    db: AsyncSession, project_id: uuid.UUID, values: dict[str, Any]
) -> Project:
    """`values` holds only columns the service chose; never request keys."""
    statement = (
        update(Project)
        .where(Project.id == project_id)
        .values(**values, updated_at=func.now())
        .returning(Project)
    )
    return (await db.execute(statement)).scalar_one()


async def delete_projects_of_owner(db: AsyncSession, owner_id: uuid.UUID) -> int:
    """Deletes every project of `owner_id`, in any workspace (with assets)."""
    result = await db.execute(delete(Project).where(Project.owner_id == owner_id))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def delete_invites_of(db: AsyncSession, user_id: uuid.UUID) -> int:
    """Deletes the invites the user sent or accepted (they hold addresses)."""
    result = await db.execute(
        delete(Invite).where(
            (Invite.invited_by == user_id) | (Invite.accepted_by == user_id)
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def delete_project(db: AsyncSession, project_id: uuid.UUID) -> None:
    """Deletes the project; its assets go with it (CASCADE)."""
    await db.execute(delete(Project).where(Project.id == project_id))


async def project_assets(
    db: AsyncSession, project_id: uuid.UUID, limit: int
) -> list[ProjectAsset]:
    statement = (
        select(ProjectAsset)
        .where(ProjectAsset.project_id == project_id)
        .order_by(ProjectAsset.created_at.desc(), ProjectAsset.id.desc())
        .limit(limit)
    )
    return list((await db.execute(statement)).scalars())


async def insert_asset(
    db: AsyncSession, values: dict[str, Any]
) -> tuple[ProjectAsset, bool]:
    """The new asset and True; for a generation already in the project, the
    asset saved before and False."""
    statement = (
        pg_insert(ProjectAsset)
        .values(id=uuid.uuid4(), **values)
        .on_conflict_do_nothing(
            index_elements=[ProjectAsset.project_id, ProjectAsset.generation_id],
            index_where=ProjectAsset.generation_id.isnot(None),
        )
        .returning(ProjectAsset)
    )
    created = (await db.execute(statement)).scalar_one_or_none()
    if created is not None:
        return created, True
    existing = select(ProjectAsset).where(
        ProjectAsset.project_id == values["project_id"],
        ProjectAsset.generation_id == values["generation_id"],
    )
    return (await db.execute(existing)).scalar_one(), False
