"""gateway/routers/generations.py: what the gateway itself refuses before
asking the generation service (bad bodies and queries, missing sign-in, ids
that cannot name a generation), over real HTTP in front of the real auth
service. The end-to-end behaviour is in test_generation_routes.py."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.schemas.generations import MAX_PROMPT_LENGTH
from tests.gateway.factories import SignedInUser, assert_error, register
from tests.suite import ServedApp

DATA_URL = "data:image/png;base64,iVBORw0KGgo="
GOOD = {"type": "image", "model": "fal-flux-dev", "prompt": "a red fox"}
SOME_ID = str(uuid.uuid4())


@pytest.fixture(scope="module")
async def http(gateway: ServedApp) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway.client() as client:
        yield client


@pytest.fixture(scope="module")
async def user(http: httpx.AsyncClient) -> SignedInUser:
    return await register(http)


def fields(body: dict[str, Any]) -> list[str]:
    return [detail["field"] for detail in body.get("details", [])]


async def refused_body(
    http: httpx.AsyncClient, user: SignedInUser, path: str, body: object
) -> dict[str, Any]:
    response = await http.post(path, json=body, headers=user.auth)
    return assert_error(response, 400, "invalid_argument")


class TestSignIn:
    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("POST", "/api/generate"),
            ("GET", "/api/generations"),
            ("GET", f"/api/generations/{SOME_ID}"),
            ("DELETE", f"/api/generations/{SOME_ID}"),
            ("POST", f"/api/generations/{SOME_ID}/cancel"),
            ("PATCH", f"/api/generations/{SOME_ID}/share"),
            ("GET", f"/api/generations/{SOME_ID}/events"),
            ("POST", "/api/generations/bulk-delete"),
            ("POST", "/api/upscale"),
            ("POST", "/api/upscale/calculate"),
            ("GET", f"/api/workspaces/{SOME_ID}/gallery"),
        ],
    )
    async def test_every_route_but_the_webhook_needs_a_user(
        self, http: httpx.AsyncClient, method: str, path: str
    ) -> None:
        response = await http.request(method, path, json=GOOD)
        assert_error(response, 401, "unauthenticated")


class TestGenerateBody:
    async def test_unknown_top_level_keys_are_named(
        self, http: httpx.AsyncClient, user: SignedInUser
    ) -> None:
        body = await refused_body(
            http, user, "/api/generate", {**GOOD, "seed": 1, "style": "x"}
        )
        assert sorted(fields(body)) == ["seed", "style"]
        assert "property seed should not exist" in {
            d["message"] for d in body["details"]
        }

    async def test_snake_case_names_are_unknown_keys(
        self, http: httpx.AsyncClient, user: SignedInUser
    ) -> None:
        body = await refused_body(
            http, user, "/api/generate", {**GOOD, "input_images": []}
        )
        assert fields(body) == ["input_images"]

    async def test_prompt_is_required(
        self, http: httpx.AsyncClient, user: SignedInUser
    ) -> None:
        sent = {key: value for key, value in GOOD.items() if key != "prompt"}
        body = await refused_body(http, user, "/api/generate", sent)
        assert fields(body) == ["prompt"]

    @pytest.mark.parametrize("prompt", ["", "   \n\t "])
    async def test_blank_prompt_is_refused(
        self, http: httpx.AsyncClient, user: SignedInUser, prompt: str
    ) -> None:
        body = await refused_body(
            http, user, "/api/generate", {**GOOD, "prompt": prompt}
        )
        assert fields(body) == ["prompt"]

    async def test_prompt_over_the_limit_is_refused(
        self, http: httpx.AsyncClient, user: SignedInUser
    ) -> None:
        body = await refused_body(
            http,
            user,
            "/api/generate",
            {**GOOD, "prompt": "a" * (MAX_PROMPT_LENGTH + 1)},
        )
        assert fields(body) == ["prompt"]

    async def test_prompt_that_is_not_text_is_refused(
        self, http: httpx.AsyncClient, user: SignedInUser
    ) -> None:
        body = await refused_body(http, user, "/api/generate", {**GOOD, "prompt": 7})
        assert fields(body) == ["prompt"]

    async def test_a_model_is_required(
        self, http: httpx.AsyncClient, user: SignedInUser
    ) -> None:
        body = await refused_body(
            http, user, "/api/generate", {"type": "image", "prompt": "a fox"}
        )
        assert fields(body) == ["model"]

    async def test_model_named_twice_ways_is_refused(
        self, http: httpx.AsyncClient, user: SignedInUser
    ) -> None:
        body = await refused_body(
            http, user, "/api/generate", {**GOOD, "modelId": "fal-flux-dev"}
        )
        assert fields(body) == ["modelId"]

    @pytest.mark.parametrize("key", ["model", "models", "modelId"])
    async def test_more_than_four_models_is_refused(
        self, http: httpx.AsyncClient, user: SignedInUser, key: str
    ) -> None:
        sent = {"prompt": "a fox", key: [f"fal-model-{i}" for i in range(5)]}
        body = await refused_body(http, user, "/api/generate", sent)
        assert fields(body) == [key]

    async def test_the_same_model_twice_is_refused(
        self, http: httpx.AsyncClient, user: SignedInUser
    ) -> None:
        body = await refused_body(
            http,
            user,
            "/api/generate",
            {**GOOD, "model": ["fal-flux-dev", "fal-flux-dev"]},
        )
        assert fields(body) == ["model"]

    async def test_five_input_images_are_refused(
        self, http: httpx.AsyncClient, user: SignedInUser
    ) -> None:
        body = await refused_body(
            http, user, "/api/generate", {**GOOD, "inputImages": [DATA_URL] * 5}
        )
        assert fields(body) == ["inputImages"]

    async def test_input_image_that_is_not_text_is_refused(
        self, http: httpx.AsyncClient, user: SignedInUser
    ) -> None:
        body = await refused_body(
            http, user, "/api/generate", {**GOOD, "inputImages": [{"url": "x"}]}
        )
        assert fields(body) == ["inputImages.0"]

    @pytest.mark.parametrize("value", [b'["square"]', b"null", b"Infinity"])
    async def test_option_value_must_be_text_number_or_boolean(
        self, http: httpx.AsyncClient, user: SignedInUser, value: bytes
    ) -> None:
        response = await http.post(
            "/api/generate",
            content=b'{"model": "fal-flux-dev", "prompt": "a fox", '
            b'"options": {"image_size": ' + value + b"}}",
            headers={**user.auth, "Content-Type": "application/json"},
        )
        body = assert_error(response, 400, "invalid_argument")
        assert fields(body) == ["options"]
        assert "image_size" in body["message"]

    async def test_options_mixing_values_and_model_objects_are_refused(
        self, http: httpx.AsyncClient, user: SignedInUser
    ) -> None:
        body = await refused_body(
            http,
            user,
            "/api/generate",
            {
                **GOOD,
                "options": {"image_size": "square", "fal-flux-dev": {"seed": "1"}},
            },
        )
        assert fields(body) == ["options"]

    async def test_options_for_a_model_not_asked_for_are_refused(
        self, http: httpx.AsyncClient, user: SignedInUser
    ) -> None:
        body = await refused_body(
            http,
            user,
            "/api/generate",
            {
                "prompt": "a fox",
                "modelId": "fal-flux-dev",
                "options": {"fal-flux-pro": {"image_size": "square"}},
            },
        )
        assert fields(body) == ["options.fal-flux-pro"]

    @pytest.mark.parametrize("count", [0, 5, "two"])
    async def test_num_images_is_one_to_four(
        self, http: httpx.AsyncClient, user: SignedInUser, count: object
    ) -> None:
        body = await refused_body(
            http,
            user,
            "/api/generate",
            {"prompt": "a fox", "modelId": "fal-flux-dev", "numImages": count},
        )
        assert fields(body) == ["numImages"]

    async def test_type_is_image_or_video(
        self, http: httpx.AsyncClient, user: SignedInUser
    ) -> None:
        body = await refused_body(http, user, "/api/generate", {**GOOD, "type": "chat"})
        assert fields(body) == ["type"]

    async def test_workspace_id_must_be_text_or_null(
        self, http: httpx.AsyncClient, user: SignedInUser
    ) -> None:
        body = await refused_body(
            http, user, "/api/generate", {**GOOD, "workspaceId": 12}
        )
        assert fields(body) == ["workspaceId"]

    async def test_body_must_be_an_object(
        self, http: httpx.AsyncClient, user: SignedInUser
    ) -> None:
        await refused_body(http, user, "/api/generate", [GOOD])

    async def test_overlong_idempotency_key_is_refused(
        self, http: httpx.AsyncClient, user: SignedInUser
    ) -> None:
        response = await http.post(
            "/api/generate",
            json=GOOD,
            headers={**user.auth, "Idempotency-Key": "k" * 256},
        )
        body = assert_error(response, 400, "invalid_argument")
        assert fields(body)[0].endswith("Idempotency-Key")


class TestIdsThatNameNothing:
    @pytest.mark.parametrize(
        ("method", "path", "body"),
        [
            ("GET", "/api/generations/not-a-uuid", None),
            ("DELETE", "/api/generations/12345", None),
            ("POST", "/api/generations/gen-abc/cancel", None),
            ("PATCH", "/api/generations/x/share", {"sharedWithWorkspace": True}),
            ("GET", "/api/generations/%27%20or%201=1/events", None),
        ],
    )
    async def test_non_uuid_generation_id_is_not_found(
        self,
        http: httpx.AsyncClient,
        user: SignedInUser,
        method: str,
        path: str,
        body: dict[str, Any] | None,
    ) -> None:
        response = await http.request(method, path, json=body, headers=user.auth)
        error = assert_error(response, 404, "not_found")
        assert error["message"] == "Generation not found."

    @pytest.mark.parametrize("path", ["/api/upscale", "/api/upscale/calculate"])
    async def test_non_uuid_source_generation_is_not_found(
        self, http: httpx.AsyncClient, user: SignedInUser, path: str
    ) -> None:
        response = await http.post(
            path,
            json={"generationId": "gen-1", "modelId": "fal-crystal-upscaler"},
            headers=user.auth,
        )
        error = assert_error(response, 404, "not_found")
        assert error["message"] == "Source generation not found."

    async def test_non_uuid_workspace_has_no_gallery(
        self, http: httpx.AsyncClient, user: SignedInUser
    ) -> None:
        response = await http.get("/api/workspaces/studio/gallery", headers=user.auth)
        assert_error(response, 404, "not_found")


class TestListQuery:
    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({"page": "2"}, "page"),
            ({"limit": "0"}, "limit"),
            ({"limit": "1001"}, "limit"),
            ({"limit": "many"}, "limit"),
            ({"offset": "-1"}, "offset"),
            ({"status": "running"}, "status"),
            ({"cursor": "c" * 513}, "cursor"),
        ],
    )
    async def test_bad_or_unknown_parameter_is_refused(
        self,
        http: httpx.AsyncClient,
        user: SignedInUser,
        params: dict[str, str],
        field: str,
    ) -> None:
        response = await http.get("/api/generations", params=params, headers=user.auth)
        body = assert_error(response, 400, "invalid_argument")
        assert fields(body) == [field]

    async def test_gallery_refuses_unknown_parameters(
        self, http: httpx.AsyncClient, user: SignedInUser
    ) -> None:
        response = await http.get(
            f"/api/workspaces/{SOME_ID}/gallery",
            params={"workspaceId": SOME_ID},
            headers=user.auth,
        )
        body = assert_error(response, 400, "invalid_argument")
        assert fields(body) == ["workspaceId"]


class TestBulkDeleteBody:
    @pytest.mark.parametrize(
        "ids",
        [
            [],
            [str(uuid.uuid4()) for _ in range(101)],
            [SOME_ID, SOME_ID],
            ["not-a-uuid"],
            SOME_ID,
        ],
        ids=["empty", "over-100", "repeated", "not-uuid", "not-a-list"],
    )
    async def test_ids_are_1_to_100_distinct_uuids(
        self, http: httpx.AsyncClient, user: SignedInUser, ids: object
    ) -> None:
        body = await refused_body(
            http, user, "/api/generations/bulk-delete", {"ids": ids}
        )
        assert fields(body)[0].startswith("ids")

    async def test_unknown_key_is_refused(
        self, http: httpx.AsyncClient, user: SignedInUser
    ) -> None:
        body = await refused_body(
            http,
            user,
            "/api/generations/bulk-delete",
            {"ids": [SOME_ID], "force": True},
        )
        assert fields(body) == ["force"]


class TestShareBody:
    @pytest.mark.parametrize(
        "sent",
        [{}, {"sharedWithWorkspace": "yes"}, {"workspaceId": SOME_ID}],
    )
    async def test_needs_a_boolean_and_nothing_else(
        self, http: httpx.AsyncClient, user: SignedInUser, sent: dict[str, Any]
    ) -> None:
        response = await http.patch(
            f"/api/generations/{SOME_ID}/share", json=sent, headers=user.auth
        )
        assert_error(response, 400, "invalid_argument")


class TestUpscaleBody:
    async def test_generation_id_is_required(
        self, http: httpx.AsyncClient, user: SignedInUser
    ) -> None:
        body = await refused_body(
            http, user, "/api/upscale", {"modelId": "fal-crystal-upscaler"}
        )
        assert fields(body) == ["generationId"]

    async def test_calculate_takes_no_workspace(
        self, http: httpx.AsyncClient, user: SignedInUser
    ) -> None:
        body = await refused_body(
            http,
            user,
            "/api/upscale/calculate",
            {"generationId": SOME_ID, "workspaceId": SOME_ID},
        )
        assert fields(body) == ["workspaceId"]

    async def test_option_lists_are_refused(
        self, http: httpx.AsyncClient, user: SignedInUser
    ) -> None:
        body = await refused_body(
            http,
            user,
            "/api/upscale",
            {"generationId": SOME_ID, "options": {"scale_factor": [2]}},
        )
        assert fields(body) == ["options"]
