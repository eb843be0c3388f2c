"""Request and response bodies of /api/projects, in the camelCase the web
client reads (web-client.md §2.5). Lengths are checked here for a quick 400
and again by the workspace service, which owns the rules."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, StrictBool, StrictStr

from gateway.schemas.base import RequestBody, ResponseBody

Name = Annotated[StrictStr, Field(max_length=100)]
Description = Annotated[StrictStr, Field(max_length=2000)]
Color = Annotated[StrictStr, Field(max_length=7, examples=["#8b5cf6"])]


class CreateProjectBody(RequestBody):
    name: Name
    description: Description = ""
    color: Color | None = None
    workspace_id: StrictStr | None = Field(
        default=None,
        max_length=64,
        description="A workspace the caller belongs to; their personal one "
        "when left out",
    )
    shared_with_workspace: StrictBool = False


class UpdateProjectBody(RequestBody):
    """The fields to change; the others keep their values. No other key is
    accepted."""

    name: Name | None = None
    description: Description | None = None
    color: Color | None = None
    shared_with_workspace: StrictBool | None = None


class AddAssetBody(RequestBody):
    asset_url: Annotated[StrictStr, Field(max_length=2048)]
    asset_type: Annotated[StrictStr, Field(max_length=16)] = "image"
    name: Annotated[StrictStr, Field(max_length=200)] = ""


class SaveItemBody(RequestBody):
    generation_id: Annotated[StrictStr, Field(max_length=64)]


class ProjectOut(ResponseBody):
    id: str
    workspace_id: str
    owner_id: str
    name: str
    description: str
    color: str
    shared_with_workspace: bool
    asset_count: int
    created_at: datetime
    updated_at: datetime


class AssetOut(ResponseBody):
    id: str
    project_id: str
    asset_url: str | None
    asset_type: str
    name: str
    generation_id: str | None
    added_by: str
    created_at: datetime


class SavedItemOut(ResponseBody):
    id: str
    success: bool = True
    created: bool = Field(description="False when it was already in the project")


class ProjectDeletedOut(ResponseBody):
    success: bool = True
