"""The models OmniHub ships with, and the idempotent step that stores them.

`seed_models.json` is the curated catalog the web client was built against
(72 models: 35 image, 26 video, 11 chat). Seeding inserts only the models
whose id is missing: a model an operator edited or disabled stays exactly as
they left it, however often `migrate` runs. (The original replaced every row
on each start, silently re-enabling disabled models.)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from libs.logs import get_logger
from services.catalog import pricing, repository

log = get_logger(__name__)

SEED_FILE = Path(__file__).with_name("seed_models.json")
MICROS = Decimal(pricing.MICROS)
# Seconds before a pending job counts as timed out, when the catalog names none.
DEFAULT_MAX_WAIT_SECONDS = {pricing.VIDEO: 900}
FALLBACK_MAX_WAIT_SECONDS = 300
CONTROLS = ("select", "toggle", "aspect_ratio")


class SeedError(ValueError):
    """The seed file describes a model the catalog could not serve."""


def load_seed(path: Path = SEED_FILE) -> list[dict[str, Any]]:
    """The seed file as rows of the `models` table, checked."""
    entries = json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
    rows = [model_row(entry) for entry in entries]
    ids = [row["id"] for row in rows]
    if len(set(ids)) != len(ids):
        raise SeedError("the seed file repeats a model id")
    return rows


def model_row(entry: Mapping[str, Any]) -> dict[str, Any]:
    model_type = entry["type"]
    if model_type not in (pricing.IMAGE, pricing.VIDEO, pricing.CHAT):
        raise SeedError(f"{entry['id']}: unknown type {model_type!r}")
    base_cost = _micros(entry["baseCostUsd"], entry["id"])
    is_chat = model_type == pricing.CHAT
    return {
        "id": entry["id"],
        "name": entry["name"],
        "type": model_type,
        "category": entry["category"],
        "provider": entry["platformProvider"],
        "provider_name": entry.get("vendor") or entry["platformProvider"],
        "endpoint": entry["endpoint"],
        "text_to_image_endpoint": entry.get("textToImageEndpoint"),
        "image_to_image_endpoint": entry.get("imageToImageEndpoint"),
        "image_input": entry.get("imageInput") or "none",
        "max_input_images": entry.get("maxInputImages") or 0,
        "image_param_name": entry.get("imageParamName") or "image_url",
        "image_param_type": entry.get("imageParamType") or "single",
        "video_input": entry.get("videoInput") or "none",
        "max_wait_seconds": entry.get("declaredMaxWaitTimeSeconds")
        or DEFAULT_MAX_WAIT_SECONDS.get(model_type, FALLBACK_MAX_WAIT_SECONDS),
        "base_cost_micros": base_cost,
        # Chat models without token prices are charged their unit price per
        # 1,000 tokens, as the original's seed did; others have none.
        "input_cost_micros_per_1k": _token_price(entry, "input", base_cost)
        if is_chat
        else 0,
        "output_cost_micros_per_1k": _token_price(entry, "output", base_cost)
        if is_chat
        else 0,
        "options": [_option(option, entry["id"]) for option in entry["options"]],
        "capabilities": _plain(entry.get("capabilities") or {}),
        "tags": list(entry.get("tags") or ()),
        "display_order": entry["displayOrder"],
        "doc_url": entry.get("docUrl"),
    }


async def seed_catalog(db: AsyncSession, path: Path = SEED_FILE) -> list[str]:
    """Insert the seed models that are missing; returns their ids."""
    inserted = await repository.insert_missing_models(db, load_seed(path))
    if inserted:
        version = await repository.bump_version(db)
        log.info("catalog.seeded", inserted=len(inserted), version=version)
    return inserted


def _micros(usd: Decimal | int, model_id: str) -> int:
    micros = Decimal(usd) * MICROS
    if micros != micros.to_integral_value() or micros < 0:
        raise SeedError(f"{model_id}: {usd} USD is not a whole number of micro-USD")
    return int(micros)


def _token_price(entry: Mapping[str, Any], side: str, base_cost: int) -> int:
    price = entry.get(f"{side}CostUsdPer1kTokens")
    return base_cost if price is None else _micros(price, entry["id"])


def _option(option: Mapping[str, Any], model_id: str) -> dict[str, Any]:
    key = option["key"]
    control = option.get("control") or "select"
    if control not in CONTROLS:
        raise SeedError(f"{model_id}.{key}: unknown control {control!r}")
    choices = [
        {
            "value": pricing.option_text(choice["value"]),
            "label": choice.get("label") or pricing.option_text(choice["value"]),
            "priceMultiplier": _number(choice.get("priceMultiplier") or 1),
        }
        for choice in option.get("choices") or ()
    ]
    default = _plain(option.get("default"))
    allowed = [c["value"] for c in choices] if choices else list(pricing.TOGGLE_VALUES)
    if pricing.option_text(default) not in allowed:
        raise SeedError(f"{model_id}.{key}: the default {default!r} is not a choice")
    return {
        "key": key,
        "label": option.get("label") or key,
        "control": control,
        "default": default,
        "choices": choices,
    }


def _number(value: Decimal | int) -> int | float:
    """A multiplier as a JSON number; floats keep their shortest decimal form,
    so reading it back as Decimal(str(x)) gives the seed's exact value."""
    number = Decimal(value)
    return int(number) if number == number.to_integral_value() else float(number)


def _plain(value: Any) -> Any:
    """JSON-ready values: the parser's Decimals become ints or floats."""
    if isinstance(value, Decimal):
        return _number(value)
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(item) for item in value]
    return value
