"""What is posted to fal for a job: the endpoint (spec §3.4) and the body
(§4.3), built from the catalog's model and the options it resolved.

Only options the model declares reach fal, so a client cannot override
provider flags such as the safety checker, and every priced option is sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from omnihub.catalog.v1 import catalog_pb2

# Options fal expects as text even when they look like numbers ("5" seconds).
TEXT_OPTIONS = frozenset(
    {
        "acceleration",
        "aspect_ratio",
        "camera_lora",
        "duration",
        "image_size",
        "quality",
        "resolution",
        "style",
        "video_quality",
        "video_size",
    }
)
KLING_NEGATIVE_PROMPT = "blur, distort, and low quality"
KLING_CFG_SCALE = 0.5
_INTEGER = re.compile(r"^-?\d+$")
_DECIMAL = re.compile(r"^-?\d+\.\d+$")


def choose_endpoint(model: catalog_pb2.Model, has_images: bool) -> str:
    if model.category == "both":
        if has_images and model.image_to_image_endpoint:
            return model.image_to_image_endpoint
        if model.text_to_image_endpoint:
            return model.text_to_image_endpoint
    return model.endpoint


def option_value(key: str, text: str) -> Any:
    """An option's text as fal's JSON wants it."""
    lowered = text.strip().lower()
    if lowered in {"true", "false"}:
        return lowered == "true"
    if key in TEXT_OPTIONS:
        return text
    if _INTEGER.match(text.strip()):
        return int(text)
    if _DECIMAL.match(text.strip()):
        return float(text)
    return text


def generation_payload(
    model: catalog_pb2.Model,
    endpoint: str,
    prompt: str,
    options: Mapping[str, str],
    count: int,
    images: Sequence[str],
) -> dict[str, Any]:
    declared = {option.key for option in model.options}
    payload: dict[str, Any] = {
        key: option_value(key, value)
        for key, value in options.items()
        if key in declared
    }
    payload["prompt"] = prompt
    if model.type == "image":
        payload["num_images"] = count
        payload["enable_safety_checker"] = True
    if "kling" in endpoint:
        payload.setdefault("negative_prompt", KLING_NEGATIVE_PROMPT)
        payload.setdefault("cfg_scale", KLING_CFG_SCALE)
    if images:
        param = model.image_param_name or "image_url"
        many = model.image_param_type == "array" and model.type == "image"
        payload[param] = list(images) if many else images[0]
    return payload


def upscale_payload(
    model: catalog_pb2.Model,
    source_url: str,
    source_type: str,
    options: Mapping[str, str],
) -> dict[str, Any]:
    declared = {option.key for option in model.options}
    payload: dict[str, Any] = {
        key: option_value(key, value)
        for key, value in options.items()
        if key in declared
    }
    payload["video_url" if source_type == "video" else "image_url"] = source_url
    return payload
