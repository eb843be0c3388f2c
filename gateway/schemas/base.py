"""Base models: Python names in snake_case, JSON in the web client's camelCase."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic.alias_generators import to_camel


class RequestBody(BaseModel):
    """A request body: camelCase keys only, unknown keys refused."""

    model_config = ConfigDict(alias_generator=to_camel, extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _refuse_nul(cls, value: object) -> object:
        # PostgreSQL text cannot hold U+0000: refuse it here as a 400 instead
        # of letting a service fail on it with a 500.
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("must not contain a NUL character.")
        return value


class ResponseBody(BaseModel):
    """A response body, built from Python names and sent in camelCase."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True)
