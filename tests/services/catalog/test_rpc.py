"""The catalog service over real gRPC, backed by PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from omnihub.catalog.v1 import catalog_pb2

from libs.config import Settings
from libs.errors import DomainError
from libs.process import start_service
from services.catalog.main import CatalogProcess
from tests.services.catalog.harness import DEFAULT_PRICING, CatalogCaller
from tests.suite import free_port

REPLICA_DEADLINE_SECONDS = 2.0


def list_request(**fields: object) -> catalog_pb2.ListModelsRequest:
    return catalog_pb2.ListModelsRequest(**fields)  # type: ignore[arg-type]


def quote_request(
    model_id: str, options: dict[str, str] | None = None, count: int = 0
) -> catalog_pb2.QuotePriceRequest:
    return catalog_pb2.QuotePriceRequest(
        model_id=model_id, options=options or {}, count=count
    )


def fields(error: DomainError) -> list[str]:
    return [violation.field for violation in error.violations]


@pytest.fixture
async def disabled_kolors(catalog: CatalogCaller) -> AsyncIterator[str]:
    await catalog.edit_model("fal-kolors", enabled=False)
    yield "fal-kolors"
    await catalog.edit_model("fal-kolors", enabled=True)


async def anonymous_failure(
    catalog: CatalogCaller, method: str, request: object
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await catalog.call_anonymously(method, request)
    return caught.value


class TestListModels:
    async def test_lists_models_by_type_then_display_order(
        self, catalog: CatalogCaller
    ) -> None:
        reply = await catalog.call("ListModels", list_request())
        keys = [(model.type, model.display_order) for model in reply.models]
        assert keys == sorted(keys)
        assert len(reply.models) == 72

    async def test_filters_by_type(self, catalog: CatalogCaller) -> None:
        reply = await catalog.call("ListModels", list_request(type="video"))
        assert len(reply.models) == 26
        assert {model.type for model in reply.models} == {"video"}

    async def test_filters_by_category(self, catalog: CatalogCaller) -> None:
        reply = await catalog.call("ListModels", list_request(category="upscale"))
        assert [model.id for model in reply.models] == [
            "fal-crystal-upscaler",
            "fal-crystal-video-upscaler",
        ]

    async def test_unknown_type_is_refused_naming_type(
        self, catalog: CatalogCaller
    ) -> None:
        error = await catalog.failure("ListModels", list_request(type="upscaler"))
        assert error.code == "invalid_argument"
        assert fields(error) == ["type"]

    async def test_current_version_answers_not_modified_without_models(
        self, catalog: CatalogCaller
    ) -> None:
        first = await catalog.call("ListModels", list_request())
        again = await catalog.call("ListModels", list_request(if_version=first.version))
        assert again.not_modified
        assert again.version == first.version
        assert len(again.models) == 0

    async def test_older_version_answers_every_model(
        self, catalog: CatalogCaller
    ) -> None:
        reply = await catalog.call("ListModels", list_request(if_version="0"))
        assert not reply.not_modified
        assert len(reply.models) == 72

    async def test_disabled_models_are_left_out(
        self, catalog: CatalogCaller, disabled_kolors: str
    ) -> None:
        reply = await catalog.call("ListModels", list_request(type="image"))
        assert disabled_kolors not in {model.id for model in reply.models}

    async def test_services_may_include_disabled_models(
        self, catalog: CatalogCaller, disabled_kolors: str
    ) -> None:
        reply = await catalog.call(
            "ListModels", list_request(type="image", include_disabled=True)
        )
        assert disabled_kolors in {model.id for model in reply.models}

    async def test_anonymous_callers_never_see_disabled_models(
        self, catalog: CatalogCaller, disabled_kolors: str
    ) -> None:
        reply = await catalog.call_anonymously(
            "ListModels", list_request(type="image", include_disabled=True)
        )
        assert len(reply.models) == 34


class TestGetModel:
    async def test_chat_model_id_may_contain_a_slash(
        self, catalog: CatalogCaller
    ) -> None:
        reply = await catalog.call_anonymously(
            "GetModel", catalog_pb2.GetModelRequest(id="anthropic/claude-3.5-sonnet")
        )
        assert reply.model.output_cost_micros_per_1k == 15_000
        assert reply.model.capabilities["maxContext"] == 200_000

    async def test_unknown_id_is_not_found(self, catalog: CatalogCaller) -> None:
        error = await catalog.failure(
            "GetModel", catalog_pb2.GetModelRequest(id="fal-nonexistent")
        )
        assert error.code == "not_found"

    async def test_default_price_includes_default_options(
        self, catalog: CatalogCaller
    ) -> None:
        """Veo 3.1's audio is on by default and doubles the price."""
        reply = await catalog.call(
            "GetModel", catalog_pb2.GetModelRequest(id="fal-veo3.1-t2v")
        )
        assert reply.model.default_price_micros == 3_200_000

    async def test_options_keep_their_order_and_multipliers(
        self, catalog: CatalogCaller
    ) -> None:
        reply = await catalog.call(
            "GetModel", catalog_pb2.GetModelRequest(id="fal-gpt-image-1.5")
        )
        quality = reply.model.options[0]
        assert [option.key for option in reply.model.options] == [
            "quality",
            "image_size",
        ]
        assert [c.price_multiplier for c in quality.choices] == ["0.26", "1", "3.9"]
        assert quality.default_value.string_value == "medium"

    async def test_disabled_model_is_not_found_by_anonymous_callers(
        self, catalog: CatalogCaller, disabled_kolors: str
    ) -> None:
        failure = await anonymous_failure(
            catalog, "GetModel", catalog_pb2.GetModelRequest(id=disabled_kolors)
        )
        assert failure.code() == grpc.StatusCode.NOT_FOUND


class TestQuotePrice:
    async def test_example_1_over_grpc(self, catalog: CatalogCaller) -> None:
        reply = await catalog.call_anonymously(
            "QuotePrice",
            quote_request(
                "fal-flux-pro-v1.1", {"image_size": "square", "num_images": "4"}
            ),
        )
        assert reply.price_micros == 80_000
        assert reply.count == 4
        assert reply.multiplier == "0.5"
        assert reply.resolved_options == {"image_size": "square", "num_images": "4"}

    async def test_example_2_over_grpc(self, default_pricing: CatalogCaller) -> None:
        await default_pricing.set_pricing(
            profit_margin_image="20", credit_price_micros=10_000
        )
        reply = await default_pricing.call(
            "QuotePrice",
            quote_request(
                "fal-flux-pro-v1.1", {"image_size": "square", "num_images": "4"}
            ),
        )
        assert reply.price_micros == 9_600_000
        assert reply.margin_percent == "20"
        assert reply.cost_micros == 80_000

    async def test_example_3_over_grpc(self, catalog: CatalogCaller) -> None:
        options = {"duration": "4s", "resolution": "1080p", "generate_audio": "true"}
        reply = await catalog.call(
            "QuotePrice", quote_request("fal-veo3.1-t2v", options)
        )
        assert reply.price_micros == 2_400_000
        assert reply.model_type == "video"

    async def test_example_10_over_grpc(self, default_pricing: CatalogCaller) -> None:
        await default_pricing.set_pricing(profit_margin="30")
        reply = await default_pricing.call("QuotePrice", quote_request("fal-flux-dev"))
        assert reply.price_micros == 32_500
        assert reply.margin_percent == "30"

    async def test_bad_option_is_refused_naming_it(
        self, catalog: CatalogCaller
    ) -> None:
        error = await catalog.failure(
            "QuotePrice", quote_request("fal-flux-dev", {"image_size": "huge"})
        )
        assert error.code == "invalid_argument"
        assert fields(error) == ["options.image_size"]

    async def test_count_on_a_video_model_is_refused_naming_it(
        self, catalog: CatalogCaller
    ) -> None:
        error = await catalog.failure(
            "QuotePrice", quote_request("fal-sora2-t2v", count=2)
        )
        assert fields(error) == ["count"]

    async def test_disabled_model_is_a_failed_precondition(
        self, catalog: CatalogCaller, disabled_kolors: str
    ) -> None:
        error = await catalog.failure("QuotePrice", quote_request(disabled_kolors))
        assert error.code == "failed_precondition"
        assert "disabled" in error.message

    async def test_unknown_model_is_not_found(self, catalog: CatalogCaller) -> None:
        error = await catalog.failure("QuotePrice", quote_request("fal-nope"))
        assert error.code == "not_found"


class TestQuoteChat:
    async def test_tokens_are_priced_with_the_chat_margin(
        self, default_pricing: CatalogCaller
    ) -> None:
        await default_pricing.set_pricing(profit_margin_chat="100")
        reply = await default_pricing.call_anonymously(
            "QuoteChat",
            catalog_pb2.QuoteChatRequest(
                model_id="openai/gpt-4o", input_tokens=1000, output_tokens=500
            ),
        )
        assert reply.price_micros == 15_000
        assert reply.margin_percent == "100"

    async def test_non_chat_model_is_refused(self, catalog: CatalogCaller) -> None:
        error = await catalog.failure(
            "QuoteChat",
            catalog_pb2.QuoteChatRequest(model_id="fal-flux-dev", input_tokens=1),
        )
        assert fields(error) == ["model_id"]


class TestUpdateModel:
    async def test_anonymous_caller_is_unauthenticated(
        self, catalog: CatalogCaller
    ) -> None:
        failure = await anonymous_failure(
            catalog,
            "UpdateModel",
            catalog_pb2.UpdateModelRequest(
                id="fal-flux-dev", changes=catalog_pb2.ModelChanges(enabled=False)
            ),
        )
        assert failure.code() == grpc.StatusCode.UNAUTHENTICATED

    async def test_edit_bumps_the_version_and_shows_at_once(
        self, catalog: CatalogCaller
    ) -> None:
        before = await catalog.call("ListModels", list_request(type="chat"))
        edited = await catalog.edit_model("deepseek/deepseek-chat", display_order=5)
        try:
            after = await catalog.call(
                "ListModels", list_request(type="chat", if_version=before.version)
            )
            assert edited.display_order == 5
            assert int(after.version) > int(before.version)
            assert after.models[0].id == "deepseek/deepseek-chat"
        finally:
            await catalog.edit_model("deepseek/deepseek-chat", display_order=80)

    async def test_new_base_cost_prices_the_next_quote(
        self, catalog: CatalogCaller
    ) -> None:
        await catalog.edit_model("fal-flux-dev", base_cost_micros=30_000)
        try:
            reply = await catalog.call("QuotePrice", quote_request("fal-flux-dev"))
            assert reply.price_micros == 30_000
        finally:
            await catalog.edit_model("fal-flux-dev", base_cost_micros=25_000)

    async def test_tags_change_only_when_replaced(self, catalog: CatalogCaller) -> None:
        kept = await catalog.edit_model("fal-ltx-video", tags=["ignored"])
        replaced = await catalog.edit_model(
            "fal-ltx-video", tags=["fast", " budget", "fast"], replace_tags=True
        )
        try:
            assert "ignored" not in kept.tags
            assert list(replaced.tags) == ["fast", "budget"]
        finally:
            await catalog.edit_model(
                "fal-ltx-video", tags=list(kept.tags), replace_tags=True
            )

    async def test_invalid_changes_are_refused_naming_each_field(
        self, catalog: CatalogCaller
    ) -> None:
        error = await catalog.failure(
            "UpdateModel",
            catalog_pb2.UpdateModelRequest(
                id="fal-flux-dev",
                changes=catalog_pb2.ModelChanges(
                    base_cost_micros=-1, thumbnail="javascript:alert(1)"
                ),
            ),
        )
        assert sorted(fields(error)) == [
            "changes.base_cost_micros",
            "changes.thumbnail",
        ]

    async def test_unknown_model_is_not_found(self, catalog: CatalogCaller) -> None:
        error = await catalog.failure(
            "UpdateModel",
            catalog_pb2.UpdateModelRequest(
                id="fal-nope", changes=catalog_pb2.ModelChanges(enabled=False)
            ),
        )
        assert error.code == "not_found"

    async def test_empty_edit_keeps_the_version(self, catalog: CatalogCaller) -> None:
        before = await catalog.call("ListModels", list_request())
        reply = await catalog.call(
            "UpdateModel", catalog_pb2.UpdateModelRequest(id="fal-flux-dev")
        )
        assert reply.version == before.version


class TestUpdatePricingSettings:
    async def test_anonymous_caller_is_unauthenticated(
        self, catalog: CatalogCaller
    ) -> None:
        failure = await anonymous_failure(
            catalog,
            "UpdatePricingSettings",
            catalog_pb2.UpdatePricingSettingsRequest(settings=DEFAULT_PRICING),
        )
        assert failure.code() == grpc.StatusCode.UNAUTHENTICATED

    async def test_new_settings_are_read_back(
        self, default_pricing: CatalogCaller
    ) -> None:
        await default_pricing.set_pricing(
            profit_margin_video="12.5", credit_price_micros=20_000
        )
        reply = await default_pricing.call_anonymously(
            "GetPricingSettings", catalog_pb2.GetPricingSettingsRequest()
        )
        assert reply.settings.profit_margin_video == "12.5"
        assert reply.settings.credit_price_micros == 20_000
        assert reply.settings.profit_margin == "0"

    async def test_margin_above_1000_is_refused_naming_it(
        self, catalog: CatalogCaller
    ) -> None:
        settings = catalog_pb2.PricingSettings()
        settings.CopyFrom(DEFAULT_PRICING)
        settings.profit_margin_video = "1000.5"
        error = await catalog.failure(
            "UpdatePricingSettings",
            catalog_pb2.UpdatePricingSettingsRequest(settings=settings),
        )
        assert fields(error) == ["settings.profit_margin_video"]

    async def test_non_numeric_margin_is_refused_naming_it(
        self, catalog: CatalogCaller
    ) -> None:
        settings = catalog_pb2.PricingSettings()
        settings.CopyFrom(DEFAULT_PRICING)
        settings.profit_margin = "NaN"
        error = await catalog.failure(
            "UpdatePricingSettings",
            catalog_pb2.UpdatePricingSettingsRequest(settings=settings),
        )
        assert fields(error) == ["settings.profit_margin"]

    async def test_zero_credit_price_is_refused(self, catalog: CatalogCaller) -> None:
        settings = catalog_pb2.PricingSettings()
        settings.CopyFrom(DEFAULT_PRICING)
        settings.credit_price_micros = 0
        error = await catalog.failure(
            "UpdatePricingSettings",
            catalog_pb2.UpdatePricingSettingsRequest(settings=settings),
        )
        assert fields(error) == ["settings.credit_price_micros"]


class TestReplicas:
    async def test_second_replica_sees_an_edit_within_two_seconds(
        self, catalog: CatalogCaller, catalog_settings: Settings
    ) -> None:
        port = free_port()
        running = await start_service(CatalogProcess(), catalog_settings, port=port)
        other = CatalogCaller(catalog_settings, f"127.0.0.1:{port}")
        try:
            seen = await other.call("ListModels", list_request(type="video"))
            await catalog.edit_model("fal-ltx-video", name="LTX Video (fast)")
            edited_at = time.monotonic()
            while True:
                reply = await other.call(
                    "ListModels", list_request(type="video", if_version=seen.version)
                )
                if not reply.not_modified:
                    break
                assert time.monotonic() - edited_at < REPLICA_DEADLINE_SECONDS
                await asyncio.sleep(0.05)
            names = {model.id: model.name for model in reply.models}
            assert names["fal-ltx-video"] == "LTX Video (fast)"
        finally:
            await catalog.edit_model("fal-ltx-video", name="LTX Video")
            await other.close()
            await running.stop(grace=0)
