"""Bodies of the gallery, share-link and landing routes, in the camelCase
the web client reads (web-client.md §2.9 to 2.11 and §2.14). A post also carries
the snake_case keys of the columns the old API sent, so that clients
written against it keep working. Authors appear by nickname only."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictBool, StrictInt, StrictStr, computed_field

from gateway.schemas.base import RequestBody, ResponseBody
from gateway.schemas.generations import Moment

MAX_SHARE_DAYS = 365


class PostOut(ResponseBody):
    id: str
    generation_id: str
    nickname: str
    avatar_url: str | None
    title: str
    category: str
    image_url: str
    thumbnail_url: str | None
    prompt: str
    model_name: str
    media_type: str = Field(description="image or video")
    like_count: int
    view_count: int
    is_nsfw: bool
    is_liked: bool = Field(description="Whether the signed-in reader likes it")
    published_at: Moment

    # The old API's column names, with the same values.

    @computed_field(alias="generation_id")  # type: ignore[prop-decorator]
    @property
    def generation_id_column(self) -> str:
        return self.generation_id

    @computed_field(alias="avatar_url")  # type: ignore[prop-decorator]
    @property
    def avatar_url_column(self) -> str | None:
        return self.avatar_url

    @computed_field(alias="image_url")  # type: ignore[prop-decorator]
    @property
    def image_url_column(self) -> str:
        return self.image_url

    @computed_field(alias="thumbnail_url")  # type: ignore[prop-decorator]
    @property
    def thumbnail_url_column(self) -> str | None:
        return self.thumbnail_url

    @computed_field(alias="model_name")  # type: ignore[prop-decorator]
    @property
    def model_name_column(self) -> str:
        return self.model_name

    @computed_field(alias="like_count")  # type: ignore[prop-decorator]
    @property
    def like_count_column(self) -> int:
        return self.like_count

    @computed_field(alias="view_count")  # type: ignore[prop-decorator]
    @property
    def view_count_column(self) -> int:
        return self.view_count

    @computed_field(alias="is_nsfw")  # type: ignore[prop-decorator]
    @property
    def is_nsfw_column(self) -> bool:
        return self.is_nsfw

    @computed_field(alias="published_at")  # type: ignore[prop-decorator]
    @property
    def published_at_column(self) -> Moment:
        return self.published_at


class FeedOut(ResponseBody):
    posts: list[PostOut]
    total: int
    page: int
    total_pages: int
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last"
    )


class CategoryOut(ResponseBody):
    id: str
    name: str
    count: int


class PublishBody(RequestBody):
    """The generation to publish. Its image, prompt and model are always
    the generation's own: the keys older clients send for them are accepted
    and ignored."""

    generation_id: Annotated[StrictStr, Field(max_length=64)]
    title: Annotated[StrictStr, Field(max_length=200)] | None = None
    category: Annotated[StrictStr, Field(max_length=32)] | None = Field(
        default=None,
        description="anime, realistic, game, abstract, nature, scifi, art, "
        "portrait, architecture, food or other; chosen from the prompt when "
        "missing or unknown",
    )
    is_nsfw: StrictBool = False
    image_url: StrictStr | None = Field(default=None, description="Ignored")
    prompt: StrictStr | None = Field(default=None, description="Ignored")
    model_name: StrictStr | None = Field(default=None, description="Ignored")


class PublishedOut(PostOut):
    success: bool = True
    message: str = "Published to the community gallery."


class LikeOut(ResponseBody):
    liked: bool
    like_count: int


class DoneOut(ResponseBody):
    success: bool = True


class ShareBody(RequestBody):
    generation_id: Annotated[StrictStr, Field(max_length=64)]
    allow_download: StrictBool = True
    expires_in_days: Annotated[StrictInt, Field(ge=1, le=MAX_SHARE_DAYS)] | None = (
        Field(default=None, description="Never expires when left out")
    )


class ShareOut(ResponseBody):
    share_token: str
    share_url: str
    generation_id: str
    allow_download: bool
    view_count: int
    created_at: Moment
    expires_at: Moment | None


class SharedGenerationOut(ResponseBody):
    """A shared generation as its public page shows it: no e-mail address,
    user id or price."""

    id: str
    type: str
    result: str
    thumbnail_url: str | None
    prompt: str
    model_name: str
    completed_at: Moment | None
    created_at: Moment
    nickname: str
    user_name: str = Field(description="The nickname again")
    allow_download: bool
    view_count: int


class FeaturedOut(ResponseBody):
    """A landing-page item: a popular community post."""

    id: str
    type: str = "community"
    title: str
    description: str
    media_url: str
    thumbnail_url: str | None
    media_type: str
    link_url: str
    link_text: str = "View"
    featured: bool = True
    nickname: str
    like_count: int
