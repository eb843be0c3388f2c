"""Request and response bodies of /api/workspaces, in the camelCase the web
client reads. Credits are JSON numbers of credits, as everywhere else."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import Field, StrictFloat, StrictStr, field_validator

from gateway.schemas.base import RequestBody, ResponseBody
from libs.errors import MICROS_PER_CREDIT

# Up to a billion credits, to the micro-credit.
MAX_CREDITS = 1_000_000_000
# JSON numbers only: "5" is refused, as booleans are.
CreditAmount = Annotated[StrictFloat, Field(gt=0, le=MAX_CREDITS)]
Setting = Annotated[StrictStr | None, Field(max_length=32)]


def to_micros(amount: float) -> int:
    return int(Decimal(str(amount)) * MICROS_PER_CREDIT)


class PrivacySettingsOut(ResponseBody):
    who_can_invite: str = Field(examples=["admins"])
    who_can_allocate_credits: str = Field(examples=["owner_only"])
    who_can_be_admin: str = Field(examples=["owner_only"])
    chat_visibility: str = Field(examples=["private"])
    image_visibility: str = Field(examples=["private"])
    video_visibility: str = Field(examples=["private"])


class PrivacySettingsBody(RequestBody):
    """Settings to change; the others keep their values."""

    who_can_invite: Setting = Field(
        default=None, description="owner_only, admins or members"
    )
    who_can_allocate_credits: Setting = Field(
        default=None, description="owner_only, admins or none"
    )
    who_can_be_admin: Setting = Field(
        default=None, description="owner_only or admins_can_promote"
    )
    chat_visibility: Setting = Field(
        default=None, description="private, members or public"
    )
    image_visibility: Setting = Field(
        default=None, description="private, members or public"
    )
    video_visibility: Setting = Field(
        default=None, description="private, members or public"
    )


class WorkspaceOut(ResponseBody):
    id: str
    name: str
    owner_id: str
    is_default: bool = Field(
        description="True for the caller's own personal workspace (not for "
        "another's personal workspace the caller was invited to)"
    )
    user_role: str = Field(description="owner, admin or member")
    member_count: int
    credits: float = Field(description="Credits in the pool (0 when personal)")
    credit_mode: str = Field(
        description="user (personal: each member's own credits), shared or individual"
    )
    allocated_credits: float | None = Field(
        description="The caller's unspent allocation; null in a personal workspace"
    )
    privacy_settings: PrivacySettingsOut
    created_at: datetime
    updated_at: datetime


class CreateWorkspaceBody(RequestBody):
    name: StrictStr = Field(max_length=200, examples=["Design team"])


class UpdateWorkspaceBody(RequestBody):
    name: StrictStr | None = Field(default=None, max_length=200)
    credit_mode: StrictStr | None = Field(
        default=None, max_length=32, description="shared or individual"
    )
    privacy_settings: PrivacySettingsBody | None = None


class DeletedOut(ResponseBody):
    success: bool = True
    returned_credits: float = Field(
        description="Credits moved to the owner: the pool and every allocation"
    )


class MemberOut(ResponseBody):
    id: str = Field(description="The membership's id")
    user_id: str
    name: str | None
    email: str | None
    avatar_url: str | None
    role: str
    allocated_credits: float
    joined_at: datetime


class MemberRoleBody(RequestBody):
    role: StrictStr = Field(max_length=32, description="admin or member")


class RoleOut(ResponseBody):
    success: bool = True
    role: str


class RemovedOut(ResponseBody):
    success: bool = True
    returned_credits: float = Field(
        description="The member's allocation, moved back to the pool"
    )


class TransferOwnershipBody(RequestBody):
    user_id: StrictStr = Field(max_length=64, description="The new owner")


class DoneOut(ResponseBody):
    success: bool = True


class InviteBody(RequestBody):
    email: StrictStr | None = Field(
        default=None,
        max_length=254,
        description="Only the account with this address may accept; without "
        "it, anyone holding the link may",
    )


class InviteOut(ResponseBody):
    id: str
    email: str | None
    invited_by: str
    created_at: datetime
    expires_at: datetime


class InviteCreatedOut(ResponseBody):
    success: bool = True
    invite_link: str
    token: str = Field(description="Shown once; only its hash is stored")
    invite: InviteOut


class InvitePreviewOut(ResponseBody):
    workspace_name: str
    inviter_name: str | None
    email_bound: bool = Field(description="Only one e-mail address may accept")
    expires_at: datetime


class JoinedOut(ResponseBody):
    success: bool = True
    workspace_id: str
    role: str


class CreditsBody(RequestBody):
    amount: CreditAmount = Field(description="Credits, at most 6 decimal places")

    @field_validator("amount")
    @classmethod
    def _whole_micros(cls, amount: float) -> float:
        exact = Decimal(str(amount)) * MICROS_PER_CREDIT
        if exact != exact.to_integral_value():
            raise ValueError("amount may have at most 6 decimal places.")
        return amount


class AllocateBody(CreditsBody):
    user_id: StrictStr = Field(max_length=64, description="The member to allocate to")


class CreditsAddedOut(ResponseBody):
    success: bool = True
    added: float
    workspace_credits: float = Field(description="The pool after the move")
    personal_credits: float = Field(description="The caller's own credits after it")


class CreditsAllocatedOut(ResponseBody):
    success: bool = True
    allocated: float
    allocated_credits: float = Field(description="The member's allocation now")
    workspace_credits: float = Field(description="The pool after the move")


class TypeUsageOut(ResponseBody):
    type: str = Field(examples=["image"])
    count: int
    total: float


class MemberUsageOut(ResponseBody):
    user_id: str
    name: str | None
    email: str | None
    used: float
    count: int


class UsageOut(ResponseBody):
    workspace_credits: float
    total_used: float
    usage_by_type: list[TypeUsageOut]
    by_type: list[TypeUsageOut] = Field(description="The same as usageByType")
    by_member: list[MemberUsageOut]
