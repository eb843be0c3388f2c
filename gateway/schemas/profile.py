"""Request and response bodies of /api/profile, in the camelCase the web
client reads. The auth service decides what a valid value is; the limits here
only keep oversized text from travelling further."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field, StrictBool, StrictStr, field_validator

from gateway.schemas.base import RequestBody, ResponseBody


class ProfileUpdateBody(RequestBody):
    """The fields a user may change about themselves. A field left out keeps
    its value; `bio` or `avatarUrl` null (or "") removes it."""

    name: StrictStr | None = Field(default=None, max_length=100, examples=["Ann"])
    nickname: StrictStr | None = Field(
        default=None,
        max_length=30,
        description="3 to 30 letters A-Z, digits, '_' or '-'; unique in any "
        "letter case",
        examples=["ann_draws"],
    )
    bio: StrictStr | None = Field(default=None, max_length=500)
    avatar_url: StrictStr | None = Field(
        default=None, max_length=2048, description="An https:// URL"
    )
    is_public_profile: StrictBool | None = None

    @field_validator("name", "nickname", "is_public_profile", mode="before")
    @classmethod
    def _refuse_null(cls, value: object) -> object:
        # Runs only for keys that were sent: leaving one out keeps it, but
        # null cannot mean "no name".
        if value is None:
            raise ValueError("must not be null.")
        return value


class ProfileStatsOut(ResponseBody):
    generations: int
    published: int
    likes_received: int


class ProfileOut(ResponseBody):
    id: str
    email: str
    name: str
    nickname: str
    bio: str | None
    avatar_url: str | None
    is_public_profile: bool
    created_at: datetime
    updated_at: datetime
    stats: ProfileStatsOut
