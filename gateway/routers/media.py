"""GET /media/<key>: generation outputs and reference images that the
generation service copied into MEDIA_DIR (services/generation/storage.py).

No sign-in: the paths hold random UUIDs, and the public share page and
other sites download the files cross-origin. Files never change once
written, so browsers and CDNs may keep them for a year.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from gateway.errors import error_response
from libs.config import Settings

router = APIRouter(tags=["media"])

# The types the media store writes, by the extension it gives them. Anything
# else is served as bytes to download, never as something a browser renders.
CONTENT_TYPES: dict[str, str] = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".mov": "video/quicktime",
    ".mp3": "audio/mpeg",
    ".wav": "audio/wav",
}
MEDIA_HEADERS = {
    "Cache-Control": "public, max-age=31536000, immutable",
    "X-Content-Type-Options": "nosniff",
    "Access-Control-Allow-Origin": "*",
}
# What the store's keys allow: no empty, "." or ".."-like segment, no
# hidden file (its temp files start with a dot), no backslash.
_MEDIA_PATH = re.compile(
    r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$"
)
_MAX_PATH_LENGTH = 1024


@router.get(
    "/media/{key:path}",
    response_class=FileResponse,
    responses={404: {"description": "No such media file"}},
)
@router.head("/media/{key:path}", include_in_schema=False)
async def media_file(key: str, request: Request) -> Response:
    """A stored file, with Range support for video seeking."""
    settings: Settings = request.app.state.settings
    found = await asyncio.to_thread(_regular_file, settings.media_dir, key)
    if found is None:
        return error_response(404, "This media file does not exist.", "not_found")
    path, stat_result = found
    return FileResponse(
        path,
        media_type=CONTENT_TYPES.get(path.suffix, "application/octet-stream"),
        headers=MEDIA_HEADERS,
        stat_result=stat_result,
    )


def _regular_file(media_dir: str, key: str) -> tuple[Path, os.stat_result] | None:
    """The file `key` names inside `media_dir`, or None if it names nothing
    there. The pattern refuses traversal; resolving guards against symlinks
    that point out of the directory."""
    if len(key) > _MAX_PATH_LENGTH or not _MEDIA_PATH.match(key):
        return None
    root = Path(media_dir).resolve()
    path = (root / key).resolve()
    if not path.is_relative_to(root):
        return None
    try:
        stat_result = path.stat()
    except OSError:
        return None
    if not stat.S_ISREG(stat_result.st_mode):
        return None
    return path, stat_result
