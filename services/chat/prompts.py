"""What is sent to the model: the checks on a user's message and images, the
history a reply reads, token estimates, and the prompts of titles and of
prompt enhancement.

Token counts are estimated before a reply, to hold the most it can cost: a
token for every three bytes of UTF-8 text (English runs nearer four, so the
estimate errs high and the hold covers the prompt) and a flat count per
image. After the reply the provider's own counts replace the estimate.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from libs.addresses import Resolver, names_a_private_host, resolves_publicly
from libs.errors import InvalidArgument

BYTES_PER_TOKEN = 3
# A high-detail image costs GPT-4o about 765 to 1,105 tokens.
IMAGE_TOKENS = 1000
# Role markers and separators around each message.
MESSAGE_OVERHEAD_TOKENS = 4

MAX_CONTENT_LENGTH = 32_000
MAX_IMAGES = 4
MAX_IMAGE_BYTES = 5 * 1024 * 1024
MAX_IMAGE_URL_LENGTH = 2048
IMAGE_TYPES = ("png", "jpeg", "jpg", "webp", "gif")
_DATA_URL = re.compile(r"^data:image/([a-z]+);base64,", re.IGNORECASE)

# History is resent with every message; beyond this many tokens (or
# messages) the oldest are left out, so a long conversation does not grow
# the cost of each reply without bound.
HISTORY_TOKEN_BUDGET = 16_000
MAX_HISTORY_MESSAGES = 100

TITLE_LENGTH = 60
FALLBACK_TITLE_LENGTH = 50
TITLE_MAX_TOKENS = 24
TITLE_SOURCE_LENGTH = 1000
TITLE_INSTRUCTIONS = (
    "Write a title of at most six words for a conversation that starts with "
    "the user's message below. Answer with the title alone: no quotes, no "
    "punctuation at the end."
)


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN)


@dataclass(frozen=True)
class Turn:
    """One message as the model reads it."""

    role: str
    content: str
    image_urls: tuple[str, ...] = ()

    def tokens(self, with_images: bool) -> int:
        images = len(self.image_urls) * IMAGE_TOKENS if with_images else 0
        return MESSAGE_OVERHEAD_TOKENS + estimate_tokens(self.content) + images

    def provider_message(self, with_images: bool) -> dict[str, Any]:
        """OpenAI-style message: plain text, or text and image parts for a
        model that reads images."""
        if not (with_images and self.image_urls):
            return {"role": self.role, "content": self.content}
        parts: list[dict[str, Any]] = []
        if self.content:
            parts.append({"type": "text", "text": self.content})
        parts += [
            {"type": "image_url", "image_url": {"url": url}} for url in self.image_urls
        ]
        return {"role": self.role, "content": parts}


@dataclass(frozen=True)
class Prompt:
    messages: list[dict[str, Any]]
    input_tokens: int
    history_used: int


def check_content(content: str, has_images: bool) -> str:
    if len(content) > MAX_CONTENT_LENGTH:
        raise InvalidArgument.for_field(
            "content",
            f"A message can be at most {MAX_CONTENT_LENGTH:,} characters long.",
        )
    if not content.strip() and not has_images:
        raise InvalidArgument.for_field("content", "Write a message first.")
    return content


def check_images(urls: Sequence[str], field: str = "image_urls") -> tuple[str, ...]:
    """Images as http(s) addresses or base64 data: URLs of a common image
    type, at most MAX_IMAGES of at most MAX_IMAGE_BYTES each."""
    if len(urls) > MAX_IMAGES:
        raise InvalidArgument.for_field(
            field, f"Attach at most {MAX_IMAGES} images to a message."
        )
    for index, url in enumerate(urls):
        problem = _image_problem(url)
        if problem:
            raise InvalidArgument.for_field(f"{field}.{index}", problem)
    return tuple(urls)


async def refuse_private_image_hosts(
    urls: Sequence[str], field: str = "image_urls", resolve: Resolver | None = None
) -> None:
    """Refuse image addresses whose host name resolves to a private address
    or to nothing (check_images has refused private literals already)."""
    hosts = {
        index: urlsplit(url).hostname or ""
        for index, url in enumerate(urls)
        if not url.startswith("data:")
    }
    found = await asyncio.gather(
        *(resolves_publicly(host, resolve) for host in hosts.values())
    )
    for index, public in zip(hosts, found, strict=True):
        if public is None:
            raise InvalidArgument.for_field(
                f"{field}.{index}", "An image address names a host that was not found."
            )
        if not public:
            raise InvalidArgument.for_field(
                f"{field}.{index}",
                "An image address must be public, not a private or local one.",
            )


def _image_problem(url: str) -> str | None:
    data = _DATA_URL.match(url)
    if data is not None:
        if data.group(1).lower() not in IMAGE_TYPES:
            return "Images must be PNG, JPEG, WebP or GIF."
        return _payload_problem(url[data.end() :])
    if url.startswith("data:"):
        return "An inline image must be a base64 data:image/... URL."
    if len(url) > MAX_IMAGE_URL_LENGTH:
        return f"An image address can be at most {MAX_IMAGE_URL_LENGTH} characters."
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "An image must be an http(s) address or a data: URL."
    # The provider fetches it: it must not be pointed at a private address.
    if names_a_private_host(parts.hostname):
        return "An image address must be public, not a private or local one."
    return None


def _payload_problem(payload: str) -> str | None:
    # Four base64 characters carry three bytes; checked before decoding so
    # that an oversized image costs no decoding.
    if len(payload) * 3 // 4 > MAX_IMAGE_BYTES:
        return f"An image can be at most {MAX_IMAGE_BYTES // (1024 * 1024)} MB."
    try:
        base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return "An inline image is not valid base64."
    return None


def assemble(
    system_prompt: str,
    history: Sequence[Turn],
    new: Turn,
    *,
    vision: bool,
    token_budget: int,
) -> Prompt:
    """The messages for a reply: the system prompt, as much recent history
    as `token_budget` allows (oldest first), and the new message."""
    fixed = new.tokens(vision)
    system = Turn("system", system_prompt) if system_prompt else None
    if system is not None:
        fixed += system.tokens(vision)
    if fixed > token_budget:
        raise InvalidArgument.for_field(
            "content", "This message is too long for the conversation's model."
        )
    kept: list[Turn] = []
    used = fixed
    for turn in reversed(history[-MAX_HISTORY_MESSAGES:]):
        cost = turn.tokens(vision)
        if used + cost > token_budget:
            break
        kept.append(turn)
        used += cost
    kept.reverse()
    turns = ([system] if system else []) + kept + [new]
    return Prompt([turn.provider_message(vision) for turn in turns], used, len(kept))


def history_budget(max_context: int, max_output: int) -> int:
    """Tokens of prompt a reply may read: what the context leaves after the
    longest reply, and never more than HISTORY_TOKEN_BUDGET."""
    return max(0, min(max_context - max_output, HISTORY_TOKEN_BUDGET))


# Titles


def title_request(first_message: str) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": TITLE_INSTRUCTIONS},
        {"role": "user", "content": first_message[:TITLE_SOURCE_LENGTH]},
    ]


def clean_title(text: str) -> str | None:
    """The first line of a model's answer as a title, or None if it has none."""
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    line = "".join(ch for ch in line if unicodedata.category(ch)[0] != "C")
    line = " ".join(line.split()).strip(" \"'`*#").rstrip(".")
    if not line:
        return None
    if len(line) > TITLE_LENGTH:
        line = line[:TITLE_LENGTH].rsplit(" ", 1)[0] or line[:TITLE_LENGTH]
    return line


def fallback_title(first_message: str) -> str:
    """The first words of the first message, when no title was written."""
    text = " ".join(first_message.split())
    if not text:
        return "Image conversation"
    if len(text) <= FALLBACK_TITLE_LENGTH:
        return text
    return text[:FALLBACK_TITLE_LENGTH].rstrip() + "..."


# Prompt enhancement

ENHANCE_MAX_TOKENS = 300
ENHANCE_TEMPERATURE = 0.7
DEFAULT_IMAGE_REQUEST = "Describe this image and write a prompt that would recreate it."
_ENHANCE_COMMON = (
    " Answer with the new prompt alone, with no explanation, in at most 150 words."
)
ENHANCE_INSTRUCTIONS = {
    "enhance": (
        "You write prompts for image generation models. Enrich the user's idea "
        "(and image, if there is one) with visual detail: subject, lighting, "
        "style, composition and mood." + _ENHANCE_COMMON
    ),
    "slight_variation": (
        "You write prompts for image generation models. Rewrite the user's "
        "prompt (or describe their image) keeping most of its concept and "
        "composition, changing only small details such as colours or "
        "lighting." + _ENHANCE_COMMON
    ),
    "strong_variation": (
        "You write prompts for image generation models. Keep the subject of "
        "the user's prompt (or image) but boldly reimagine its style, setting "
        "or mood." + _ENHANCE_COMMON
    ),
}
# The web client says `subtle` and `strong`; the earlier API the longer names.
VARIATION_ALIASES = {
    "": "enhance",
    "subtle": "slight_variation",
    "strong": "strong_variation",
}
MAX_PROMPT_LENGTH = 4000


def variation(kind: str) -> str:
    name = VARIATION_ALIASES.get(kind, kind)
    if name not in ENHANCE_INSTRUCTIONS:
        raise InvalidArgument.for_field(
            "variation_type",
            "variationType must be enhance, slight_variation or strong_variation.",
        )
    return name


def enhance_request(kind: str, prompt: str, image_urls: Sequence[str]) -> list[Turn]:
    if len(prompt) > MAX_PROMPT_LENGTH:
        raise InvalidArgument.for_field(
            "prompt", f"A prompt can be at most {MAX_PROMPT_LENGTH:,} characters."
        )
    if not prompt.strip() and not image_urls:
        raise InvalidArgument.for_field("prompt", "Give a prompt or an image.")
    text = prompt.strip() or DEFAULT_IMAGE_REQUEST
    return [
        Turn("system", ENHANCE_INSTRUCTIONS[variation(kind)]),
        Turn("user", text, tuple(image_urls)),
    ]


def enhance_tokens(prompt: str, image_count: int) -> int:
    """Estimated prompt tokens of an enhancement (the longest instructions)."""
    instructions = max(ENHANCE_INSTRUCTIONS.values(), key=len)
    return (
        Turn("system", instructions).tokens(False)
        + Turn("user", prompt.strip() or DEFAULT_IMAGE_REQUEST).tokens(False)
        + image_count * IMAGE_TOKENS
    )
