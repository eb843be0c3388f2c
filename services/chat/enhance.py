"""Prompt enhancement: a vision LLM rewrites an image prompt (or describes an
image as one), paid from the user's own credits exactly like a chat reply:
hold the most it can cost, capture what the provider reports, release on
failure.

Image addresses are passed to the provider as they are; this service never
fetches a URL a user gave (the original downloaded them, which let anyone
make the server request any address).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

from libs.errors import InvalidArgument, NotConfigured, Unavailable
from libs.logs import get_logger
from services.chat.catalog import ModelCatalog
from services.chat.ledger import Ledger, user_account
from services.chat.openrouter import OpenRouterClient, OpenRouterError
from services.chat.prompts import (
    ENHANCE_MAX_TOKENS,
    ENHANCE_TEMPERATURE,
    check_images,
    enhance_request,
    enhance_tokens,
    refuse_private_image_hosts,
)
from services.chat.replies import provider_failure

log = get_logger(__name__)

ENHANCE_MODEL_ID = "openai/gpt-4o"
TYPICAL_ENHANCE_TOKENS = 250
MAX_ESTIMATE_IMAGES = 4


@dataclass(frozen=True)
class Enhanced:
    prompt: str
    credits: int
    input_tokens: int
    output_tokens: int
    remaining: int


@dataclass(frozen=True)
class EnhanceEstimate:
    cost: int
    input_tokens: int
    output_tokens: int


class PromptEnhancer:
    def __init__(
        self,
        catalog: ModelCatalog,
        ledger: Ledger,
        client: OpenRouterClient,
        *,
        configured: bool,
    ) -> None:
        self._catalog = catalog
        self._ledger = ledger
        self._client = client
        self._configured = configured

    async def estimate(self, prompt: str, image_count: int) -> EnhanceEstimate:
        if not 0 <= image_count <= MAX_ESTIMATE_IMAGES:
            raise InvalidArgument.for_field(
                "image_count",
                f"imageCount must be between 0 and {MAX_ESTIMATE_IMAGES}.",
            )
        model = await self._catalog.chat_model(ENHANCE_MODEL_ID)
        tokens = enhance_tokens(prompt, image_count)
        cost = await self._catalog.price(model.id, tokens, TYPICAL_ENHANCE_TOKENS)
        return EnhanceEstimate(cost, tokens, TYPICAL_ENHANCE_TOKENS)

    async def enhance(
        self, user_id: str, prompt: str, image_urls: list[str], variation_type: str
    ) -> Enhanced:
        if not self._configured:
            raise NotConfigured(
                "Prompt enhancement is not configured on this server "
                "(OPENROUTER_API_KEY)."
            )
        images = check_images(image_urls)
        await refuse_private_image_hosts(images)
        turns = enhance_request(variation_type, prompt, images)
        model = await self._catalog.chat_model(ENHANCE_MODEL_ID)
        input_tokens = sum(turn.tokens(model.vision) for turn in turns)
        held = await self._catalog.price(model.id, input_tokens, ENHANCE_MAX_TOKENS)
        reference = f"enhance-{uuid.uuid4()}"
        account = user_account(user_id)
        hold_id = None
        if held > 0:
            hold_id = await self._ledger.hold(
                account,
                held,
                reference,
                "Prompt enhancement",
                {"usage_type": "enhance"},
            )
        try:
            completion = await self._client.complete(
                model=model.endpoint,
                messages=[turn.provider_message(model.vision) for turn in turns],
                max_tokens=ENHANCE_MAX_TOKENS,
                extra={"temperature": ENHANCE_TEMPERATURE},
            )
            text = completion.text.strip()
            if not text:
                raise Unavailable("The model wrote no prompt. Try again.")
        except BaseException as exc:
            if hold_id is not None:
                # Shielded: a caller that left must not leave the hold open.
                await asyncio.shield(self._ledger.release(hold_id, reference))
            if isinstance(exc, OpenRouterError):
                raise provider_failure(exc) from None
            raise
        usage = completion.usage
        used_in = usage.prompt_tokens if usage and usage.prompt_tokens else input_tokens
        used_out = usage.completion_tokens if usage else len(text.split())
        cost = usage.cost_micros if usage and usage.cost_micros else 0
        price = await self._catalog.price(model.id, used_in, used_out, cost)
        charge = min(price, held)
        if hold_id is not None:
            remaining = await self._ledger.capture(hold_id, charge, reference)
        else:
            remaining = await self._ledger.balance(account)
        log.info(
            "chat.prompt_enhanced",
            reference=reference,
            input_tokens=used_in,
            output_tokens=used_out,
            charged_micros=charge,
        )
        return Enhanced(text, charge, used_in, used_out, remaining)
