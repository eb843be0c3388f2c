"""services/chat/prompts.py: what a message may be, what the model is sent,
and the titles made from a conversation's first message."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable

import pytest

from libs.errors import InvalidArgument
from services.chat.prompts import (
    IMAGE_TOKENS,
    MAX_CONTENT_LENGTH,
    MAX_IMAGE_BYTES,
    MESSAGE_OVERHEAD_TOKENS,
    Turn,
    assemble,
    check_content,
    check_images,
    clean_title,
    enhance_request,
    estimate_tokens,
    fallback_title,
    history_budget,
    refuse_private_image_hosts,
    variation,
)

PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG fake").decode()


def _field(error: pytest.ExceptionInfo[InvalidArgument]) -> str:
    return error.value.violations[0].field


class TestEstimateTokens:
    def test_a_token_per_three_bytes_rounded_up(self) -> None:
        assert estimate_tokens("") == 0
        assert estimate_tokens("Hello") == 2
        assert estimate_tokens("abcdef") == 2

    def test_multibyte_text_counts_its_bytes(self) -> None:
        # Three characters of three bytes each.
        assert estimate_tokens("日本語") == 3


class TestCheckContent:
    def test_blank_message_without_images_is_refused(self) -> None:
        with pytest.raises(InvalidArgument) as error:
            check_content(" \n ", has_images=False)
        assert _field(error) == "content"

    def test_blank_message_with_images_is_accepted(self) -> None:
        assert check_content("", has_images=True) == ""

    def test_too_long_message_is_refused(self) -> None:
        with pytest.raises(InvalidArgument):
            check_content("x" * (MAX_CONTENT_LENGTH + 1), has_images=False)


class TestCheckImages:
    def test_addresses_and_data_urls_are_accepted(self) -> None:
        urls = ["https://example.com/cat.png", PNG]
        assert check_images(urls) == tuple(urls)

    def test_more_than_four_are_refused(self) -> None:
        with pytest.raises(InvalidArgument) as error:
            check_images([PNG] * 5)
        assert _field(error) == "image_urls"

    @pytest.mark.parametrize(
        "url",
        [
            "ftp://example.com/cat.png",
            "javascript:alert(1)",
            "https://",
            "data:text/html;base64,PGgxPg==",
            "data:image/svg+xml;base64,PHN2Zz4=",
            "data:image/png,not-base64-encoded",
            "data:image/png;base64,!!!",
        ],
    )
    def test_what_is_not_an_image_is_refused_by_position(self, url: str) -> None:
        with pytest.raises(InvalidArgument) as error:
            check_images([PNG, url])
        assert _field(error) == "image_urls.1"

    def test_an_image_over_the_size_limit_is_refused(self) -> None:
        payload = "A" * (MAX_IMAGE_BYTES * 4 // 3 + 8)
        with pytest.raises(InvalidArgument) as error:
            check_images([f"data:image/jpeg;base64,{payload}"])
        assert "MB" in error.value.message


def resolving(table: dict[str, list[str]]) -> Callable[[str], Awaitable[list[str]]]:
    async def resolve(host: str) -> list[str]:
        return table.get(host, [])

    return resolve


class TestImageHosts:
    async def test_names_resolving_publicly_pass_and_data_urls_are_not_resolved(
        self,
    ) -> None:
        asked: list[str] = []

        async def resolve(host: str) -> list[str]:
            asked.append(host)
            return ["93.184.215.14"]

        await refuse_private_image_hosts(
            ["https://cdn.example/cat.png", PNG], resolve=resolve
        )

        assert asked == ["cdn.example"]

    @pytest.mark.parametrize(
        "addresses",
        [["10.0.0.7"], ["93.184.215.14", "127.0.0.1"], ["::ffff:169.254.169.254"]],
    )
    async def test_a_name_resolving_to_any_private_address_is_refused_by_position(
        self, addresses: list[str]
    ) -> None:
        resolve = resolving(
            {"good.example": ["93.184.215.14"], "bad.example": addresses}
        )

        with pytest.raises(InvalidArgument) as error:
            await refuse_private_image_hosts(
                ["https://good.example/a.png", "https://bad.example/b.png"],
                resolve=resolve,
            )

        assert _field(error) == "image_urls.1"
        assert "must be public" in error.value.message

    async def test_a_name_that_resolves_to_nothing_is_refused(self) -> None:
        with pytest.raises(InvalidArgument) as error:
            await refuse_private_image_hosts(
                ["https://nowhere.example/a.png"], resolve=resolving({})
            )

        assert "not found" in error.value.message


class TestAssemble:
    def test_system_prompt_history_and_message_in_order(self) -> None:
        history = [Turn("user", "one"), Turn("assistant", "two")]

        prompt = assemble(
            "Be brief.", history, Turn("user", "three"), vision=False, token_budget=500
        )

        assert prompt.messages == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "two"},
            {"role": "user", "content": "three"},
        ]
        assert prompt.input_tokens == 4 * MESSAGE_OVERHEAD_TOKENS + sum(
            estimate_tokens(text) for text in ("Be brief.", "one", "two", "three")
        )

    def test_oldest_history_is_left_out_beyond_the_budget(self) -> None:
        history = [Turn("user", "x" * 300), Turn("assistant", "recent")]
        new = Turn("user", "now")
        budget = new.tokens(False) + history[1].tokens(False)

        prompt = assemble("", history, new, vision=False, token_budget=budget)

        assert [m["content"] for m in prompt.messages] == ["recent", "now"]
        assert prompt.history_used == 1

    def test_a_message_alone_over_the_budget_is_refused(self) -> None:
        with pytest.raises(InvalidArgument) as error:
            assemble("", [], Turn("user", "x" * 300), vision=False, token_budget=50)
        assert _field(error) == "content"

    def test_images_are_parts_for_a_vision_model(self) -> None:
        new = Turn("user", "What is it?", (PNG,))

        prompt = assemble("", [], new, vision=True, token_budget=5000)

        assert prompt.messages[0]["content"] == [
            {"type": "text", "text": "What is it?"},
            {"type": "image_url", "image_url": {"url": PNG}},
        ]
        assert prompt.input_tokens == new.tokens(False) + IMAGE_TOKENS

    def test_history_budget_leaves_room_for_the_longest_reply(self) -> None:
        assert history_budget(8192, 4096) == 4096
        assert history_budget(128_000, 16_384) == 16_000
        assert history_budget(4096, 8192) == 0


class TestTitles:
    @pytest.mark.parametrize(
        ("answer", "title"),
        [
            ('"Trip to Oslo"', "Trip to Oslo"),
            ("\n\n**Trip to Oslo.**\nMore text", "Trip to Oslo"),
            ("   ", None),
        ],
    )
    def test_clean_title_takes_the_first_line(
        self, answer: str, title: str | None
    ) -> None:
        assert clean_title(answer) == title

    def test_long_titles_end_at_a_word(self) -> None:
        title = clean_title("word " * 30)
        assert title is not None
        assert len(title) <= 60
        assert title.endswith("word")

    def test_fallback_is_the_first_fifty_characters(self) -> None:
        assert fallback_title("Short  question") == "Short question"
        assert fallback_title("y" * 80) == "y" * 50 + "..."
        assert fallback_title("") == "Image conversation"


class TestEnhanceRequest:
    @pytest.mark.parametrize(
        ("given", "name"),
        [
            ("", "enhance"),
            ("subtle", "slight_variation"),
            ("strong", "strong_variation"),
            ("slight_variation", "slight_variation"),
        ],
    )
    def test_variation_names_of_both_clients(self, given: str, name: str) -> None:
        assert variation(given) == name

    def test_unknown_variation_is_refused(self) -> None:
        with pytest.raises(InvalidArgument):
            variation("wild")

    def test_an_image_alone_asks_to_describe_it(self) -> None:
        turns = enhance_request("enhance", "", [PNG])
        assert turns[1].image_urls == (PNG,)
        assert "Describe this image" in turns[1].content

    def test_neither_prompt_nor_image_is_refused(self) -> None:
        with pytest.raises(InvalidArgument):
            enhance_request("enhance", "  ", [])
