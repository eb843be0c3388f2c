"""The media store copies provider files over real loopback HTTP into a
directory, names them by key and content type, and makes thumbnails."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from io import BytesIO
from pathlib import Path

import httpx
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from services.generation.storage import (
    MAX_REDIRECTS,
    THUMBNAIL_EDGE,
    InvalidMediaKey,
    LocalMediaStore,
    MediaUnavailable,
    UnsupportedMediaType,
)
from tests.suite import Recorder, ServedApp, free_port, recording_port, serve_asgi

BASE_URL = "https://cdn.omnihub.test/media"
SMALL_LIMIT = 4096
# An MP4 starts with an `ftyp` box; the rest does not matter to the store.
MP4_BYTES = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(2000)


def encoded(image: Image.Image, image_format: str, **options: object) -> bytes:
    out = BytesIO()
    image.save(out, image_format, **options)
    return out.getvalue()


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (600, 400), colour) for colour in ("red", "blue")]
    return encoded(
        frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100
    )


PHOTO = encoded(Image.new("RGB", (1200, 600), "blue"), "PNG")
POSTER = encoded(Image.new("RGB", (1280, 720), (0, 200, 0)), "JPEG")
ANIMATION = animated_gif()
NOISE = b"\x89PNG\r\n\x1a\n" + os.urandom(SMALL_LIMIT * 2)


def _serving(path: str, body: bytes, content_type: str) -> Route:
    async def endpoint(request: Request) -> Response:
        return Response(body, media_type=content_type)

    return Route(path, endpoint)


async def _streamed_noise(request: Request) -> StreamingResponse:
    """No Content-Length: the limit must hold while reading."""

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(NOISE), 1024):
            yield NOISE[start : start + 1024]

    return StreamingResponse(chunks(), media_type="image/png")


async def _redirect(request: Request) -> Response:
    hops = int(request.path_params["hops"])
    target = "/photo.png" if hops == 0 else f"/redirect/{hops - 1}"
    return RedirectResponse(target, status_code=302)


async def _redirect_to(request: Request) -> Response:
    return RedirectResponse(request.query_params["url"], status_code=302)


def _provider_app() -> Starlette:
    """A stand-in for fal's CDN."""
    files = {
        "/photo.png": (PHOTO, "image/png"),
        "/poster.jpg": (POSTER, "image/jpeg"),
        "/animation.gif": (ANIMATION, "image/gif"),
        "/clip.mp4": (MP4_BYTES, "video/mp4"),
        "/noise.png": (NOISE, "image/png"),
        "/untyped": (PHOTO, "application/octet-stream"),
        "/page.html": (b"<html><script>alert(1)</script></html>", "text/html"),
    }
    return Starlette(
        routes=[
            *(_serving(path, body, kind) for path, (body, kind) in files.items()),
            Route("/streamed-noise.png", _streamed_noise),
            Route("/redirect/{hops:int}", _redirect),
            Route("/redirect-to", _redirect_to),
        ]
    )


@pytest.fixture(scope="module")
async def provider() -> AsyncIterator[ServedApp]:
    served = await serve_asgi(_provider_app())
    yield served
    await served.stop()


# A name on the public internet, which the store's transport below sends to
# the loopback provider: as if fal's CDN answered from outside.
PUBLIC_CDN = "v3.fal.media"


class PublicCDN(httpx.AsyncBaseTransport):
    """Real HTTP on loopback: requests for PUBLIC_CDN go to `provider`,
    everything else where it names."""

    def __init__(self, provider: ServedApp) -> None:
        self._provider = httpx.URL(provider.url)
        self._http = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == PUBLIC_CDN:
            # A copy: the client resolves redirects against the request it
            # sent, which must keep the public name.
            request = httpx.Request(
                request.method,
                request.url.copy_with(
                    scheme=self._provider.scheme,
                    host=self._provider.host,
                    port=self._provider.port,
                ),
                headers=request.headers,
            )
        return await self._http.handle_async_request(request)

    async def aclose(self) -> None:
        await self._http.aclose()


@pytest.fixture
async def listener() -> AsyncIterator[Recorder]:
    async with recording_port() as found:
        yield found


@pytest.fixture
async def public_store(
    tmp_path: Path, provider: ServedApp
) -> AsyncIterator[LocalMediaStore]:
    media = LocalMediaStore(tmp_path / "media", BASE_URL, transport=PublicCDN(provider))
    yield media
    await media.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[LocalMediaStore]:
    media = LocalMediaStore(tmp_path / "media", BASE_URL)
    yield media
    await media.close()


@pytest.fixture
async def small_store(tmp_path: Path) -> AsyncIterator[LocalMediaStore]:
    media = LocalMediaStore(tmp_path / "media", BASE_URL, max_bytes=SMALL_LIMIT)
    yield media
    await media.close()


def stored_path(store: LocalMediaStore, url: str) -> Path:
    assert url.startswith(BASE_URL + "/"), url
    return store.root / url.removeprefix(BASE_URL + "/")


def files_under(root: Path) -> Iterator[Path]:
    return (path for path in root.rglob("*") if path.is_file())


def opened(store: LocalMediaStore, url: str) -> Image.Image:
    return Image.open(BytesIO(stored_path(store, url).read_bytes()))


def centre_colour(image: Image.Image) -> tuple[int, int, int]:
    rgb = image.convert("RGB")
    pixel = rgb.getpixel((rgb.width // 2, rgb.height // 2))
    assert isinstance(pixel, tuple)
    return pixel[0], pixel[1], pixel[2]


class TestPut:
    async def test_writes_the_bytes_under_the_key_and_returns_the_public_url(
        self, store: LocalMediaStore
    ) -> None:
        url = await store.put("inputs/abc/0", PHOTO, "image/png")

        assert url == f"{BASE_URL}/inputs/abc/0.png"
        assert (store.root / "inputs/abc/0.png").read_bytes() == PHOTO

    async def test_the_same_key_twice_is_one_file(self, store: LocalMediaStore) -> None:
        first = await store.put("generations/g1/0", PHOTO, "image/png")
        second = await store.put("generations/g1/0", PHOTO, "image/png")

        assert first == second
        assert [p.name for p in files_under(store.root)] == ["0.png"]

    @pytest.mark.parametrize(
        "key",
        ["../escape", "generations/../../escape", "/etc/passwd", "a//b", ".hidden", ""],
    )
    async def test_a_key_that_could_leave_the_root_is_refused(
        self, store: LocalMediaStore, key: str
    ) -> None:
        with pytest.raises(InvalidMediaKey):
            await store.put(key, PHOTO, "image/png")

        assert not store.root.parent.joinpath("escape.png").exists()

    async def test_a_type_the_store_does_not_keep_is_refused(
        self, store: LocalMediaStore
    ) -> None:
        with pytest.raises(UnsupportedMediaType):
            await store.put("inputs/x/0", b"<svg/>", "image/svg+xml")


class TestCopyFrom:
    async def test_an_image_is_copied_with_its_type_and_size(
        self, store: LocalMediaStore, provider: ServedApp
    ) -> None:
        stored = await store.copy_from(f"{provider.url}/photo.png", "generations/g/0")

        assert stored.url == f"{BASE_URL}/generations/g/0.png"
        assert stored.content_type == "image/png"
        assert stored.size == len(PHOTO)
        assert stored_path(store, stored.url).read_bytes() == PHOTO

    async def test_an_image_gets_a_thumbnail_within_300_px(
        self, store: LocalMediaStore, provider: ServedApp
    ) -> None:
        stored = await store.copy_from(f"{provider.url}/photo.png", "generations/g/0")

        assert stored.thumbnail_url == f"{BASE_URL}/generations/g/0.thumb.webp"
        thumbnail = opened(store, stored.thumbnail_url)
        assert thumbnail.format == "WEBP"
        assert thumbnail.size == (THUMBNAIL_EDGE, THUMBNAIL_EDGE // 2)

    async def test_an_animation_thumbnail_is_its_first_frame(
        self, store: LocalMediaStore, provider: ServedApp
    ) -> None:
        stored = await store.copy_from(
            f"{provider.url}/animation.gif", "generations/g/0"
        )

        assert stored.content_type == "image/gif"
        assert stored.thumbnail_url is not None
        thumbnail = opened(store, stored.thumbnail_url)
        assert not getattr(thumbnail, "is_animated", False)
        assert max(thumbnail.size) <= THUMBNAIL_EDGE
        red, green, blue = centre_colour(thumbnail)
        assert red > 200
        assert green < 60
        assert blue < 60

    async def test_a_video_without_a_provider_thumbnail_has_none(
        self, store: LocalMediaStore, provider: ServedApp
    ) -> None:
        stored = await store.copy_from(f"{provider.url}/clip.mp4", "generations/v/0")

        assert stored.url == f"{BASE_URL}/generations/v/0.mp4"
        assert stored.content_type == "video/mp4"
        assert stored.thumbnail_url is None
        assert stored_path(store, stored.url).read_bytes() == MP4_BYTES

    async def test_the_provider_thumbnail_is_used_when_given(
        self, store: LocalMediaStore, provider: ServedApp
    ) -> None:
        stored = await store.copy_from(
            f"{provider.url}/clip.mp4",
            "generations/v/0",
            thumbnail_source=f"{provider.url}/poster.jpg",
        )

        assert stored.thumbnail_url == f"{BASE_URL}/generations/v/0.thumb.webp"
        thumbnail = opened(store, stored.thumbnail_url)
        assert thumbnail.size == (THUMBNAIL_EDGE, 169)
        red, green, blue = centre_colour(thumbnail)
        assert green > 150
        assert red < 60
        assert blue < 60

    async def test_a_missing_provider_thumbnail_leaves_the_video_stored(
        self, store: LocalMediaStore, provider: ServedApp
    ) -> None:
        stored = await store.copy_from(
            f"{provider.url}/clip.mp4",
            "generations/v/0",
            thumbnail_source=f"{provider.url}/gone.jpg",
        )

        assert stored.thumbnail_url is None
        assert stored_path(store, stored.url).read_bytes() == MP4_BYTES
        assert [p.name for p in files_under(store.root)] == ["0.mp4"]

    async def test_a_missing_source_raises_media_unavailable(
        self, store: LocalMediaStore, provider: ServedApp
    ) -> None:
        with pytest.raises(MediaUnavailable, match="HTTP 404"):
            await store.copy_from(f"{provider.url}/gone.png", "generations/g/0")

        assert list(files_under(store.root)) == []

    async def test_an_unreachable_source_raises_media_unavailable(
        self, store: LocalMediaStore
    ) -> None:
        closed_port = free_port()

        with pytest.raises(MediaUnavailable, match="could not be downloaded"):
            await store.copy_from(
                f"http://127.0.0.1:{closed_port}/a.png", "generations/g/0"
            )

        assert list(files_under(store.root)) == []

    async def test_a_source_over_the_limit_is_refused_by_its_length(
        self, small_store: LocalMediaStore, provider: ServedApp
    ) -> None:
        with pytest.raises(MediaUnavailable, match="larger than"):
            await small_store.copy_from(f"{provider.url}/noise.png", "generations/g/0")

        assert list(files_under(small_store.root)) == []

    async def test_a_source_over_the_limit_is_refused_while_reading(
        self, small_store: LocalMediaStore, provider: ServedApp
    ) -> None:
        with pytest.raises(MediaUnavailable, match="larger than"):
            await small_store.copy_from(
                f"{provider.url}/streamed-noise.png", "generations/g/0"
            )

        assert list(files_under(small_store.root)) == []

    async def test_up_to_three_redirects_are_followed(
        self, store: LocalMediaStore, provider: ServedApp
    ) -> None:
        stored = await store.copy_from(
            f"{provider.url}/redirect/{MAX_REDIRECTS - 1}", "generations/g/0"
        )

        assert stored_path(store, stored.url).read_bytes() == PHOTO

    async def test_more_redirects_are_refused(
        self, store: LocalMediaStore, provider: ServedApp
    ) -> None:
        with pytest.raises(MediaUnavailable, match="redirects"):
            await store.copy_from(
                f"{provider.url}/redirect/{MAX_REDIRECTS}", "generations/g/0"
            )

    async def test_a_public_url_is_followed_to_a_public_one(
        self, public_store: LocalMediaStore
    ) -> None:
        stored = await public_store.copy_from(
            f"https://{PUBLIC_CDN}/redirect/1", "generations/g/0"
        )

        assert stored_path(public_store, stored.url).read_bytes() == PHOTO

    @pytest.mark.parametrize(
        "target",
        [
            "http://127.0.0.1:{port}/latest/meta-data",
            "http://localhost:{port}/",
            "http://[::ffff:127.0.0.1]:{port}/",
            "http://2130706433:{port}/",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.1/",
        ],
    )
    async def test_a_public_url_redirecting_to_a_private_address_is_refused(
        self, public_store: LocalMediaStore, listener: Recorder, target: str
    ) -> None:
        private = target.format(port=listener.port)

        with pytest.raises(MediaUnavailable, match="private address"):
            await public_store.copy_from(
                f"https://{PUBLIC_CDN}/redirect-to?url={private}", "generations/g/0"
            )

        assert listener.hits == 0
        assert list(files_under(public_store.root)) == []

    async def test_a_private_url_may_redirect_to_a_private_one(
        self, store: LocalMediaStore, provider: ServedApp
    ) -> None:
        stored = await store.copy_from(
            f"{provider.url}/redirect-to?url={provider.url}/photo.png",
            "generations/g/0",
        )

        assert stored_path(store, stored.url).read_bytes() == PHOTO

    async def test_a_url_that_is_not_http_is_refused(
        self, store: LocalMediaStore
    ) -> None:
        with pytest.raises(MediaUnavailable, match="http"):
            await store.copy_from("file:///etc/passwd", "generations/g/0")

        assert list(files_under(store.root)) == []

    async def test_a_source_that_is_not_media_is_refused(
        self, store: LocalMediaStore, provider: ServedApp
    ) -> None:
        with pytest.raises(MediaUnavailable, match="not an image"):
            await store.copy_from(f"{provider.url}/page.html", "generations/g/0")

        assert list(files_under(store.root)) == []

    async def test_the_type_is_read_from_the_bytes_when_the_header_is_vague(
        self, store: LocalMediaStore, provider: ServedApp
    ) -> None:
        stored = await store.copy_from(f"{provider.url}/untyped", "generations/g/0")

        assert stored.content_type == "image/png"
        assert stored.url.endswith("/generations/g/0.png")

    async def test_copying_the_same_key_twice_leaves_one_file(
        self, store: LocalMediaStore, provider: ServedApp
    ) -> None:
        first = await store.copy_from(f"{provider.url}/photo.png", "generations/g/0")
        second = await store.copy_from(f"{provider.url}/photo.png", "generations/g/0")

        assert first == second
        names = sorted(p.name for p in files_under(store.root))
        assert names == ["0.png", "0.thumb.webp"]

    async def test_a_key_with_dot_dot_is_refused_before_downloading(
        self, store: LocalMediaStore, provider: ServedApp
    ) -> None:
        with pytest.raises(InvalidMediaKey):
            await store.copy_from(f"{provider.url}/photo.png", "../outside/0")

        assert not (store.root.parent / "outside").exists()
