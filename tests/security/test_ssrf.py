"""Server-side request forgery through image URLs a user sends: reference
images of a generation (services/generation/inputs.py), images of a chat
message and of prompt enhancement (services/chat/prompts.py).

No OmniHub process fetches these URLs; the provider does (fal, OpenRouter),
so the policy is to never hand a provider a URL naming a private, loopback
or link-local address in any spelling. Each case points at a loopback
server that counts connections: it must be refused with a 400, never reach
the provider's simulator, and never be connected to. Redirects are the
fetcher's (the provider's) to follow; no OmniHub code fetches a user's URL.
The one URL OmniHub fetches without having made it is a provider's result,
which the worker copies: there a public URL redirecting to a private
address is refused (tests/services/generation/test_storage.py).
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.chat.main import ChatProcess
from tests.fixtures.chat import LocalLLM
from tests.gateway.factories import SignedInUser, assert_error, register
from tests.suite import Recorder, ServedApp, recording_port

# Takes an optional reference image.
REFERENCE_MODEL = "fal-flux-2"
CHAT_MODEL = "openai/gpt-4o"
# Spellings of private and local hosts; {port} is the recorder's.
PRIVATE_HOSTS = [
    "127.0.0.1:{port}",
    "localhost:{port}",
    "LocalHost.:{port}",
    "api.localhost:{port}",
    "[::1]:{port}",
    "[::ffff:127.0.0.1]:{port}",
    "[::ffff:7f00:1]:{port}",
    "[2002:7f00:1::]:{port}",
    "2130706433:{port}",
    "0177.0.0.1:{port}",
    "0x7f.0.0.1:{port}",
    "127.1:{port}",
    "0.0.0.0:{port}",
    "0:{port}",
    "[::]:{port}",
    "169.254.169.254",
    "[fe80::1]",
    "[fd00::1]",
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",
]


@pytest.fixture(scope="module")
async def recorder() -> AsyncIterator[Recorder]:
    async with recording_port() as found:
        yield found


@pytest.fixture(scope="module")
async def http(
    gateway: ServedApp, chat_service: ChatProcess
) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway.client() as client:
        yield client


@pytest.fixture(scope="module")
async def user(http: httpx.AsyncClient) -> SignedInUser:
    return await register(http)


def _urls(recorder: Recorder) -> list[str]:
    return [
        f"http://{host.format(port=recorder.port)}/latest/meta-data"
        for host in PRIVATE_HOSTS
    ]


def _private_name() -> str:
    """This machine's name, which its hosts file maps to a non-public
    address: a DNS name that resolves somewhere private."""
    name = socket.gethostname()
    addresses = {info[4][0] for info in socket.getaddrinfo(name, None)}
    if not addresses or any(
        not a.startswith(("127.", "10.", "::1")) for a in addresses
    ):
        pytest.skip(f"{name} does not resolve to loopback here: {addresses}")
    return name


async def _generate(
    http: httpx.AsyncClient, user: SignedInUser, prompt: str, url: str
) -> httpx.Response:
    return await http.post(
        "/api/generate",
        json={
            "type": "image",
            "model": REFERENCE_MODEL,
            "prompt": prompt,
            "inputImages": [url],
        },
        headers=user.auth,
    )


async def _fal_received(fal_simulator: ServedApp, prompt: str) -> list[Any]:
    async with fal_simulator.client() as fal:
        response = await fal.get(
            "/simulator/requests", params={"prompt_contains": prompt}
        )
    assert response.status_code == 200, response.text
    items: list[Any] = response.json()["items"]
    return items


class TestGenerationReferenceImages:
    async def test_every_private_spelling_is_refused_and_never_reaches_fal(
        self,
        http: httpx.AsyncClient,
        user: SignedInUser,
        recorder: Recorder,
        fal_simulator: ServedApp,
    ) -> None:
        prompt = f"ssrf {uuid.uuid4().hex[:12]}"
        responses = {
            url: await _generate(http, user, prompt, url) for url in _urls(recorder)
        }

        for url, response in responses.items():
            body = assert_error(response, 400)
            assert "private or local" in body["message"] or (
                "points to this server" in body["message"]
            ), (url, body)
        assert await _fal_received(fal_simulator, prompt) == []
        assert recorder.hits == 0

    async def test_a_name_resolving_to_a_private_address_is_refused(
        self,
        http: httpx.AsyncClient,
        user: SignedInUser,
        recorder: Recorder,
        fal_simulator: ServedApp,
    ) -> None:
        prompt = f"ssrf {uuid.uuid4().hex[:12]}"
        url = f"http://{_private_name()}:{recorder.port}/image.png"

        response = await _generate(http, user, prompt, url)

        body = assert_error(response, 400)
        assert "private or local" in body["message"]
        assert await _fal_received(fal_simulator, prompt) == []
        assert recorder.hits == 0

    async def test_a_refused_image_holds_no_credits(
        self, http: httpx.AsyncClient, user: SignedInUser, recorder: Recorder
    ) -> None:
        before = (await http.get("/api/credits/balance", headers=user.auth)).json()

        response = await _generate(
            http, user, "hold nothing", "http://169.254.169.254/latest/meta-data"
        )

        assert_error(response, 400)
        after = (await http.get("/api/credits/balance", headers=user.auth)).json()
        assert after == before


async def _conversation(http: httpx.AsyncClient, user: SignedInUser) -> str:
    response = await http.post(
        "/api/chat/conversations", json={"modelId": CHAT_MODEL}, headers=user.auth
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _ask_with_image(
    http: httpx.AsyncClient, user: SignedInUser, marker: str, url: str
) -> httpx.Response:
    """A chat message showing `url` in a new conversation."""
    path = f"/api/chat/conversations/{await _conversation(http, user)}/messages"
    return await http.post(
        path,
        json={"content": f"what is this? {marker}", "imageUrls": [url]},
        headers={**user.auth, "Accept": "application/json"},
    )


async def _enhance_with_image(
    http: httpx.AsyncClient, user: SignedInUser, marker: str, url: str
) -> httpx.Response:
    return await http.post(
        "/api/enhance-prompt",
        json={"prompt": f"a cat {marker}", "imageUrls": [url]},
        headers=user.auth,
    )


class TestChatImages:
    async def test_every_private_spelling_is_refused_and_never_reaches_the_llm(
        self,
        http: httpx.AsyncClient,
        user: SignedInUser,
        recorder: Recorder,
        llm_simulator: LocalLLM,
    ) -> None:
        marker = llm_simulator.marker()
        responses = {
            url: await _ask_with_image(http, user, marker, url)
            for url in _urls(recorder)
        }

        for url, response in responses.items():
            body = assert_error(response, 400)
            assert "must be public" in body["message"], (url, body)
        assert await llm_simulator.requests(marker) == []
        assert recorder.hits == 0

    async def test_a_name_resolving_to_a_private_address_is_refused(
        self,
        http: httpx.AsyncClient,
        user: SignedInUser,
        recorder: Recorder,
        llm_simulator: LocalLLM,
    ) -> None:
        marker = llm_simulator.marker()
        url = f"http://{_private_name()}:{recorder.port}/image.png"

        response = await _ask_with_image(http, user, marker, url)
        enhanced = await _enhance_with_image(http, user, marker, url)

        assert "must be public" in assert_error(response, 400)["message"]
        assert "must be public" in assert_error(enhanced, 400)["message"]
        assert await llm_simulator.requests(marker) == []
        assert recorder.hits == 0

    async def test_prompt_enhancement_refuses_private_images(
        self,
        http: httpx.AsyncClient,
        user: SignedInUser,
        recorder: Recorder,
        llm_simulator: LocalLLM,
    ) -> None:
        marker = llm_simulator.marker()
        responses = [
            await _enhance_with_image(http, user, marker, url)
            for url in _urls(recorder)
        ]

        for response in responses:
            assert_error(response, 400)
        assert await llm_simulator.requests(marker) == []
        assert recorder.hits == 0

    async def test_a_malformed_image_address_is_a_400(
        self, http: httpx.AsyncClient, user: SignedInUser
    ) -> None:
        path = f"/api/chat/conversations/{await _conversation(http, user)}/messages"

        response = await http.post(
            path,
            json={"content": "look", "imageUrls": ["http://[zz/x.png"]},
            headers={**user.auth, "Accept": "application/json"},
        )

        assert_error(response, 400)
