"""GET /media/<key> serves stored outputs from MEDIA_DIR to anyone, with
long caching and CORS, and nothing outside that directory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import httpx
import pytest
from PIL import Image

from gateway.app import create_app
from libs.config import Settings
from services.auth.main import AuthProcess
from services.generation.storage import LocalMediaStore
from tests.gateway.factories import assert_error
from tests.suite import ServedApp, serve_asgi

SECRET = b"database password, not media"
MP4_BYTES = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(range(256)) * 8


def png_bytes() -> bytes:
    out = BytesIO()
    Image.new("RGB", (64, 48), "purple").save(out, "PNG")
    return out.getvalue()


PNG = png_bytes()


@dataclass(frozen=True)
class MediaGateway:
    served: ServedApp
    root: Path

    def client(self) -> httpx.AsyncClient:
        return self.served.client()


@pytest.fixture(scope="module")
async def media(
    settings: Settings,
    auth_service: AuthProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[MediaGateway]:
    """A gateway whose MEDIA_DIR is a fresh directory, with a secret file
    beside it that must never be served."""
    base = tmp_path_factory.mktemp("media-gateway")
    root = base / "media"
    (root / "generations/g1").mkdir(parents=True)
    (root / "generations/g1/0.png").write_bytes(PNG)
    (root / "generations/g1/0.mp4").write_bytes(MP4_BYTES)
    (root / "generations/g1/.0.png.3f2a.part").write_bytes(PNG)
    (root / "generations/g1/notes.txt").write_bytes(b"<script>alert(1)</script>")
    (base / "secret.txt").write_bytes(SECRET)
    (root / "generations/g1/link.png").symlink_to(base / "secret.txt")
    served = await serve_asgi(
        create_app(settings.model_copy(update={"media_dir": str(root)}))
    )
    yield MediaGateway(served, root)
    await served.stop()


async def raw_get(url: str, target: str) -> tuple[int, bytes]:
    """Send `target` byte for byte, as a client that does not normalise
    paths would (httpx removes `..` segments before sending)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    )
    await writer.drain()
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), rest


async def test_a_stored_image_is_served_with_its_type(media: MediaGateway) -> None:
    async with media.client() as http:
        response = await http.get("/media/generations/g1/0.png")

    assert response.status_code == 200
    assert response.content == PNG
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_media_may_be_cached_for_a_year(media: MediaGateway) -> None:
    async with media.client() as http:
        response = await http.get("/media/generations/g1/0.png")

    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"


async def test_media_may_be_downloaded_from_any_origin(media: MediaGateway) -> None:
    async with media.client() as http:
        response = await http.get(
            "/media/generations/g1/0.png",
            headers={"Origin": "https://someone-else.example"},
        )

    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"


async def test_a_video_is_served_in_ranges(media: MediaGateway) -> None:
    async with media.client() as http:
        response = await http.get(
            "/media/generations/g1/0.mp4", headers={"Range": "bytes=100-199"}
        )

    assert response.status_code == 206
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["content-range"] == f"bytes 100-199/{len(MP4_BYTES)}"
    assert response.content == MP4_BYTES[100:200]


async def test_head_answers_without_a_body(media: MediaGateway) -> None:
    async with media.client() as http:
        response = await http.head("/media/generations/g1/0.mp4")

    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(MP4_BYTES))
    assert response.content == b""


async def test_a_file_of_another_type_is_only_offered_as_bytes(
    media: MediaGateway,
) -> None:
    async with media.client() as http:
        response = await http.get("/media/generations/g1/notes.txt")

    assert response.headers["content-type"] == "application/octet-stream"


async def test_a_missing_file_is_404_in_the_error_shape(media: MediaGateway) -> None:
    async with media.client() as http:
        response = await http.get("/media/generations/g1/7.png")

    body = assert_error(response, 404, "not_found")
    assert body["error"] == "This media file does not exist."


async def test_a_directory_is_not_served(media: MediaGateway) -> None:
    async with media.client() as http:
        response = await http.get("/media/generations/g1")

    assert_error(response, 404, "not_found")


async def test_a_temp_file_of_the_store_is_not_served(media: MediaGateway) -> None:
    async with media.client() as http:
        response = await http.get("/media/generations/g1/.0.png.3f2a.part")

    assert_error(response, 404, "not_found")


async def test_a_symlink_out_of_the_directory_is_not_followed(
    media: MediaGateway,
) -> None:
    async with media.client() as http:
        response = await http.get("/media/generations/g1/link.png")

    assert_error(response, 404, "not_found")
    assert SECRET not in response.content


@pytest.mark.parametrize(
    "target",
    [
        "/media/../secret.txt",
        "/media/generations/../../secret.txt",
        "/media/%2e%2e/secret.txt",
        "/media/..%2fsecret.txt",
        "/media/generations%2f..%2f..%2fsecret.txt",
        "/media//etc/passwd",
        "/media/%2fetc%2fpasswd",
        "/media/generations/g1/..%5c..%5c..%5csecret.txt",
    ],
)
async def test_a_path_out_of_the_directory_is_refused(
    media: MediaGateway, target: str
) -> None:
    status, rest = await raw_get(media.served.url, target)

    assert status == 404
    assert b'"code":"not_found"' in rest
    assert SECRET not in rest
    assert b"root:" not in rest


async def test_a_file_the_media_store_wrote_is_served_at_its_url(
    media: MediaGateway,
) -> None:
    store = LocalMediaStore(media.root, f"{media.served.url}/media")
    try:
        url = await store.put("inputs/gen-9/0", PNG, "image/png")
    finally:
        await store.close()

    async with httpx.AsyncClient(timeout=15.0) as http:
        response = await http.get(url)

    assert response.status_code == 200
    assert response.content == PNG
