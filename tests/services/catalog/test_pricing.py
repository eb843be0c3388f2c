"""The one pricing rule, on the seeded models, without a database.

Each worked example of the specification (§2.5.7) that the single rule covers
is one test; where the rule's answer differs from the original's display or
charge figure the docstring says why.
"""

from __future__ import annotations

from decimal import Decimal
from functools import cache

import pytest

from libs.errors import InvalidArgument
from services.catalog import pricing
from services.catalog.models import Model
from services.catalog.pricing import PricingSettings
from services.catalog.seed import load_seed
from services.catalog.service import CatalogModel

DEFAULTS = PricingSettings(
    profit_margin=Decimal(0),
    profit_margin_image=Decimal(0),
    profit_margin_video=Decimal(0),
    profit_margin_chat=Decimal(0),
    credit_price_micros=1_000_000,
)


@cache
def seeded(model_id: str) -> CatalogModel:
    rows = {row["id"]: row for row in load_seed()}
    return CatalogModel.from_row(Model(**rows[model_id], enabled=True, thumbnail=None))


def settings(**changes: object) -> PricingSettings:
    values = {
        "profit_margin": DEFAULTS.profit_margin,
        "profit_margin_image": DEFAULTS.profit_margin_image,
        "profit_margin_video": DEFAULTS.profit_margin_video,
        "profit_margin_chat": DEFAULTS.profit_margin_chat,
        "credit_price_micros": DEFAULTS.credit_price_micros,
        **changes,
    }
    return PricingSettings(**values)  # type: ignore[arg-type]


def price(
    model_id: str,
    options: dict[str, str] | None = None,
    count: int = 0,
    with_settings: PricingSettings = DEFAULTS,
) -> int:
    return pricing.quote(
        seeded(model_id), options or {}, count, with_settings
    ).price_micros


def refusal(model_id: str, options: dict[str, str], count: int = 0) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        pricing.quote(seeded(model_id), options, count, DEFAULTS)
    return caught.value


def fields(error: InvalidArgument) -> list[str]:
    return [violation.field for violation in error.violations]


class TestWorkedExamples:
    def test_example_1_half_size_four_images(self) -> None:
        """num_images=4 is the count q, not a multiplier: 0.04 x 0.5 x 4."""
        assert (
            price("fal-flux-pro-v1.1", {"image_size": "square", "num_images": "4"})
            == 80_000
        )

    def test_example_2_image_margin_and_credit_price(self) -> None:
        """0.08 x 1.2 / 0.01 = 9.6 credits: quote and charge are the same rule
        (the original charged 0.096)."""
        quoted = price(
            "fal-flux-pro-v1.1",
            {"image_size": "square", "num_images": "4"},
            with_settings=settings(
                profit_margin_image=Decimal(20), credit_price_micros=10_000
            ),
        )
        assert quoted == 9_600_000

    def test_example_3_veo_short_full_hd_with_audio(self) -> None:
        """1.6 x 0.5 x 1.5 x 2 = 2.4 exactly (the original's float gave
        2.4000000000000004 before rounding); the omitted aspect_ratio
        defaults to 16:9, which is x1."""
        options = {"duration": "4s", "resolution": "1080p", "generate_audio": "true"}
        assert price("fal-veo3.1-t2v", options) == 2_400_000

    def test_example_4_video_margin_and_credit_price_every_option_given(self) -> None:
        """Every option of the model is given, so no default enters:
        1.6 x 2 x 1.5 / 0.001 = 4800 credits (the original charged 4.8)."""
        options = {
            "duration": "8s",
            "resolution": "720p",
            "generate_audio": "true",
            "aspect_ratio": "16:9",
        }
        quoted = price(
            "fal-veo3.1-t2v",
            options,
            with_settings=settings(
                profit_margin_video=Decimal(50), credit_price_micros=1_000
            ),
        )
        assert quoted == 4_800_000_000

    def test_example_5_kling_ten_seconds_without_audio(self) -> None:
        options = {"duration": "10", "generate_audio": "false"}
        assert price("fal-kling-v2.6-pro-t2v", options) == 700_000

    def test_example_6_four_images_on_a_model_without_num_images(self) -> None:
        """The count multiplies even when the model declares no num_images:
        0.15 x 2 x 4 = 1.2, the web client's preview (the original charged
        0.3 and made four images)."""
        assert (
            price("fal-nano-banana-pro", {"resolution": "4K", "num_images": "4"})
            == 1_200_000
        )

    def test_example_7_high_quality_wide_with_image_margin(self) -> None:
        quoted = price(
            "fal-gpt-image-1.5",
            {"quality": "high", "image_size": "1536x1024"},
            with_settings=settings(profit_margin_image=Decimal(25)),
        )
        assert quoted == 248_625

    def test_example_8_upscale_four_times(self) -> None:
        """Upscales use the same rule (with default settings: 0.016 x 16)."""
        options = {"scale_factor": "4", "creativity": "5"}
        assert price("fal-crystal-upscaler", options) == 256_000

    def test_example_9_number_option_matches_its_text_choice(self) -> None:
        """The client's JSON 12 arrives as text and matches the choice "12"."""
        chosen = {"duration": pricing.option_text(12)}
        assert price("fal-sora2-t2v", chosen) == 1_200_000

    def test_example_10_general_margin_applies_when_type_margin_is_zero(self) -> None:
        """The original let a type margin of 0 win; here 30 % applies."""
        quoted = price(
            "fal-flux-dev", with_settings=settings(profit_margin=Decimal(30))
        )
        assert quoted == 32_500


class TestDefaults:
    def test_omitted_option_is_priced_at_its_default(self) -> None:
        """Veo's audio is on by default (x2): leaving it out costs 3.2, not 1.6."""
        assert price("fal-veo3.1-t2v") == 3_200_000

    def test_resolved_options_carry_the_defaults_sent_to_the_provider(self) -> None:
        quote = pricing.quote(seeded("fal-veo3.1-t2v"), {"duration": "4s"}, 0, DEFAULTS)
        assert quote.resolved_options == {
            "duration": "4s",
            "resolution": "720p",
            "aspect_ratio": "16:9",
            "generate_audio": "true",
        }

    def test_declared_num_images_is_resolved_to_the_count(self) -> None:
        quote = pricing.quote(seeded("fal-flux-schnell"), {}, 3, DEFAULTS)
        assert quote.resolved_options["num_images"] == "3"
        assert quote.multiplier == 1
        assert quote.count == 3

    def test_toggle_without_choices_defaults_to_true(self) -> None:
        quote = pricing.quote(seeded("fal-minimax-video-01"), {}, 0, DEFAULTS)
        assert quote.resolved_options == {"prompt_optimizer": "true"}


class TestMarginsAndRounding:
    def test_type_margin_above_zero_wins_over_general(self) -> None:
        quoted = price(
            "fal-flux-dev",
            with_settings=settings(
                profit_margin=Decimal(30), profit_margin_image=Decimal(10)
            ),
        )
        assert quoted == 27_500

    def test_video_margin_does_not_touch_images(self) -> None:
        quoted = price(
            "fal-flux-dev", with_settings=settings(profit_margin_video=Decimal(50))
        )
        assert quoted == 25_000

    def test_price_rounds_half_up_to_a_millionth_of_a_credit(self) -> None:
        """3000 micro-USD with a 0.05 % margin is 3001.5 micro-credits: the
        half rounds up."""
        quoted = price(
            "fal-flux-schnell",
            with_settings=settings(profit_margin_image=Decimal("0.05")),
        )
        assert quoted == 3_002

    def test_cost_is_reported_in_micro_usd_before_margin(self) -> None:
        quote = pricing.quote(
            seeded("fal-gpt-image-1.5"),
            {"quality": "low"},
            2,
            settings(profit_margin_image=Decimal(100)),
        )
        assert quote.cost_micros == 17_680  # 34000 x 0.26 x 2
        assert quote.price_micros == 35_360


class TestImageCount:
    def test_count_and_num_images_that_agree_are_accepted(self) -> None:
        assert price("fal-flux-dev", {"num_images": "2"}, count=2) == 50_000

    def test_count_and_num_images_that_differ_are_refused(self) -> None:
        assert fields(refusal("fal-flux-dev", {"num_images": "2"}, count=3)) == [
            "count"
        ]

    @pytest.mark.parametrize("value", ["0", "5", "two", "1.5", " 2"])
    def test_num_images_outside_one_to_four_is_refused(self, value: str) -> None:
        error = refusal("fal-flux-dev", {"num_images": value})
        assert fields(error) == ["options.num_images"]

    def test_count_above_four_is_refused(self) -> None:
        assert fields(refusal("fal-flux-dev", {}, count=5)) == ["count"]

    def test_num_images_on_a_video_model_is_refused(self) -> None:
        error = refusal("fal-kling-v2.6-pro-t2v", {"num_images": "1"})
        assert fields(error) == ["options.num_images"]

    def test_count_above_one_on_a_video_model_is_refused(self) -> None:
        assert fields(refusal("fal-kling-v2.6-pro-t2v", {}, count=2)) == ["count"]

    def test_count_above_one_on_an_image_upscaler_is_refused(self) -> None:
        assert fields(refusal("fal-crystal-upscaler", {}, count=2)) == ["count"]


class TestOptionValidation:
    def test_unknown_option_is_refused_by_name(self) -> None:
        error = refusal("fal-flux-dev", {"enable_safety_checker": "false"})
        assert fields(error) == ["options.enable_safety_checker"]

    def test_value_outside_the_choices_is_refused_by_name(self) -> None:
        error = refusal("fal-flux-dev", {"image_size": "huge"})
        assert fields(error) == ["options.image_size"]
        assert "square_hd" in error.violations[0].message

    def test_toggle_without_choices_accepts_only_true_or_false(self) -> None:
        error = refusal("fal-minimax-video-01", {"prompt_optimizer": "yes"})
        assert fields(error) == ["options.prompt_optimizer"]

    def test_toggle_without_choices_accepts_false(self) -> None:
        assert price("fal-minimax-video-01", {"prompt_optimizer": "false"}) > 0

    def test_every_bad_option_is_named_at_once(self) -> None:
        error = refusal("fal-flux-dev", {"image_size": "huge", "seed_mode": "x"})
        assert sorted(fields(error)) == ["options.image_size", "options.seed_mode"]

    def test_chat_model_is_not_priced_per_job(self) -> None:
        error = refusal("openai/gpt-4o", {})
        assert fields(error) == ["model_id"]


class TestOptionText:
    @pytest.mark.parametrize(
        ("value", "text"),
        [(12, "12"), (12.0, "12"), (3.5, "3.5"), (True, "true"), (False, "false")],
    )
    def test_json_values_compare_as_text(self, value: object, text: str) -> None:
        assert pricing.option_text(value) == text  # type: ignore[arg-type]


class TestChatQuote:
    def test_tokens_are_priced_per_thousand(self) -> None:
        """GPT-4o: 1,000 in x 0.0025 + 500 out x 0.01 / 1000 = 0.0075 USD."""
        quote = pricing.quote_chat(seeded("openai/gpt-4o"), 1000, 500, 0, DEFAULTS)
        assert quote.price_micros == 7_500

    def test_provider_cost_replaces_token_prices(self) -> None:
        quote = pricing.quote_chat(
            seeded("openai/gpt-4o"),
            1000,
            500,
            1_234,
            settings(profit_margin_chat=Decimal(50)),
        )
        assert quote.price_micros == 1_851  # 1234 x 1.5 = 1851

    def test_chat_margin_and_credit_price_apply(self) -> None:
        quote = pricing.quote_chat(
            seeded("deepseek/deepseek-chat"),
            10_000,
            0,
            0,
            settings(profit_margin=Decimal(25), credit_price_micros=10_000),
        )
        assert quote.price_micros == 175_000  # 1400 micro-USD x 1.25 / 0.01

    def test_negative_tokens_are_refused(self) -> None:
        with pytest.raises(InvalidArgument) as caught:
            pricing.quote_chat(seeded("openai/gpt-4o"), -1, 0, 0, DEFAULTS)
        assert fields(caught.value) == ["input_tokens"]

    def test_image_model_is_not_priced_per_token(self) -> None:
        with pytest.raises(InvalidArgument):
            pricing.quote_chat(seeded("fal-flux-dev"), 1, 1, 0, DEFAULTS)
