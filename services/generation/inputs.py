"""Reference images a client sends with a generation (`inputImages`).

The web client sends either http(s) URLs (earlier results, project assets) or
images it read from disk as base64 `data:` URLs. Both go to fal as given; we
check them first so that fal is never pointed at a private address and never
sent something that only claims to be an image. Inline images are copied to
our media store so the generation's options show a URL, not megabytes of
base64.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, replace
from io import BytesIO
from urllib.parse import SplitResult, urlsplit

from PIL import Image

from libs.addresses import (
    IPAddress,
    Resolver,
    is_local_name,
    is_public_address,
    literal_address,
    resolves_publicly,
)
from libs.errors import FieldViolation, InvalidArgument
from services.generation.storage import MediaStore, sniff_media_type

MAX_INPUT_IMAGE_BYTES = 10 * 1024 * 1024
MAX_INPUT_IMAGE_PIXELS = 64 * 1024 * 1024
MAX_URL_LENGTH = 2048
FIELD = "inputImages"

_FORMATS = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/webp": "WEBP",
    "image/gif": "GIF",
}
# The largest base64 text that can decode to MAX_INPUT_IMAGE_BYTES.
_MAX_BASE64_LENGTH = (MAX_INPUT_IMAGE_BYTES + 2) // 3 * 4


@dataclass(frozen=True)
class InputImage:
    # What fal receives: the http(s) URL as given, or the data: URL itself.
    provider_url: str
    # What options.inputImages shows: the URL, or our stored copy of inline
    # data once store_inline_images has run.
    display_url: str
    inline: bytes | None
    content_type: str | None


class _Refused(Exception):
    """One image's problem, as the end of a sentence about it."""


def parse_input_images(values: Sequence[object], *, max_count: int) -> list[InputImage]:
    """Check every reference image; refuse all problems at once."""
    if len(values) > max_count:
        raise InvalidArgument.for_field(FIELD, _too_many(max_count))
    images: list[InputImage] = []
    violations: list[FieldViolation] = []
    for index, value in enumerate(values):
        try:
            images.append(_parse_one(value))
        except _Refused as refused:
            violations.append(
                FieldViolation(
                    f"{FIELD}[{index}]", f"Reference image {index + 1} {refused}"
                )
            )
    if violations:
        raise InvalidArgument(violations[0].message, violations=tuple(violations))
    return images


async def refuse_private_hosts(
    images: Sequence[InputImage], *, resolver: Resolver | None = None
) -> None:
    """Refuse URLs whose host name resolves to a non-public address (a name
    can point anywhere, so the literal check in parse_input_images is not
    enough)."""
    checks = [
        _check_resolved_host(index, image.provider_url, resolver)
        for index, image in enumerate(images)
        if image.inline is None
    ]
    found = await asyncio.gather(*checks)
    violations = tuple(violation for violation in found if violation is not None)
    if violations:
        raise InvalidArgument(violations[0].message, violations=violations)


async def store_inline_images(
    images: Sequence[InputImage], store: MediaStore, prefix: str
) -> list[InputImage]:
    """Copy inline images to `prefix/<index>` and show our URL for them."""

    async def stored(index: int, image: InputImage) -> InputImage:
        if image.inline is None or image.content_type is None:
            return image
        url = await store.put(f"{prefix}/{index}", image.inline, image.content_type)
        return replace(image, display_url=url)

    return list(
        await asyncio.gather(*(stored(i, image) for i, image in enumerate(images)))
    )


def _too_many(max_count: int) -> str:
    if max_count == 0:
        return "This model does not take reference images."
    if max_count == 1:
        return "This model takes one reference image."
    return f"This model takes at most {max_count} reference images."


def _parse_one(value: object) -> InputImage:
    if not isinstance(value, str):
        raise _Refused("must be a URL or an uploaded image.")
    if not value.strip():
        raise _Refused("is empty.")
    if value[:5].lower() == "data:":
        return _inline_image(value)
    _check_url(value)
    return InputImage(
        provider_url=value, display_url=value, inline=None, content_type=None
    )


def _check_url(value: str) -> None:
    if len(value) > MAX_URL_LENGTH:
        raise _Refused(f"has a URL longer than {MAX_URL_LENGTH} characters.")
    if any(char.isspace() or ord(char) < 32 for char in value):
        raise _Refused("is not a valid URL.")
    parts = _split(value)
    if parts.scheme.lower() not in ("http", "https"):
        raise _Refused("must be an http or https URL or an uploaded image.")
    if parts.username is not None or parts.password is not None:
        raise _Refused("has a user name or password in its URL; remove them.")
    host = parts.hostname
    if not host:
        raise _Refused("is not a valid URL.")
    if is_local_name(host):
        raise _Refused("points to this server; use a public URL.")
    address = _literal_address(host, bracketed="[" in parts.netloc)
    if address is not None and not is_public_address(address):
        raise _Refused("points to a private or local address; use a public URL.")


def _split(value: str) -> SplitResult:
    try:
        parts = urlsplit(value)
        _ = parts.port  # refuses a port that is not a number or out of range
    except ValueError:
        raise _Refused("is not a valid URL.") from None
    return parts


def _literal_address(host: str, *, bracketed: bool) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if bracketed:
        raise _Refused("is not a valid URL.")
    return literal_address(host)


def _inline_image(value: str) -> InputImage:
    header, comma, payload = value[5:].partition(",")
    params = [part.strip().lower() for part in header.split(";")]
    content_type = params[0]
    if not comma or content_type not in _FORMATS or params[-1] != "base64":
        raise _Refused("is not a PNG, JPEG, WebP or GIF image.")
    if len(payload) > _MAX_BASE64_LENGTH:
        raise _Refused(f"is larger than {MAX_INPUT_IMAGE_BYTES // (1024 * 1024)} MB.")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _Refused("is not valid base64 data.") from None
    if len(data) > MAX_INPUT_IMAGE_BYTES:
        raise _Refused(f"is larger than {MAX_INPUT_IMAGE_BYTES // (1024 * 1024)} MB.")
    _check_image_bytes(data, content_type)
    return InputImage(
        provider_url=value, display_url=value, inline=data, content_type=content_type
    )


def _check_image_bytes(data: bytes, content_type: str) -> None:
    """The bytes must really be the declared image type, whole and readable."""
    label = _FORMATS[content_type].replace("WEBP", "WebP")
    if sniff_media_type(data[:16]) != content_type:
        raise _Refused(f"is not really a {label} image.")
    try:
        with Image.open(BytesIO(data)) as image:
            if image.format != _FORMATS[content_type]:
                raise _Refused(f"is not really a {label} image.")
            if image.width * image.height > MAX_INPUT_IMAGE_PIXELS:
                raise _Refused("has more than 64 megapixels.")
            image.verify()
    except _Refused:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise _Refused(f"is a damaged {label} image.") from None


async def _check_resolved_host(
    index: int, url: str, resolve: Resolver | None
) -> FieldViolation | None:
    public = await resolves_publicly(urlsplit(url).hostname or "", resolve)
    field = f"{FIELD}[{index}]"
    if public is None:
        return FieldViolation(
            field, f"Reference image {index + 1} has a host name that was not found."
        )
    if not public:
        return FieldViolation(
            field,
            f"Reference image {index + 1} points to a private or local address; "
            "use a public URL.",
        )
    return None
