"""gateway/routers/community.py over real HTTP: the gateway in front of the
generation process (CommunityService) and auth, on PostgreSQL.

Accounts sign up through the gateway; their finished generations are
written straight into the generation schema (tests/services/generation/
factories.py). Feed tests search for a word only their own prompts hold.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from libs.config import Settings
from libs.tokens import Audience, TokenSigner
from services.generation.main import GenerationProcess
from tests.gateway.factories import SignedInUser, assert_error, bearer, register
from tests.services.generation.factories import GenerationRow, GenerationRows, marker
from tests.suite import ServedApp

POST_FIELDS = {
    "id",
    "generationId",
    "nickname",
    "avatarUrl",
    "title",
    "category",
    "imageUrl",
    "thumbnailUrl",
    "prompt",
    "modelName",
    "mediaType",
    "likeCount",
    "viewCount",
    "isNsfw",
    "isLiked",
    "publishedAt",
    # The old API's column names.
    "generation_id",
    "avatar_url",
    "image_url",
    "thumbnail_url",
    "model_name",
    "like_count",
    "view_count",
    "is_nsfw",
    "published_at",
}
SHARED_FIELDS = {
    "id",
    "type",
    "result",
    "thumbnailUrl",
    "prompt",
    "modelName",
    "completedAt",
    "createdAt",
    "nickname",
    "userName",
    "allowDownload",
    "viewCount",
}
FEATURED_FIELDS = {
    "id",
    "type",
    "title",
    "description",
    "mediaUrl",
    "mediaType",
    "linkUrl",
    "linkText",
    "featured",
}


@pytest.fixture(scope="module")
async def rows(
    settings: Settings, generation_service: GenerationProcess
) -> AsyncIterator[GenerationRows]:
    database = GenerationRows(settings)
    yield database
    await database.close()


@pytest.fixture
async def http(
    gateway: ServedApp, generation_service: GenerationProcess
) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway.client() as client:
        yield client


async def publish(
    http: httpx.AsyncClient,
    rows: GenerationRows,
    user: SignedInUser,
    prompt: str = "a lighthouse",
    **body: Any,
) -> dict[str, Any]:
    generation_id = await rows.completed(user.id, prompt)
    response = await http.post(
        "/api/community/publish",
        json={"generationId": generation_id, **body},
        headers=user.auth,
    )
    assert response.status_code == 201, response.text
    post: dict[str, Any] = response.json()
    return post


def signed_in(settings: Settings) -> dict[str, str]:
    """The header of a signed-in user with no account: enough to like."""
    signer = TokenSigner(settings.signing_secret())
    token = signer.issue(
        Audience.USER, str(uuid.uuid4()), 900, session_id=str(uuid.uuid4())
    )
    return bearer(token)


async def feed(http: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await http.get("/api/community", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


class TestFeed:
    async def test_posts_have_the_fields_the_web_client_reads(
        self, http: httpx.AsyncClient, rows: GenerationRows
    ) -> None:
        word = marker()
        author = await register(http)
        published = await publish(http, rows, author, prompt=f"{word} fox")

        body = await feed(http, search=word)

        assert body.keys() == {"posts", "total", "page", "totalPages", "nextCursor"}
        assert (body["total"], body["page"], body["totalPages"]) == (1, 1, 1)
        assert body["nextCursor"] is None
        (post,) = body["posts"]
        assert post.keys() == POST_FIELDS
        assert post["id"] == published["id"]
        assert post["nickname"] == author.body["user"]["nickname"]
        assert (post["likeCount"], post["viewCount"]) == (0, 0)
        assert post["like_count"] == post["likeCount"]
        assert post["image_url"] == post["imageUrl"]
        assert post["isLiked"] is False
        assert post["publishedAt"].endswith("Z")

    @pytest.mark.parametrize(("limit", "size"), [(0, 1), (-5, 1), (1000, 100)])
    async def test_limit_is_held_to_1_to_100(
        self, http: httpx.AsyncClient, rows: GenerationRows, limit: int, size: int
    ) -> None:
        word = marker()
        user = await register(http)
        for n in range(3):
            await publish(http, rows, user, prompt=f"{word} {n}")

        body = await feed(http, search=word, limit=limit)

        assert len(body["posts"]) == min(size, 3)
        assert body["totalPages"] == math.ceil(3 / size)

    @pytest.mark.parametrize(
        "params",
        [{"page": 0}, {"page": -1}, {"limit": "many"}, {"sort": "random"}],
    )
    async def test_bad_paging_or_sort_is_400(
        self, http: httpx.AsyncClient, params: dict[str, Any]
    ) -> None:
        response = await http.get("/api/community", params=params)

        assert_error(response, 400)

    async def test_a_cursor_not_issued_here_is_400_naming_it(
        self, http: httpx.AsyncClient
    ) -> None:
        response = await http.get("/api/community", params={"cursor": "garbage"})

        body = assert_error(response, 400, "invalid_argument")
        assert [d["field"] for d in body["details"]] == ["cursor"]

    async def test_cursor_walks_every_post_once(
        self, http: httpx.AsyncClient, rows: GenerationRows
    ) -> None:
        word = marker()
        user = await register(http)
        made = [
            (await publish(http, rows, user, prompt=f"{word} {n}"))["id"]
            for n in range(5)
        ]

        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"search": word, "limit": 2, "sort": "popular"}
            if cursor:
                params["cursor"] = cursor
            body = await feed(http, **params)
            seen.extend(post["id"] for post in body["posts"])
            cursor = body["nextCursor"]
            if cursor is None:
                break

        assert sorted(seen) == sorted(made)
        assert len(seen) == 5

    async def test_reader_sees_their_likes_and_a_bad_token_is_anonymous(
        self, http: httpx.AsyncClient, rows: GenerationRows
    ) -> None:
        word = marker()
        user = await register(http)
        post = await publish(http, rows, user, prompt=word)
        await http.post(f"/api/community/{post['id']}/like", headers=user.auth)

        signed_in = await http.get(
            "/api/community", params={"search": word}, headers=user.auth
        )
        forged = await http.get(
            "/api/community", params={"search": word}, headers=bearer("forged")
        )

        assert signed_in.json()["posts"][0]["isLiked"] is True
        assert forged.status_code == 200, forged.text
        assert forged.json()["posts"][0]["isLiked"] is False


class TestCategories:
    async def test_every_category_with_a_numeric_count(
        self, http: httpx.AsyncClient, rows: GenerationRows
    ) -> None:
        user = await register(http)
        await publish(http, rows, user, category="anime")

        response = await http.get("/api/community/categories")

        assert response.status_code == 200, response.text
        categories = response.json()
        assert [c["id"] for c in categories][:2] == ["all", "anime"]
        assert len(categories) == 12
        assert all(c.keys() == {"id", "name", "count"} for c in categories)
        assert all(isinstance(c["count"], int) for c in categories)
        assert categories[1]["count"] >= 1


class TestPublish:
    async def test_image_prompt_and_model_come_from_the_generation(
        self, http: httpx.AsyncClient, rows: GenerationRows
    ) -> None:
        user = await register(http)
        row = GenerationRow(user.id, prompt="a cyberpunk alley", model_name="FLUX")
        await rows.add(row)

        response = await http.post(
            "/api/community/publish",
            json={
                "generationId": row.id,
                "title": "Alley",
                "category": "not-a-category",
                "imageUrl": "https://evil.example.com/x.png",
                "prompt": "something else",
                "modelName": "Fake",
            },
            headers=user.auth,
        )

        assert response.status_code == 201, response.text
        post = response.json()
        assert post["success"] is True
        assert post["imageUrl"] == row.result_url
        assert (post["prompt"], post["modelName"]) == ("a cyberpunk alley", "FLUX")
        assert (post["title"], post["category"]) == ("Alley", "scifi")

    async def test_someone_elses_generation_is_404(
        self, http: httpx.AsyncClient, rows: GenerationRows
    ) -> None:
        owner, other = await register(http), await register(http)
        generation_id = await rows.completed(owner.id)

        response = await http.post(
            "/api/community/publish",
            json={"generationId": generation_id},
            headers=other.auth,
        )

        assert_error(response, 404, "not_found")

    async def test_unfinished_generation_is_409_saying_why(
        self, http: httpx.AsyncClient, rows: GenerationRows
    ) -> None:
        user = await register(http)
        generation_id = await rows.add(GenerationRow(user.id, status="pending"))

        response = await http.post(
            "/api/community/publish",
            json={"generationId": generation_id},
            headers=user.auth,
        )

        body = assert_error(response, 409, "failed_precondition")
        assert "pending" in body["error"]

    async def test_publishing_twice_is_409(
        self, http: httpx.AsyncClient, rows: GenerationRows
    ) -> None:
        user = await register(http)
        post = await publish(http, rows, user)

        response = await http.post(
            "/api/community/publish",
            json={"generationId": post["generationId"]},
            headers=user.auth,
        )

        assert_error(response, 409, "conflict")

    async def test_without_a_token_is_401(self, http: httpx.AsyncClient) -> None:
        response = await http.post(
            "/api/community/publish", json={"generationId": str(uuid.uuid4())}
        )

        assert_error(response, 401)


class TestPost:
    async def test_each_read_counts_a_view_and_shows_the_readers_like(
        self, http: httpx.AsyncClient, rows: GenerationRows
    ) -> None:
        user = await register(http)
        post = await publish(http, rows, user)
        await http.post(f"/api/community/{post['id']}/like", headers=user.auth)

        anonymous = await http.get(f"/api/community/{post['id']}")
        forged = await http.get(
            f"/api/community/{post['id']}", headers=bearer("not.a.token")
        )
        liker = await http.get(f"/api/community/{post['id']}", headers=user.auth)

        assert [r.status_code for r in (anonymous, forged, liker)] == [200] * 3
        assert [r.json()["viewCount"] for r in (anonymous, forged, liker)] == [1, 2, 3]
        assert [r.json()["isLiked"] for r in (anonymous, forged, liker)] == [
            False,
            False,
            True,
        ]
        assert liker.json().keys() == POST_FIELDS

    async def test_unknown_post_is_404(self, http: httpx.AsyncClient) -> None:
        response = await http.get(f"/api/community/{uuid.uuid4()}")

        assert_error(response, 404, "not_found")


class TestLike:
    async def test_toggle_answers_liked_and_the_new_count(
        self, http: httpx.AsyncClient, rows: GenerationRows
    ) -> None:
        author, fan = await register(http), await register(http)
        post = await publish(http, rows, author)

        liked = await http.post(f"/api/community/{post['id']}/like", headers=fan.auth)
        unliked = await http.post(f"/api/community/{post['id']}/like", headers=fan.auth)

        assert liked.status_code == 200, liked.text
        assert liked.json() == {"liked": True, "likeCount": 1}
        assert unliked.json() == {"liked": False, "likeCount": 0}

    async def test_unknown_post_is_404(self, http: httpx.AsyncClient) -> None:
        user = await register(http)

        response = await http.post(
            f"/api/community/{uuid.uuid4()}/like", headers=user.auth
        )

        assert_error(response, 404, "not_found")

    async def test_without_a_token_is_401(
        self, http: httpx.AsyncClient, rows: GenerationRows
    ) -> None:
        post = await publish(http, rows, await register(http))

        response = await http.post(f"/api/community/{post['id']}/like")

        assert_error(response, 401)


class TestUnpublish:
    async def test_author_removes_their_post(
        self, http: httpx.AsyncClient, rows: GenerationRows
    ) -> None:
        user = await register(http)
        post = await publish(http, rows, user)

        response = await http.delete(f"/api/community/{post['id']}", headers=user.auth)

        assert response.status_code == 200, response.text
        assert response.json() == {"success": True}
        assert_error(await http.get(f"/api/community/{post['id']}"), 404)

    async def test_someone_elses_post_is_404(
        self, http: httpx.AsyncClient, rows: GenerationRows
    ) -> None:
        post = await publish(http, rows, await register(http))
        other = await register(http)

        response = await http.delete(f"/api/community/{post['id']}", headers=other.auth)

        assert_error(response, 404, "not_found")
        assert (await http.get(f"/api/community/{post['id']}")).status_code == 200


class TestMyPosts:
    async def test_lists_only_the_callers_posts(
        self, http: httpx.AsyncClient, rows: GenerationRows
    ) -> None:
        user = await register(http)
        mine = [await publish(http, rows, user) for _ in range(2)]
        await publish(http, rows, await register(http))

        response = await http.get("/api/community/user/me", headers=user.auth)

        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        listed = response.json()
        assert [post["id"] for post in listed] == [mine[1]["id"], mine[0]["id"]]
        assert all(post.keys() == POST_FIELDS for post in listed)

    async def test_without_a_token_is_401(self, http: httpx.AsyncClient) -> None:
        assert_error(await http.get("/api/community/user/me"), 401)


class TestShare:
    async def test_link_for_an_own_generation(
        self, http: httpx.AsyncClient, rows: GenerationRows, settings: Settings
    ) -> None:
        user = await register(http)
        generation_id = await rows.completed(user.id)

        response = await http.post(
            "/api/share", json={"generationId": generation_id}, headers=user.auth
        )
        again = await http.post(
            "/api/share",
            json={"generationId": generation_id, "allowDownload": False},
            headers=user.auth,
        )

        assert response.status_code == 201, response.text
        share = response.json()
        assert (
            share["shareUrl"] == f"{settings.frontend_url}/share/{share['shareToken']}"
        )
        assert (share["allowDownload"], share["viewCount"]) == (True, 0)
        assert share["expiresAt"] is None
        assert again.json()["shareToken"] == share["shareToken"]

    async def test_public_page_shows_no_owner_data(
        self, http: httpx.AsyncClient, rows: GenerationRows
    ) -> None:
        user = await register(http)
        row = GenerationRow(user.id, prompt="a quiet harbour", model_name="FLUX")
        await rows.add(row)
        share = (
            await http.post(
                "/api/share",
                json={"generationId": row.id, "expiresInDays": 3},
                headers=user.auth,
            )
        ).json()

        response = await http.get(f"/api/share/{share['shareToken']}")

        assert response.status_code == 200, response.text
        shared = response.json()
        assert shared.keys() == SHARED_FIELDS
        assert (shared["id"], shared["type"], shared["result"]) == (
            row.id,
            "image",
            row.result_url,
        )
        assert (shared["prompt"], shared["modelName"]) == ("a quiet harbour", "FLUX")
        nickname = user.body["user"]["nickname"]
        assert shared["nickname"] == shared["userName"] == nickname
        assert shared["viewCount"] == 1
        assert user.email not in response.text
        assert user.id not in response.text

    async def test_published_generation_opens_by_its_id(
        self, http: httpx.AsyncClient, rows: GenerationRows
    ) -> None:
        post = await publish(http, rows, await register(http))

        response = await http.get(f"/api/share/{post['generationId']}")

        assert response.status_code == 200, response.text
        assert response.json()["id"] == post["generationId"]

    async def test_private_generation_is_404(
        self, http: httpx.AsyncClient, rows: GenerationRows
    ) -> None:
        generation_id = await rows.completed((await register(http)).id)

        assert_error(await http.get(f"/api/share/{generation_id}"), 404)

    async def test_expired_link_is_410(
        self, http: httpx.AsyncClient, rows: GenerationRows
    ) -> None:
        user = await register(http)
        generation_id = await rows.completed(user.id)
        token = (
            await http.post(
                "/api/share",
                json={"generationId": generation_id, "expiresInDays": 1},
                headers=user.auth,
            )
        ).json()["shareToken"]
        await rows.share_expiry(token, datetime.now(UTC) - timedelta(minutes=1))

        assert_error(await http.get(f"/api/share/{token}"), 410, "expired")

    async def test_someone_elses_generation_is_404(
        self, http: httpx.AsyncClient, rows: GenerationRows
    ) -> None:
        generation_id = await rows.completed((await register(http)).id)
        other = await register(http)

        response = await http.post(
            "/api/share", json={"generationId": generation_id}, headers=other.auth
        )

        assert_error(response, 404, "not_found")

    async def test_revoked_link_is_404_and_only_the_owner_revokes(
        self, http: httpx.AsyncClient, rows: GenerationRows
    ) -> None:
        user, other = await register(http), await register(http)
        generation_id = await rows.completed(user.id)
        token = (
            await http.post(
                "/api/share", json={"generationId": generation_id}, headers=user.auth
            )
        ).json()["shareToken"]

        refused = await http.delete(f"/api/share/{token}", headers=other.auth)
        revoked = await http.delete(f"/api/share/{token}", headers=user.auth)

        assert_error(refused, 404, "not_found")
        assert revoked.json() == {"success": True}
        assert_error(await http.get(f"/api/share/{token}"), 404)

    async def test_expiry_out_of_range_is_400(
        self, http: httpx.AsyncClient, rows: GenerationRows
    ) -> None:
        user = await register(http)
        generation_id = await rows.completed(user.id)

        response = await http.post(
            "/api/share",
            json={"generationId": generation_id, "expiresInDays": 400},
            headers=user.auth,
        )

        assert_error(response, 400)


class TestLandingFeatured:
    async def test_items_link_to_popular_posts(
        self, http: httpx.AsyncClient, rows: GenerationRows, settings: Settings
    ) -> None:
        user = await register(http)
        post = await publish(http, rows, user, title="Harbour")
        for _ in range(30):
            await http.post(
                f"/api/community/{post['id']}/like", headers=signed_in(settings)
            )

        response = await http.get("/api/landing/featured", params={"limit": 24})

        assert response.status_code == 200, response.text
        items = {item["id"]: item for item in response.json()}
        assert all(item.keys() >= FEATURED_FIELDS for item in items.values())
        item = items[post["id"]]
        assert (item["title"], item["mediaUrl"]) == ("Harbour", post["imageUrl"])
        assert item["linkUrl"] == f"/share/{post['generationId']}"
        assert (item["featured"], item["mediaType"]) == (True, "image")


class TestProfileStats:
    async def test_profile_counts_generations_posts_and_likes(
        self, http: httpx.AsyncClient, rows: GenerationRows
    ) -> None:
        user, fan = await register(http), await register(http)
        post = await publish(http, rows, user)
        await rows.completed(user.id)
        await http.post(f"/api/community/{post['id']}/like", headers=fan.auth)

        response = await http.get("/api/profile", headers=user.auth)

        assert response.status_code == 200, response.text
        assert response.json()["stats"] == {
            "generations": 2,
            "published": 1,
            "likesReceived": 1,
        }
