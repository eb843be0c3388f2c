"""Bodies of the operators' user and operator-account routes
(/api/admin/users, /api/admin/admins, /api/admin/password), in camelCase.

Credits are JSON numbers of credits here, micro-credits between services.
No body here has a field for a password hash or a token: the services do
not send them, and these models could not carry them if they did.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from pydantic import Field, StrictStr, field_validator, model_validator

from gateway.schemas.base import RequestBody, ResponseBody
from libs.errors import MICROS_PER_CREDIT

# A billion credits either way, billing's own ceiling.
MAX_ADJUSTMENT_CREDITS = 10**9
DELTA_SEMANTICS = (
    "This route now takes a signed change, not a new balance: send "
    '{"amount": <credits to add, negative to take away>, "reason": "<why>"}. '
    "The change is written to the ledger as an adjustment; the balance is "
    "never overwritten."
)


class ManagedUserOut(ResponseBody):
    id: str
    email: str
    name: str
    nickname: str
    avatar_url: str | None
    auth_provider: str = Field(description="email or google")
    status: str = Field(description="active, suspended, banned or deleted")
    status_reason: str | None
    status_changed_at: datetime | None
    credits: float = Field(description="The user's own spendable credits")
    held_credits: float = Field(description="Credits held for running work")
    created_at: datetime


class RecentGenerationOut(ResponseBody):
    id: str
    type: str
    model_name: str
    status: str
    credits: float
    started_at: datetime


class NoteOut(ResponseBody):
    id: str
    user_id: str
    author_id: str
    author_name: str
    body: str
    created_at: datetime


class UserDetailOut(ManagedUserOut):
    has_password: bool
    google_linked: bool
    active_sessions: int
    last_seen_at: datetime | None
    generation_counts: dict[str, int] = Field(
        description="Generations by type (image, video, upscale), deleted ones "
        "not counted"
    )
    recent_generations: list[RecentGenerationOut]
    notes: list[NoteOut] = Field(description="The latest notes, newest first")


class StatusBody(RequestBody):
    status: Literal["active", "suspended", "banned"]
    reason: StrictStr = Field(default="", max_length=500)


class StatusChangeOut(ResponseBody):
    id: str
    status: str
    previous_status: str | None = Field(description="Known once applied")
    revoked_sessions: int
    applied: bool = Field(
        description="False when the auth service could not be reached yet; "
        "the change is retried and happens by itself (the answer is 202)"
    )
    audit_id: int


class CreditsBody(RequestBody):
    """A signed change of the user's own credits. The original route took
    `{"credits": n}` and overwrote the balance; that body is refused."""

    amount: Decimal = Field(
        description="Credits to add (positive) or take away (negative), at most "
        "six decimals"
    )
    reason: StrictStr = Field(min_length=1, max_length=500)

    @model_validator(mode="before")
    @classmethod
    def _refuse_absolute_balance(cls, data: Any) -> Any:
        if isinstance(data, dict) and "credits" in data:
            raise ValueError(DELTA_SEMANTICS)
        return data

    @field_validator("amount", mode="before")
    @classmethod
    def _number_only(cls, value: Any) -> Any:
        # "5" or true would be coerced to a number; a change of credits is
        # too important to guess about.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("amount must be a number of credits.")
        return value

    @field_validator("amount")
    @classmethod
    def _credits(cls, value: Decimal) -> Decimal:
        if not value.is_finite() or value == 0:
            raise ValueError("amount must be a non-zero number of credits.")
        if abs(value) > MAX_ADJUSTMENT_CREDITS:
            raise ValueError("amount may be at most a billion credits either way.")
        try:
            micros = value * MICROS_PER_CREDIT
            exact = micros == micros.to_integral_value()
        except InvalidOperation:
            exact = False
        if not exact:
            raise ValueError("amount may have at most six decimals.")
        return value

    @property
    def micros(self) -> int:
        return int(self.amount * MICROS_PER_CREDIT)


class LedgerEntryOut(ResponseBody):
    id: str
    type: str = Field(
        description="grant, purchase, hold, capture, release, refund, transfer "
        "or adjustment"
    )
    amount: float
    balance_after: float
    reason: str
    reference: str | None
    tags: dict[str, str]
    created_at: datetime


class CreditsChangeOut(ResponseBody):
    entry: LedgerEntryOut | None = Field(description="The ledger entry, once applied")
    applied: bool
    audit_id: int


class NoteBody(RequestBody):
    body: StrictStr = Field(min_length=1, max_length=5000)


class ActivityOut(ResponseBody):
    entries: list[LedgerEntryOut] = Field(description="Ledger entries, newest first")
    recent_generations: list[RecentGenerationOut] = Field(
        description="The latest generations (first page only)"
    )
    next_cursor: str | None


class DeletionStepOut(ResponseBody):
    service: str
    state: str = Field(description="pending, done or failed")
    error: str | None


class DeletionOut(ResponseBody):
    audit_id: int
    completed: bool = Field(
        description="Every service has removed or anonymised the user's data "
        "(otherwise the answer is 202 and the pending steps are retried)"
    )
    steps: list[DeletionStepOut]


class OperatorOut(ResponseBody):
    id: str
    username: str
    role: str = Field(description="superadmin, support or viewer")
    disabled: bool
    created_at: datetime
    updated_at: datetime


class CreateOperatorBody(RequestBody):
    username: StrictStr = Field(min_length=3, max_length=64)
    password: StrictStr = Field(min_length=12, max_length=256)
    role: Literal["superadmin", "support", "viewer"]


class UpdateOperatorBody(RequestBody):
    role: Literal["superadmin", "support", "viewer"] | None = None
    disabled: bool | None = None


class OperatorChangeOut(OperatorOut):
    applied: bool
    audit_id: int


class PasswordBody(RequestBody):
    current_password: StrictStr = Field(min_length=1, max_length=256)
    new_password: StrictStr = Field(min_length=12, max_length=256)


class PasswordChangedOut(ResponseBody):
    success: bool
    revoked_sessions: int = Field(description="Your other sessions, ended")
