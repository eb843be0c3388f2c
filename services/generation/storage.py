"""Our own copies of generation outputs.

fal's result URLs expire, so the worker copies every output into a media store
and keeps our URL on the generation. `LocalMediaStore` writes files under a
directory that the gateway serves at MEDIA_BASE_URL (gateway/routers/media.py).

Keys are chosen by the caller (e.g. "generations/<uuid>/0") and get an
extension from the content type, so storing one key twice (a webhook and a
poll racing) rewrites the same file with the same bytes.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import urlsplit

import httpx
from PIL import Image, ImageOps

from libs.addresses import names_a_private_host
from libs.config import Settings
from libs.logs import get_logger

log = get_logger(__name__)

MAX_MEDIA_BYTES = 200 * 1024 * 1024
MAX_THUMBNAIL_SOURCE_BYTES = 20 * 1024 * 1024
MAX_REDIRECTS = 3
THUMBNAIL_EDGE = 300
# Per read; a whole download also has a deadline, so a trickling server
# cannot hold a worker for ever.
DOWNLOAD_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
DOWNLOAD_DEADLINE_SECONDS = 600.0
MAX_KEY_LENGTH = 512

# The types we store, with the extension the gateway serves them by.
EXTENSIONS: dict[str, str] = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
    "video/quicktime": ".mov",
    "audio/mpeg": ".mp3",
    "audio/wav": ".wav",
}
IMAGE_TYPES = frozenset(t for t in EXTENSIONS if t.startswith("image/"))

# Segments never start with a dot, so neither ".." nor hidden temp files
# can be named by a key.
_KEY = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$")
_SNIFF_BYTES = 16


class MediaStoreError(Exception):
    """A file the outside world handed us could not be stored; the message is
    short and safe to show. Disk failures stay OSError: they are ours, and a
    later attempt may succeed."""


class MediaUnavailable(MediaStoreError):
    """A file could not be downloaded from its source, or is no media."""


class InvalidMediaKey(ValueError):
    """A key that could leave the store's root or name a hidden file."""


class UnsupportedMediaType(ValueError):
    """A content type the store does not keep."""


@dataclass(frozen=True)
class StoredMedia:
    url: str
    # None when no still image could be made (a video without a provider
    # thumbnail, or an image Pillow cannot read).
    thumbnail_url: str | None
    content_type: str
    size: int


class MediaStore(Protocol):
    async def put(self, key: str, data: bytes, content_type: str) -> str:
        """Store `data` under `key` and return its public URL."""
        ...

    async def copy_from(
        self, source_url: str, key: str, *, thumbnail_source: str | None = None
    ) -> StoredMedia:
        """Download `source_url` into the store under `key`."""
        ...

    async def close(self) -> None: ...


def sniff_media_type(head: bytes) -> str | None:
    """The media type the first bytes of a file announce, if we store it."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head[4:8] == b"ftyp":
        return "video/quicktime" if head[8:10] == b"qt" else "video/mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "video/webm"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] >= 0xE0):
        return "audio/mpeg"
    return None


def check_key(key: str) -> None:
    if len(key) > MAX_KEY_LENGTH or not _KEY.match(key):
        raise InvalidMediaKey(f"not a media key: {key!r}")


def render_thumbnail(source: Path) -> bytes | None:
    """A WebP of at most 300 px on each side from the first frame of an image,
    or None when Pillow cannot read it. Blocking: run it in a thread."""
    try:
        with Image.open(source) as image:
            image.seek(0)
            image.draft("RGB", (THUMBNAIL_EDGE, THUMBNAIL_EDGE))
            frame = ImageOps.exif_transpose(image)
            frame.thumbnail((THUMBNAIL_EDGE, THUMBNAIL_EDGE))
            keeps_alpha = frame.mode in ("RGBA", "LA", "PA") or (
                frame.mode == "P" and "transparency" in frame.info
            )
            frame = frame.convert("RGBA" if keeps_alpha else "RGB")
            out = BytesIO()
            frame.save(out, "WEBP", quality=75)
            return out.getvalue()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_beside(path)
    try:
        with temp.open("wb") as file:
            file.write(data)
            _flush_to_disk(file)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _temp_beside(path: Path) -> Path:
    # Same directory, so os.replace is atomic; the leading dot keeps it out of
    # reach of keys and of the gateway.
    return path.with_name(f".{path.name}.{secrets.token_hex(8)}.part")


@dataclass(frozen=True)
class _Download:
    temp: Path
    content_type: str
    size: int


class LocalMediaStore:
    """Files under `root`, served by the gateway at `base_url`."""

    def __init__(
        self,
        root: str | Path,
        base_url: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        max_bytes: int = MAX_MEDIA_BYTES,
    ) -> None:
        self.root = Path(root).resolve()
        self.base_url = base_url.rstrip("/")
        self.max_bytes = max_bytes
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=DOWNLOAD_TIMEOUT,
            # Followed by hand in _follow, each hop checked.
            follow_redirects=False,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalMediaStore:
        return cls(settings.media_dir, settings.media_base_url)

    async def put(self, key: str, data: bytes, content_type: str) -> str:
        path = self._path_for(key, content_type)
        await asyncio.to_thread(_write_atomically, path, data)
        log.info("media.stored", key=key, content_type=content_type, size=len(data))
        return self._url_of(path)

    async def copy_from(
        self, source_url: str, key: str, *, thumbnail_source: str | None = None
    ) -> StoredMedia:
        check_key(key)
        stem = self.root / key
        download = await self._download(source_url, stem, self.max_bytes)
        path = stem.with_name(stem.name + EXTENSIONS[download.content_type])
        os.replace(download.temp, path)
        log.info(
            "media.copied",
            key=key,
            content_type=download.content_type,
            size=download.size,
        )

        thumbnail_url = await self._thumbnail(
            key, path, download.content_type, thumbnail_source
        )
        return StoredMedia(
            url=self._url_of(path),
            thumbnail_url=thumbnail_url,
            content_type=download.content_type,
            size=download.size,
        )

    async def close(self) -> None:
        await self._http.aclose()

    def _path_for(self, key: str, content_type: str) -> Path:
        check_key(key)
        extension = EXTENSIONS.get(content_type)
        if extension is None:
            raise UnsupportedMediaType(f"no extension for {content_type!r}")
        return self.root / (key + extension)

    def _url_of(self, path: Path) -> str:
        return f"{self.base_url}/{path.relative_to(self.root).as_posix()}"

    async def _thumbnail(
        self, key: str, media: Path, content_type: str, thumbnail_source: str | None
    ) -> str | None:
        """A thumbnail from the provider's still when it sent one, else from
        the media itself when it is an image. A thumbnail is a nicety: its
        failure is logged, never raised."""
        if thumbnail_source is not None:
            rendered = await self._rendered_from_url(key, media, thumbnail_source)
        elif content_type in IMAGE_TYPES:
            rendered = await asyncio.to_thread(render_thumbnail, media)
        else:
            return None
        if rendered is None:
            log.warning("media.thumbnail_unavailable", key=key)
            return None
        return await self.put(key + ".thumb", rendered, "image/webp")

    async def _rendered_from_url(
        self, key: str, media: Path, source_url: str
    ) -> bytes | None:
        stem = media.with_name(media.name + ".source")
        try:
            download = await self._download(
                source_url, stem, MAX_THUMBNAIL_SOURCE_BYTES
            )
        except MediaUnavailable as error:
            log.warning("media.thumbnail_source_failed", key=key, reason=str(error))
            return None
        try:
            return await asyncio.to_thread(render_thumbnail, download.temp)
        finally:
            download.temp.unlink(missing_ok=True)

    async def _download(self, url: str, stem: Path, limit: int) -> _Download:
        """Stream `url` into a temp file beside `stem`; the caller moves it."""
        if urlsplit(url).scheme.lower() not in ("http", "https"):
            raise MediaUnavailable("The file's URL is not an http(s) URL.")
        stem.parent.mkdir(parents=True, exist_ok=True)
        temp = _temp_beside(stem)
        try:
            async with asyncio.timeout(DOWNLOAD_DEADLINE_SECONDS):
                declared, head, size = await self._stream_into(url, temp, limit)
            content_type = _stored_type(head, declared)
            if content_type is None:
                raise MediaUnavailable("The file is not an image, video or audio file.")
        except BaseException as error:
            temp.unlink(missing_ok=True)
            if isinstance(error, TimeoutError | httpx.HTTPError):
                raise _unavailable(error) from None
            raise
        return _Download(temp, content_type, size)

    async def _stream_into(
        self, url: str, temp: Path, limit: int
    ) -> tuple[str, bytes, int]:
        """Write the body to `temp`; return the declared type, the first
        bytes and the size."""
        response = await self._follow(url)
        try:
            if response.status_code >= 400:
                raise MediaUnavailable(
                    f"The file could not be downloaded (HTTP {response.status_code})."
                )
            declared_length = response.headers.get("content-length", "")
            if (
                declared_length.isascii()
                and declared_length.isdigit()
                and int(declared_length) > limit
            ):
                raise _too_large(limit)
            head = b""
            size = 0
            with temp.open("wb") as file:
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise _too_large(limit)
                    if len(head) < _SNIFF_BYTES:
                        head += chunk[: _SNIFF_BYTES - len(head)]
                    await asyncio.to_thread(file.write, chunk)
                await asyncio.to_thread(_flush_to_disk, file)
            return response.headers.get("content-type", ""), head, size
        finally:
            await response.aclose()

    async def _follow(self, url: str) -> httpx.Response:
        """The streamed response at the end of at most MAX_REDIRECTS
        redirects. A URL on the public internet may not redirect to a private
        or local address: that would have this service fetch, and store as a
        user's media, something inside our network (a metadata service, an
        admin port). A private URL (a provider simulator, a CDN inside the
        cluster) was configured by the operator and may redirect anywhere."""
        request = self._http.build_request("GET", url)
        public = not names_a_private_host(request.url.host)
        for _ in range(MAX_REDIRECTS + 1):
            response = await self._http.send(request, stream=True)
            following = response.next_request
            if following is None:
                return response
            await response.aclose()
            if public and names_a_private_host(following.url.host):
                log.warning("media.private_redirect_refused", host=following.url.host)
                raise MediaUnavailable("The file's URL redirects to a private address.")
            request = following
        raise MediaUnavailable("The file's URL redirects too often.")


def _flush_to_disk(file: BinaryIO) -> None:
    file.flush()
    os.fsync(file.fileno())


def _unavailable(error: TimeoutError | httpx.HTTPError) -> MediaUnavailable:
    if isinstance(error, TimeoutError):
        return MediaUnavailable("The file took too long to download.")
    if isinstance(error, httpx.TooManyRedirects):
        return MediaUnavailable("The file's URL redirects too often.")
    return MediaUnavailable(
        f"The file could not be downloaded ({type(error).__name__})."
    )


def _too_large(limit: int) -> MediaUnavailable:
    megabytes = limit / (1024 * 1024)
    return MediaUnavailable(f"The file is larger than {megabytes:g} MB.")


def _stored_type(head: bytes, declared: str) -> str | None:
    """Trust the bytes over the header; fall back to the header only for a
    type we store (some encoders start files with unusual boxes)."""
    sniffed = sniff_media_type(head)
    if sniffed is not None:
        return sniffed
    declared = declared.split(";", 1)[0].strip().lower()
    return declared if declared in EXTENSIONS else None
