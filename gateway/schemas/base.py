"""Base models: Python names in snake_case, JSON in the web client's camelCase."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class RequestBody(BaseModel):
    """A request body: camelCase keys only, unknown keys refused."""

    model_config = ConfigDict(alias_generator=to_camel, extra="forbid")


class ResponseBody(BaseModel):
    """A response body, built from Python names and sent in camelCase."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True)
