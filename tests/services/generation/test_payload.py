"""services/generation/payload.py: what is posted to fal."""

from __future__ import annotations

from omnihub.catalog.v1 import catalog_pb2

from services.generation.payload import (
    choose_endpoint,
    generation_payload,
    option_value,
    upscale_payload,
)


def model(**fields: object) -> catalog_pb2.Model:
    options = fields.pop("options", ())
    built = catalog_pb2.Model(**fields)  # type: ignore[arg-type]
    for key in options:  # type: ignore[attr-defined]
        built.options.add(key=key)
    return built


class TestChooseEndpoint:
    def test_a_both_model_with_images_uses_its_image_to_image_endpoint(self) -> None:
        both = model(
            category="both",
            endpoint="fal-ai/x",
            text_to_image_endpoint="fal-ai/x/t2i",
            image_to_image_endpoint="fal-ai/x/edit",
        )

        assert choose_endpoint(both, has_images=True) == "fal-ai/x/edit"
        assert choose_endpoint(both, has_images=False) == "fal-ai/x/t2i"

    def test_other_categories_use_the_model_endpoint(self) -> None:
        plain = model(category="text-to-image", endpoint="fal-ai/flux-pro/v1.1")

        assert choose_endpoint(plain, has_images=True) == "fal-ai/flux-pro/v1.1"


class TestOptionValue:
    def test_text_flags_become_booleans(self) -> None:
        assert option_value("generate_audio", "true") is True
        assert option_value("generate_audio", "False") is False

    def test_numbers_become_numbers_except_options_fal_wants_as_text(self) -> None:
        assert option_value("num_inference_steps", "28") == 28
        assert option_value("guidance_scale", "3.5") == 3.5
        assert option_value("duration", "5") == "5"
        assert option_value("aspect_ratio", "16:9") == "16:9"


class TestGenerationPayload:
    def test_only_declared_options_are_forwarded(self) -> None:
        flux = model(type="image", options=["image_size"])

        payload = generation_payload(
            flux,
            "fal-ai/flux",
            "a fox",
            {"image_size": "square_hd", "enable_safety_checker": "false"},
            2,
            [],
        )

        assert payload == {
            "image_size": "square_hd",
            "prompt": "a fox",
            "num_images": 2,
            "enable_safety_checker": True,
        }

    def test_kling_gets_its_defaults_unless_given(self) -> None:
        kling = model(type="video", options=["cfg_scale"])

        payload = generation_payload(
            kling, "fal-ai/kling-video/v2.6", "waves", {"cfg_scale": "0.7"}, 1, []
        )

        assert payload["cfg_scale"] == 0.7
        assert payload["negative_prompt"] == "blur, distort, and low quality"
        assert "num_images" not in payload

    def test_reference_images_go_under_the_models_parameter(self) -> None:
        many = model(
            type="image", image_param_name="image_urls", image_param_type="array"
        )
        single = model(type="video", image_param_name="start_image_url")

        assert generation_payload(many, "e", "p", {}, 1, ["a", "b"])["image_urls"] == [
            "a",
            "b",
        ]
        assert (
            generation_payload(single, "e", "p", {}, 1, ["a", "b"])["start_image_url"]
            == "a"
        )


class TestUpscalePayload:
    def test_the_source_goes_under_image_or_video_url(self) -> None:
        crystal = model(type="image", options=["scale_factor"])

        image = upscale_payload(
            crystal, "https://x/1.png", "image", {"scale_factor": "2"}
        )
        video = upscale_payload(crystal, "https://x/1.gif", "video", {})

        assert image == {"scale_factor": 2, "image_url": "https://x/1.png"}
        assert video == {"video_url": "https://x/1.gif"}
