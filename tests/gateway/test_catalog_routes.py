"""The catalog's REST routes through a real gateway, catalog service and
auth service.

Until the suite-wide fixtures serve the catalog, this module runs its own
catalog replica on a database of its own and a gateway with the catalog
router included.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.routers.catalog import VERSION_TRUST_SECONDS
from gateway.routers.catalog import router as catalog_router
from libs.config import Settings
from services.auth.main import AuthProcess
from tests.services.catalog.harness import (
    CatalogCaller,
    catalog_database,
    start_replica,
)
from tests.suite import ServedApp, free_port, serve_asgi

ERROR_FIELDS = {"statusCode", "error", "message", "code"}
CLIENT_MODEL_FIELDS = {
    "id",
    "name",
    "type",
    "credits",
    "baseCost",
    "thumbnail",
    "provider",
    "providerName",
    "category",
    "imageInput",
    "maxInputImages",
    "options",
    "tags",
}
# The gateway trusts a confirmed catalog version for a second; the service
# shows its own edits at once.
CHANGE_DEADLINE_SECONDS = 3.0


@pytest.fixture(scope="module")
async def catalog_settings(
    database_server: str, settings: Settings
) -> AsyncIterator[Settings]:
    async with catalog_database(database_server, settings) as catalog:
        yield catalog


@pytest.fixture(scope="module")
async def catalog(catalog_settings: Settings) -> AsyncIterator[CatalogCaller]:
    _, running = await start_replica(catalog_settings)
    caller = CatalogCaller(catalog_settings)
    yield caller
    await caller.close()
    await running.stop(grace=0)


@pytest.fixture(scope="module")
async def api(
    catalog_settings: Settings, catalog: CatalogCaller, auth_service: AuthProcess
) -> AsyncIterator[ServedApp]:
    app = create_app(catalog_settings)
    app.include_router(catalog_router)
    served = await serve_asgi(app)
    yield served
    await served.stop()


@pytest.fixture
async def http(api: ServedApp) -> AsyncIterator[httpx.AsyncClient]:
    async with api.client() as client:
        yield client


@pytest.fixture
async def disabled_kolors(catalog: CatalogCaller) -> AsyncIterator[str]:
    await catalog.edit_model("fal-kolors", enabled=False)
    yield "fal-kolors"
    await catalog.edit_model("fal-kolors", enabled=True)


@pytest.fixture
async def default_pricing(catalog: CatalogCaller) -> AsyncIterator[CatalogCaller]:
    yield catalog
    await catalog.reset_pricing()


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body.keys() >= ERROR_FIELDS
    assert body["code"] == code
    return body


def detail_fields(body: dict[str, Any]) -> list[str]:
    return [detail["field"] for detail in body.get("details", [])]


async def until_changed(
    http: httpx.AsyncClient, path: str, etag: str
) -> httpx.Response:
    """Ask with the old ETag until the list changed (or the deadline passed)."""
    started = time.monotonic()
    while True:
        response = await http.get(path, headers={"If-None-Match": etag})
        if response.status_code == 200:
            return response
        assert response.status_code == 304
        assert time.monotonic() - started < CHANGE_DEADLINE_SECONDS
        await asyncio.sleep(0.05)


class TestListModels:
    async def test_lists_every_enabled_model_with_the_client_fields(
        self, http: httpx.AsyncClient
    ) -> None:
        response = await http.get("/api/models")
        assert response.status_code == 200
        models = response.json()
        assert len(models) == 72
        assert all(model.keys() >= CLIENT_MODEL_FIELDS for model in models)

    async def test_money_fields_are_numbers(self, http: httpx.AsyncClient) -> None:
        models = {m["id"]: m for m in (await http.get("/api/models")).json()}
        veo = models["fal-veo3.1-t2v"]
        assert veo["credits"] == 1.6
        assert veo["baseCost"] == 1.6
        assert veo["price"] == 3.2  # audio on by default: x2

    async def test_options_are_the_map_the_client_reads(
        self, http: httpx.AsyncClient
    ) -> None:
        models = {m["id"]: m for m in (await http.get("/api/models")).json()}
        options = models["fal-veo3.1-t2v"]["options"]
        assert list(options) == [
            "duration",
            "resolution",
            "aspect_ratio",
            "generate_audio",
        ]
        assert options["aspect_ratio"]["type"] == "select"
        assert options["generate_audio"] == {
            "type": "toggle",
            "label": "Audio",
            "default": "true",
            "choices": [
                {"value": "true", "label": "With audio", "priceMultiplier": 2},
                {"value": "false", "label": "Silent", "priceMultiplier": 1},
            ],
        }

    async def test_toggle_without_choices_keeps_its_boolean_default(
        self, http: httpx.AsyncClient
    ) -> None:
        models = {m["id"]: m for m in (await http.get("/api/models")).json()}
        toggle = models["fal-minimax-video-01"]["options"]["prompt_optimizer"]
        assert toggle["default"] is True
        assert toggle["choices"] == []

    @pytest.mark.parametrize(
        ("model_type", "count"), [("image", 35), ("video", 26), ("chat", 11)]
    )
    async def test_filters_by_type(
        self, http: httpx.AsyncClient, model_type: str, count: int
    ) -> None:
        response = await http.get("/api/models", params={"type": model_type})
        assert len(response.json()) == count
        assert {model["type"] for model in response.json()} == {model_type}

    async def test_filters_by_category(self, http: httpx.AsyncClient) -> None:
        response = await http.get("/api/models", params={"category": "image-to-video"})
        assert len(response.json()) == 8

    async def test_unknown_type_is_a_400_naming_type(
        self, http: httpx.AsyncClient
    ) -> None:
        body = assert_error(
            await http.get("/api/models", params={"type": "upscaler"}),
            400,
            "invalid_argument",
        )
        assert detail_fields(body) == ["type"]

    async def test_disabled_model_is_left_out(
        self, http: httpx.AsyncClient, disabled_kolors: str
    ) -> None:
        etag = (await http.get("/api/models")).headers["etag"]
        response = await until_changed(http, "/api/models", etag)
        assert disabled_kolors not in {model["id"] for model in response.json()}


class TestListCaching:
    async def test_sends_an_etag_and_answers_304_to_it(
        self, http: httpx.AsyncClient
    ) -> None:
        first = await http.get("/api/models")
        again = await http.get(
            "/api/models", headers={"If-None-Match": first.headers["etag"]}
        )
        assert again.status_code == 304
        assert again.content == b""
        assert again.headers["etag"] == first.headers["etag"]

    async def test_weak_or_listed_etags_match_too(
        self, http: httpx.AsyncClient
    ) -> None:
        etag = (await http.get("/api/models")).headers["etag"]
        again = await http.get(
            "/api/models", headers={"If-None-Match": f'"other", W/{etag}'}
        )
        assert again.status_code == 304

    async def test_each_filter_has_its_own_etag(self, http: httpx.AsyncClient) -> None:
        every = await http.get("/api/models")
        images = await http.get("/api/models", params={"type": "image"})
        assert every.headers["etag"] != images.headers["etag"]
        crossed = await http.get(
            "/api/models",
            params={"type": "image"},
            headers={"If-None-Match": every.headers["etag"]},
        )
        assert crossed.status_code == 200

    async def test_an_edit_changes_the_etag_and_the_body(
        self, http: httpx.AsyncClient, catalog: CatalogCaller
    ) -> None:
        before = await http.get("/api/models", params={"type": "chat"})
        await catalog.edit_model("qwen/qwen-2.5-72b-instruct", name="Qwen 2.5 (72B)")
        try:
            after = await until_changed(
                http, "/api/models?type=chat", before.headers["etag"]
            )
            names = {model["id"]: model["name"] for model in after.json()}
            assert names["qwen/qwen-2.5-72b-instruct"] == "Qwen 2.5 (72B)"
            assert after.headers["etag"] != before.headers["etag"]
        finally:
            await catalog.edit_model("qwen/qwen-2.5-72b-instruct", name="Qwen 2.5 72B")


class TestGetModel:
    async def test_returns_one_model(self, http: httpx.AsyncClient) -> None:
        response = await http.get("/api/models/fal-flux-dev")
        assert response.status_code == 200
        assert response.json()["name"] == "FLUX Dev"
        assert response.json().keys() >= CLIENT_MODEL_FIELDS

    @pytest.mark.parametrize("path", ["openai/gpt-4o", "openai%2Fgpt-4o"])
    async def test_chat_id_with_a_slash_plain_or_encoded(
        self, http: httpx.AsyncClient, path: str
    ) -> None:
        response = await http.get(f"/api/models/{path}")
        assert response.status_code == 200
        assert response.json()["id"] == "openai/gpt-4o"

    async def test_unknown_id_is_a_404_in_the_error_shape(
        self, http: httpx.AsyncClient
    ) -> None:
        body = assert_error(
            await http.get("/api/models/fal-nonexistent"), 404, "not_found"
        )
        assert "fal-nonexistent" in body["error"]

    async def test_disabled_model_is_a_404(
        self, http: httpx.AsyncClient, disabled_kolors: str
    ) -> None:
        assert_error(await http.get(f"/api/models/{disabled_kolors}"), 404, "not_found")


class TestQuotePrice:
    async def test_example_1_with_breakdown(self, http: httpx.AsyncClient) -> None:
        response = await http.post(
            "/api/models/fal-flux-pro-v1.1/price",
            json={"options": {"image_size": "square", "num_images": "4"}},
        )
        assert response.status_code == 200, response.text
        assert response.json() == {
            "price": 0.08,
            "basePrice": 0.08,
            "baseCost": 0.04,
            "profitMargin": 0.0,
            "creditPrice": 1.0,
            "count": 4,
            "breakdown": {
                "apiCost": 0.08,
                "marginPercent": 0.0,
                "priceWithMargin": 0.08,
                "creditsPerDollar": 1.0,
                "finalCredits": 0.08,
            },
        }

    async def test_example_2_with_margin_and_credit_price(
        self, http: httpx.AsyncClient, default_pricing: CatalogCaller
    ) -> None:
        await default_pricing.set_pricing(
            profit_margin_image="20", credit_price_micros=10_000
        )
        response = await http.post(
            "/api/models/fal-flux-pro-v1.1/price",
            json={"options": {"image_size": "square"}, "count": 4},
        )
        body = response.json()
        assert body["price"] == 9.6
        assert body["breakdown"]["priceWithMargin"] == 0.096
        assert body["breakdown"]["creditsPerDollar"] == 100

    async def test_example_9_json_number_matches_the_text_choice(
        self, http: httpx.AsyncClient
    ) -> None:
        response = await http.post(
            "/api/models/fal-sora2-t2v/price", json={"options": {"duration": 12}}
        )
        assert response.json()["price"] == 1.2

    async def test_json_boolean_matches_the_text_choice(
        self, http: httpx.AsyncClient
    ) -> None:
        response = await http.post(
            "/api/models/fal-veo3.1-t2v/price",
            json={"options": {"generate_audio": False}},
        )
        assert response.json()["price"] == 1.6

    async def test_without_options_the_defaults_are_priced(
        self, http: httpx.AsyncClient
    ) -> None:
        response = await http.post("/api/models/fal-veo3.1-t2v/price", json={})
        assert response.json()["price"] == 3.2

    async def test_bad_option_value_is_a_400_naming_the_option(
        self, http: httpx.AsyncClient
    ) -> None:
        body = assert_error(
            await http.post(
                "/api/models/fal-flux-dev/price",
                json={"options": {"image_size": "huge"}},
            ),
            400,
            "invalid_argument",
        )
        assert detail_fields(body) == ["options.image_size"]

    async def test_unknown_option_is_a_400_naming_it(
        self, http: httpx.AsyncClient
    ) -> None:
        body = assert_error(
            await http.post(
                "/api/models/fal-flux-dev/price",
                json={"options": {"enable_safety_checker": False}},
            ),
            400,
            "invalid_argument",
        )
        assert detail_fields(body) == ["options.enable_safety_checker"]

    async def test_object_option_value_is_a_400_naming_it(
        self, http: httpx.AsyncClient
    ) -> None:
        body = assert_error(
            await http.post(
                "/api/models/fal-flux-dev/price",
                json={"options": {"image_size": {"width": 10}}},
            ),
            400,
            "invalid_argument",
        )
        assert detail_fields(body) == ["options.image_size"]

    async def test_count_on_a_video_model_is_a_400_naming_count(
        self, http: httpx.AsyncClient
    ) -> None:
        body = assert_error(
            await http.post("/api/models/fal-sora2-t2v/price", json={"count": 2}),
            400,
            "invalid_argument",
        )
        assert detail_fields(body) == ["count"]

    async def test_unknown_body_field_is_a_400(self, http: httpx.AsyncClient) -> None:
        assert_error(
            await http.post("/api/models/fal-flux-dev/price", json={"quantity": 2}),
            400,
            "invalid_argument",
        )

    async def test_unknown_model_is_a_404(self, http: httpx.AsyncClient) -> None:
        assert_error(
            await http.post("/api/models/fal-nope/price", json={}), 404, "not_found"
        )

    async def test_disabled_model_is_a_409(
        self, http: httpx.AsyncClient, disabled_kolors: str
    ) -> None:
        assert_error(
            await http.post(f"/api/models/{disabled_kolors}/price", json={}),
            409,
            "failed_precondition",
        )

    async def test_chat_id_with_a_slash_reaches_the_price_route(
        self, http: httpx.AsyncClient
    ) -> None:
        """Priced per token, so refused, but by the catalog and not as a 404."""
        body = assert_error(
            await http.post("/api/models/openai/gpt-4o/price", json={}),
            400,
            "invalid_argument",
        )
        assert "chat model" in body["error"]


class TestChatModels:
    async def test_lists_chat_models_with_token_prices(
        self, http: httpx.AsyncClient
    ) -> None:
        response = await http.get("/api/chat/models")
        models = {model["id"]: model for model in response.json()}
        assert len(models) == 11
        gpt = models["openai/gpt-4o"]
        assert (gpt["inputCost"], gpt["outputCost"]) == (0.0025, 0.01)
        assert gpt["capabilities"]["maxContext"] == 128000
        assert models["deepseek/deepseek-r1"]["capabilities"]["reasoning"] is True
        assert response.headers["etag"]


class TestUpscaleModels:
    @pytest.mark.parametrize(
        ("source_type", "ids"),
        [
            ("image", ["fal-crystal-upscaler"]),
            ("video", ["fal-crystal-video-upscaler"]),
            ("upscale", ["fal-crystal-upscaler", "fal-crystal-video-upscaler"]),
        ],
    )
    async def test_lists_upscalers_for_the_source_type(
        self, http: httpx.AsyncClient, source_type: str, ids: list[str]
    ) -> None:
        response = await http.get("/api/upscale/models", params={"type": source_type})
        assert [model["id"] for model in response.json()] == ids

    async def test_upscaler_has_the_fields_the_modal_reads(
        self, http: httpx.AsyncClient
    ) -> None:
        response = await http.get("/api/upscale/models", params={"type": "image"})
        model = response.json()[0]
        assert model["providerName"] == "Clarity AI"
        assert model["options"]["scale_factor"]["default"] == "2"


class TestPricingSettings:
    async def test_seeded_settings_are_numbers(self, http: httpx.AsyncClient) -> None:
        body = (await http.get("/api/pricing-settings")).json()
        # Billing adds freeCredits when it answers (test_payments_routes.py).
        body.pop("freeCredits", None)
        assert body == {
            "profitMargin": 0,
            "profitMarginImage": 0,
            "profitMarginVideo": 0,
            "profitMarginChat": 0,
            "creditPrice": 1,
        }

    async def test_shows_an_operator_change(
        self, http: httpx.AsyncClient, default_pricing: CatalogCaller
    ) -> None:
        await default_pricing.set_pricing(
            profit_margin="30", credit_price_micros=50_000
        )
        body = (await http.get("/api/pricing-settings")).json()
        assert (body["profitMargin"], body["creditPrice"]) == (30, 0.05)


class TestGoogleClientId:
    async def test_returns_the_configured_client_id(
        self, http: httpx.AsyncClient, catalog_settings: Settings
    ) -> None:
        response = await http.get("/api/settings/google-client-id")
        assert response.json() == {"clientId": catalog_settings.google_client_id}


class TestCatalogOutage:
    async def test_last_list_is_served_while_the_catalog_is_down(
        self, catalog_settings: Settings, catalog: CatalogCaller
    ) -> None:
        settings = catalog_settings.model_copy(
            update={"catalog_address": f"127.0.0.1:{free_port()}"}
        )
        _, replica = await start_replica(settings)
        app = create_app(settings)
        app.include_router(catalog_router)
        served = await serve_asgi(app)
        try:
            async with served.client() as http:
                before = await http.get("/api/models", params={"type": "video"})
                await replica.stop(grace=0)
                await asyncio.sleep(VERSION_TRUST_SECONDS)
                during = await http.get("/api/models", params={"type": "video"})
                single = await http.get("/api/models/fal-ltx-video")
        finally:
            await served.stop()
        assert during.status_code == 200
        assert during.content == before.content
        assert_error(single, 503, "unavailable")
