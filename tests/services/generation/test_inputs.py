"""Reference images are checked before fal ever sees them: only public
http(s) URLs and real PNG/JPEG/WebP/GIF uploads, within the model's count."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from io import BytesIO
from pathlib import Path

import pytest
from PIL import Image

from libs.errors import InvalidArgument
from services.generation.inputs import (
    MAX_INPUT_IMAGE_BYTES,
    InputImage,
    parse_input_images,
    refuse_private_hosts,
    store_inline_images,
)
from services.generation.storage import LocalMediaStore

BASE_URL = "https://cdn.omnihub.test/media"
PUBLIC_URL = "https://images.example.com/cat.png"


def image_bytes(image_format: str, size: tuple[int, int] = (32, 24)) -> bytes:
    out = BytesIO()
    Image.new("RGB", size, "orange").save(out, image_format)
    return out.getvalue()


def data_url(content_type: str, data: bytes) -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode()}"


PNG = image_bytes("PNG")
PNG_URL = data_url("image/png", PNG)


def refusal(values: list[object], max_count: int = 4) -> tuple[str, str]:
    """The field and sentence of the only problem found."""
    with pytest.raises(InvalidArgument) as caught:
        parse_input_images(values, max_count=max_count)
    violations = caught.value.violations
    assert len(violations) == 1, violations
    assert caught.value.message == violations[0].message
    return violations[0].field, violations[0].message


def refused_message(values: list[object], max_count: int = 4) -> str:
    return refusal(values, max_count)[1]


def resolving_to(*addresses: str) -> Callable[[str], Awaitable[list[str]]]:
    async def resolve(host: str) -> list[str]:
        return list(addresses)

    return resolve


def http_image(url: str) -> InputImage:
    return InputImage(provider_url=url, display_url=url, inline=None, content_type=None)


class TestAccepted:
    def test_a_png_data_url_is_decoded(self) -> None:
        [image] = parse_input_images([PNG_URL], max_count=1)

        assert image.inline == PNG
        assert image.content_type == "image/png"
        assert image.provider_url == PNG_URL

    def test_an_https_url_is_kept_as_given(self) -> None:
        [image] = parse_input_images([PUBLIC_URL], max_count=1)

        assert image == http_image(PUBLIC_URL)

    @pytest.mark.parametrize(
        ("content_type", "image_format"),
        [("image/jpeg", "JPEG"), ("image/webp", "WEBP"), ("image/gif", "GIF")],
    )
    def test_each_other_image_type_is_accepted(
        self, content_type: str, image_format: str
    ) -> None:
        data = image_bytes(image_format)

        [image] = parse_input_images([data_url(content_type, data)], max_count=1)

        assert image.content_type == content_type
        assert image.inline == data

    def test_no_images_are_accepted_by_a_model_without_image_input(self) -> None:
        assert parse_input_images([], max_count=0) == []


class TestRefused:
    def test_more_than_the_model_takes(self) -> None:
        field, message = refusal([PUBLIC_URL] * 3, max_count=2)

        assert field == "inputImages"
        assert message == "This model takes at most 2 reference images."

    def test_any_for_a_model_that_takes_none(self) -> None:
        message = refused_message([PUBLIC_URL], max_count=0)

        assert message == "This model does not take reference images."

    def test_not_a_string(self) -> None:
        field, message = refusal([PUBLIC_URL, 42])

        assert field == "inputImages[1]"
        assert message == "Reference image 2 must be a URL or an uploaded image."

    def test_empty(self) -> None:
        assert refusal(["  "]) == ("inputImages[0]", "Reference image 1 is empty.")

    def test_url_longer_than_2048_characters(self) -> None:
        long_url = "https://images.example.com/" + "a" * 2048

        field, message = refusal([long_url])

        assert field == "inputImages[0]"
        assert "longer than 2048 characters" in message

    @pytest.mark.parametrize(
        "url", ["ftp://images.example.com/a.png", "file:///etc/passwd", "javascript:1"]
    )
    def test_scheme_other_than_http_https_or_data(self, url: str) -> None:
        message = refused_message([url])

        assert message == (
            "Reference image 1 must be an http or https URL or an uploaded image."
        )

    def test_url_with_user_and_password(self) -> None:
        message = refused_message(["https://me:secret@images.example.com/a.png"])

        assert "user name or password" in message

    @pytest.mark.parametrize(
        "url", ["http://localhost:8080/a.png", "http://api.localhost/a.png"]
    )
    def test_localhost(self, url: str) -> None:
        message = refused_message([url])

        assert message == "Reference image 1 points to this server; use a public URL."

    @pytest.mark.parametrize(
        "host",
        [
            "[::1]",
            "10.1.2.3",
            "169.254.169.254",
            "[::ffff:127.0.0.1]",
            "127.0.0.1",
            "192.168.0.10",
            "0.0.0.0",  # noqa: S104 - an address to refuse, not to bind
            "224.0.0.1",
            "[fe80::1]",
            "[fd00::5]",
            "2130706433",
            "0x7f.1",
        ],
    )
    def test_private_or_local_ip_literal(self, host: str) -> None:
        message = refused_message([f"http://{host}/latest/meta-data"])

        assert message == (
            "Reference image 1 points to a private or local address; use a public URL."
        )

    def test_malformed_url(self) -> None:
        assert refusal(["http://[not-an-address]/a.png"])[1] == (
            "Reference image 1 is not a valid URL."
        )

    def test_data_url_of_a_type_we_do_not_take(self) -> None:
        svg = data_url("image/svg+xml", b"<svg onload='alert(1)'/>")

        field, message = refusal([PUBLIC_URL, svg])

        assert field == "inputImages[1]"
        assert message == "Reference image 2 is not a PNG, JPEG, WebP or GIF image."

    def test_data_url_that_is_not_base64(self) -> None:
        message = refused_message(["data:image/png,%89PNG"])

        assert message == "Reference image 1 is not a PNG, JPEG, WebP or GIF image."

    def test_bad_base64(self) -> None:
        message = refused_message(["data:image/png;base64,iVBOR w0K!!"])

        assert message == "Reference image 1 is not valid base64 data."

    def test_larger_than_the_limit(self) -> None:
        oversized = PNG + bytes(MAX_INPUT_IMAGE_BYTES)

        message = refused_message([data_url("image/png", oversized)])

        assert message == "Reference image 1 is larger than 10 MB."

    def test_bytes_of_another_image_type(self) -> None:
        jpeg_as_png = data_url("image/png", image_bytes("JPEG"))

        message = refused_message([jpeg_as_png])

        assert message == "Reference image 1 is not really a PNG image."

    def test_bytes_that_are_no_image(self) -> None:
        message = refused_message([data_url("image/gif", b"<html>not a gif</html>")])

        assert message == "Reference image 1 is not really a GIF image."

    def test_damaged_image(self) -> None:
        truncated = data_url("image/png", PNG[: len(PNG) // 2])

        message = refused_message([truncated])

        assert message == "Reference image 1 is a damaged PNG image."

    def test_every_problem_is_reported_at_once(self) -> None:
        with pytest.raises(InvalidArgument) as caught:
            parse_input_images(
                ["ftp://a.example/x", PUBLIC_URL, "http://10.0.0.1/"], max_count=4
            )

        fields = [violation.field for violation in caught.value.violations]
        assert fields == ["inputImages[0]", "inputImages[2]"]


class TestRefusePrivateHosts:
    async def test_a_host_resolving_to_public_addresses_is_accepted(self) -> None:
        images = parse_input_images([PUBLIC_URL], max_count=1)

        await refuse_private_hosts(
            images, resolver=resolving_to("93.184.215.14", "2606:2800:21f:cb07::1")
        )

    async def test_a_host_resolving_to_a_private_address_is_refused(self) -> None:
        images = parse_input_images([PNG_URL, PUBLIC_URL], max_count=2)

        with pytest.raises(InvalidArgument) as caught:
            await refuse_private_hosts(
                images, resolver=resolving_to("93.184.215.14", "10.0.0.7")
            )

        [violation] = caught.value.violations
        assert violation.field == "inputImages[1]"
        assert "private or local address" in violation.message

    async def test_a_host_resolving_to_mapped_loopback_is_refused(self) -> None:
        images = parse_input_images([PUBLIC_URL], max_count=1)

        with pytest.raises(InvalidArgument):
            await refuse_private_hosts(
                images, resolver=resolving_to("::ffff:127.0.0.1")
            )

    async def test_an_unresolvable_host_is_refused(self) -> None:
        async def not_found(host: str) -> list[str]:
            raise OSError(f"no address for {host}")

        images = parse_input_images([PUBLIC_URL], max_count=1)

        with pytest.raises(InvalidArgument) as caught:
            await refuse_private_hosts(images, resolver=not_found)

        assert caught.value.message == (
            "Reference image 1 has a host name that was not found."
        )

    async def test_the_system_resolver_is_used_by_default(self) -> None:
        # An IP literal resolves without a DNS server; parse_input_images
        # would refuse it earlier, so the image is built by hand.
        with pytest.raises(InvalidArgument) as caught:
            await refuse_private_hosts([http_image("http://127.0.0.1:9/a.png")])

        assert "private or local address" in caught.value.message

    async def test_inline_images_are_not_resolved(self) -> None:
        async def must_not_resolve(host: str) -> list[str]:
            raise AssertionError(host)

        images = parse_input_images([PNG_URL], max_count=1)

        await refuse_private_hosts(images, resolver=must_not_resolve)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[LocalMediaStore]:
    media = LocalMediaStore(tmp_path, BASE_URL)
    yield media
    await media.close()


class TestStoreInlineImages:
    async def test_inline_images_are_stored_and_shown_by_our_url(
        self, store: LocalMediaStore
    ) -> None:
        images = parse_input_images([PUBLIC_URL, PNG_URL], max_count=2)

        shown = await store_inline_images(images, store, "inputs/gen-1")

        assert shown[0] == images[0]
        assert shown[1].display_url == f"{BASE_URL}/inputs/gen-1/1.png"
        assert shown[1].provider_url == PNG_URL
        assert (store.root / "inputs/gen-1/1.png").read_bytes() == PNG
