"""Tables of the workspace service, all in the `workspace` schema.

Credits are not here: a workspace's pool and each member's allocation are
accounts in the billing service (owner types `workspace` and `member`, owned
by the workspace id and the membership id), so every movement is a ledger
entry there. `has_pool` and `has_allocation` say whether this service ever
moved credits into such an account (set in the transaction that does it, and
only this service funds them), so lists and deletions ask billing about
those accounts only.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Computed,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA = "workspace"

CREDIT_MODES = ("user", "shared", "individual")
ROLES = ("owner", "admin", "member")
INVITE_STATUSES = ("pending", "accepted", "revoked", "expired")
# Listing order of members: the owner, then admins, then members.
ROLE_RANK_SQL = "CASE role WHEN 'owner' THEN 0 WHEN 'admin' THEN 1 ELSE 2 END"


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA)


def _now() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now())


class Workspace(Base):
    """A personal workspace (one per user, paid from its members' own
    credits) or a team workspace with a pool."""

    __tablename__ = "workspaces"

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(100))
    # Always the user holding the one membership with role `owner`.
    owner_id: Mapped[uuid.UUID] = mapped_column(UUID)
    is_personal: Mapped[bool] = mapped_column(Boolean, server_default=false())
    credit_mode: Mapped[str] = mapped_column(String(16), server_default="shared")
    # Every key of services.workspace.roles.DEFAULT_PRIVACY, always complete.
    privacy_settings: Mapped[dict[str, str]] = mapped_column(JSONB)
    has_pool: Mapped[bool] = mapped_column(Boolean, server_default=false())
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()

    __table_args__ = (
        CheckConstraint(
            _one_of("credit_mode", CREDIT_MODES), name="workspaces_credit_mode"
        ),
        CheckConstraint(
            "(credit_mode = 'user') = is_personal", name="workspaces_personal_mode"
        ),
        # Exactly one personal workspace per user, however many sign-up
        # deliveries race to make it.
        Index(
            "workspaces_one_personal_per_owner",
            "owner_id",
            unique=True,
            postgresql_where=text("is_personal"),
        ),
    )


class Member(Base):
    """A user's membership of a workspace. Its id owns the member's
    allocation account in billing."""

    __tablename__ = "members"

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    workspace_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE")
    )
    user_id: Mapped[uuid.UUID] = mapped_column(UUID)
    role: Mapped[str] = mapped_column(String(16))
    role_rank: Mapped[int] = mapped_column(
        SmallInteger, Computed(ROLE_RANK_SQL, persisted=True)
    )
    has_allocation: Mapped[bool] = mapped_column(Boolean, server_default=false())
    joined_at: Mapped[datetime] = _now()

    __table_args__ = (
        UniqueConstraint("workspace_id", "user_id", name="members_once"),
        CheckConstraint(_one_of("role", ROLES), name="members_role"),
        Index(
            "members_one_owner",
            "workspace_id",
            unique=True,
            postgresql_where=text("role = 'owner'"),
        ),
        Index("members_by_user", "user_id"),
        # Keyset pagination of a workspace's member list.
        Index("members_listing", "workspace_id", "role_rank", "joined_at", "id"),
    )


class Invite(Base):
    """A single-use invitation. Only a SHA-256 of its token is kept."""

    __tablename__ = "invites"

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    workspace_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE")
    )
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    # Lower-cased; when set, only the account with this address may accept.
    email: Mapped[str | None] = mapped_column(String(254))
    invited_by: Mapped[uuid.UUID] = mapped_column(UUID)
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    created_at: Mapped[datetime] = _now()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    accepted_by: Mapped[uuid.UUID | None] = mapped_column(UUID)
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint(_one_of("status", INVITE_STATUSES), name="invites_status"),
        CheckConstraint(
            "(status = 'accepted') = (accepted_by IS NOT NULL)",
            name="invites_accepted_by",
        ),
        # One open invite per address and workspace.
        Index(
            "invites_pending_per_email",
            "workspace_id",
            "email",
            unique=True,
            postgresql_where=text("status = 'pending' AND email IS NOT NULL"),
        ),
        Index(
            "invites_pending",
            "workspace_id",
            "created_at",
            postgresql_where=text("status = 'pending'"),
        ),
    )


ASSET_KINDS = ("image", "video", "text", "generation")
DEFAULT_PROJECT_COLOR = "#8b5cf6"


class Project(Base):
    """A user's folder of reference images and saved results, in one of
    their workspaces; its members see it only when it is shared."""

    __tablename__ = "projects"

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    workspace_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE")
    )
    owner_id: Mapped[uuid.UUID] = mapped_column(UUID)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(String(2000), server_default="")
    color: Mapped[str] = mapped_column(String(7), server_default=DEFAULT_PROJECT_COLOR)
    shared_with_workspace: Mapped[bool] = mapped_column(Boolean, server_default=false())
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()

    __table_args__ = (
        CheckConstraint("length(name) >= 1", name="projects_name"),
        CheckConstraint("color ~ '^#[0-9a-f]{6}$'", name="projects_color"),
        Index("projects_by_owner", "owner_id", text("created_at DESC")),
        Index(
            "projects_shared",
            "workspace_id",
            text("created_at DESC"),
            postgresql_where=text("shared_with_workspace"),
        ),
    )


class ProjectAsset(Base):
    """A URL kept in a project, or a saved generation (then its id, so that
    saving it twice keeps one asset)."""

    __tablename__ = "project_assets"

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    project_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE")
    )
    added_by: Mapped[uuid.UUID] = mapped_column(UUID)
    kind: Mapped[str] = mapped_column(String(16))
    url: Mapped[str | None] = mapped_column(String(2048))
    generation_id: Mapped[uuid.UUID | None] = mapped_column(UUID)
    title: Mapped[str] = mapped_column(String(200), server_default="")
    # `metadata` is taken by SQLAlchemy's declarative base.
    extra: Mapped[dict[str, str]] = mapped_column(
        "metadata", JSONB, server_default=text("'{}'::jsonb")
    )
    created_at: Mapped[datetime] = _now()

    __table_args__ = (
        CheckConstraint(_one_of("kind", ASSET_KINDS), name="project_assets_kind"),
        CheckConstraint(
            "url IS NOT NULL OR generation_id IS NOT NULL",
            name="project_assets_points_somewhere",
        ),
        CheckConstraint(
            "octet_length(metadata::text) <= 4096", name="project_assets_metadata"
        ),
        Index(
            "project_assets_once_per_generation",
            "project_id",
            "generation_id",
            unique=True,
            postgresql_where=text("generation_id IS NOT NULL"),
        ),
        Index("project_assets_listing", "project_id", text("created_at DESC")),
    )
