"""Roles, privacy settings, and who may do what in a workspace.

`may` is the permission matrix of services/workspace/service.py as code: the
fixed rules of the three roles, bent only by the three `who_can_*` privacy
settings. The visibility settings decide who sees a member's chats, images
and videos (`can_see`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping

from libs.errors import FieldViolation, InvalidArgument

OWNER = "owner"
ADMIN = "admin"
MEMBER = "member"
ASSIGNABLE_ROLES = (ADMIN, MEMBER)

PRIVACY_CHOICES: dict[str, tuple[str, ...]] = {
    "who_can_invite": ("owner_only", "admins", "members"),
    "who_can_allocate_credits": ("owner_only", "admins", "none"),
    "who_can_be_admin": ("owner_only", "admins_can_promote"),
    "chat_visibility": ("private", "members", "public"),
    "image_visibility": ("private", "members", "public"),
    "video_visibility": ("private", "members", "public"),
}
DEFAULT_PRIVACY: dict[str, str] = {
    "who_can_invite": "admins",
    "who_can_allocate_credits": "owner_only",
    "who_can_be_admin": "owner_only",
    "chat_visibility": "private",
    "image_visibility": "private",
    "video_visibility": "private",
}
# Other spellings the web client sends: its settings panel says `workspace`
# where the settings page says `members`, and an earlier client sent
# `all_members`. They are stored under the one name.
PRIVACY_ALIASES = {"all_members": "members", "workspace": "members"}
CONTENT_TYPES = ("chat", "image", "video")


class Action(enum.Enum):
    VIEW = "view the workspace, its members and its credit usage"
    RENAME = "rename the workspace"
    CONFIGURE = "change the credit mode or the privacy settings"
    DELETE = "delete the workspace"
    TRANSFER_OWNERSHIP = "transfer ownership"
    INVITE = "invite people, list or withdraw invites"
    PROMOTE = "make a member an admin"
    DEMOTE = "make an admin a member"
    REMOVE_MEMBER = "remove a member"
    REMOVE_ADMIN = "remove an admin"
    ADD_CREDITS = "add credits to the pool"
    ALLOCATE_CREDITS = "allocate credits to members"


Privacy = Mapping[str, str]
Rule = Callable[[str, Privacy], bool]


def _owner(role: str, privacy: Privacy) -> bool:
    return role == OWNER


def _owner_or_admin(role: str, privacy: Privacy) -> bool:
    return role in (OWNER, ADMIN)


def _anyone(role: str, privacy: Privacy) -> bool:
    return True


def _invite(role: str, privacy: Privacy) -> bool:
    setting = privacy["who_can_invite"]
    return (
        role == OWNER
        or (role == ADMIN and setting in ("admins", "members"))
        or (role == MEMBER and setting == "members")
    )


def _promote(role: str, privacy: Privacy) -> bool:
    return role == OWNER or (
        role == ADMIN and privacy["who_can_be_admin"] == "admins_can_promote"
    )


def _allocate(role: str, privacy: Privacy) -> bool:
    setting = privacy["who_can_allocate_credits"]
    return (role == OWNER and setting != "none") or (
        role == ADMIN and setting == "admins"
    )


RULES: dict[Action, Rule] = {
    Action.VIEW: _anyone,
    Action.RENAME: _owner_or_admin,
    Action.CONFIGURE: _owner,
    Action.DELETE: _owner,
    Action.TRANSFER_OWNERSHIP: _owner,
    Action.INVITE: _invite,
    Action.PROMOTE: _promote,
    Action.DEMOTE: _owner,
    Action.REMOVE_MEMBER: _owner_or_admin,
    Action.REMOVE_ADMIN: _owner,
    Action.ADD_CREDITS: _owner,
    Action.ALLOCATE_CREDITS: _allocate,
}


def may(role: str, action: Action, privacy: Privacy) -> bool:
    """Whether a member with `role` may do `action` under `privacy`."""
    return RULES[action](role, privacy)


def complete_privacy(stored: Mapping[str, str]) -> dict[str, str]:
    """Stored settings with a default for any key added since they were saved."""
    return {**DEFAULT_PRIVACY, **stored}


def changed_privacy(current: Privacy, changes: Mapping[str, str]) -> dict[str, str]:
    """`current` with `changes` applied; empty values change nothing.
    InvalidArgument names every unknown key or value."""
    updated = complete_privacy(current)
    violations: list[FieldViolation] = []
    for key, value in changes.items():
        if not value:
            continue
        choices = PRIVACY_CHOICES.get(key)
        normal = PRIVACY_ALIASES.get(value, value)
        if choices is None:
            violations.append(
                FieldViolation(f"privacy_settings.{key}", "Unknown setting.")
            )
        elif normal not in choices:
            violations.append(
                FieldViolation(
                    f"privacy_settings.{key}",
                    f"{key} must be one of: {', '.join(choices)}.",
                )
            )
        else:
            updated[key] = normal
    if violations:
        raise InvalidArgument(violations[0].message, violations=tuple(violations))
    return updated


def can_see(setting: str, *, viewer_is_author: bool, viewer_is_member: bool) -> bool:
    """Whether a viewer may see a member's item under a visibility setting:
    `private` the author only, `members` every member, `public` anyone."""
    if viewer_is_author:
        return True
    if setting == "public":
        return True
    return setting == "members" and viewer_is_member
