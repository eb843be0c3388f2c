"""Oversized and slow requests: refused with the error shape (413 for
bodies, 431 for headers: gateway/middleware.py), never a 500, and never at
the cost of the other clients.

Raw sockets, because an HTTP client would not send what these tests send.
uvicorn has no timeout for reading a request's headers or body (its
keep-alive timeout starts only after a response); what holds is that slow
clients cost a socket each and block nobody, which is what is tested here.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from urllib.parse import urlsplit

import httpx
import pytest

from libs.config import Settings
from tests.gateway.factories import assert_error, register
from tests.suite import ServedApp

SLOW_CLIENTS = 100
# Other clients' requests while the slow ones hold their sockets.
FAST_WITHIN_SECONDS = 2.0
Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@asynccontextmanager
async def connected(gateway: ServedApp) -> AsyncIterator[Connection]:
    url = urlsplit(gateway.url)
    assert url.hostname is not None
    assert url.port is not None
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The status and body of one response (Content-Length framed, or up to
    the end of the connection)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    body = await asyncio.wait_for(reader.readexactly(length), 10)
    return status, body


def request_head(host: str, path: str, *headers: str, method: str = "GET") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", *headers, "", ""]
    return "\r\n".join(lines).encode()


async def assert_still_serving(gateway: ServedApp) -> None:
    async with gateway.client() as http:
        started = time.monotonic()
        response = await http.get("/api/auth/me")
        elapsed = time.monotonic() - started
    assert_error(response, 401)
    assert elapsed < FAST_WITHIN_SECONDS, elapsed


class TestOversizedBodies:
    async def test_declared_length_over_the_limit_is_refused_before_reading(
        self, gateway: ServedApp, settings: Settings
    ) -> None:
        host = urlsplit(gateway.url).netloc
        too_long = settings.max_body_bytes + 1
        async with connected(gateway) as (reader, writer):
            writer.write(
                request_head(
                    host,
                    "/api/auth/register",
                    "Content-Type: application/json",
                    f"Content-Length: {too_long}",
                    method="POST",
                )
            )
            await writer.drain()
            status, body = await read_response(reader)

        assert status == 413
        error = json.loads(body)
        assert error["statusCode"] == 413
        assert error["code"] == "body_too_large"
        assert (
            error["message"]
            == error["error"]
            == "The request body is larger than 25 MB."
        )

    async def test_chunked_body_over_the_limit_is_refused_while_reading(
        self, gateway: ServedApp, settings: Settings
    ) -> None:
        chunk = b"x" * (1024 * 1024)
        chunks = settings.max_body_bytes // len(chunk) + 2

        async def body() -> AsyncIterator[bytes]:
            for _ in range(chunks):
                yield chunk

        async with gateway.client() as http:
            user = await register(http)
            try:
                response = await http.post(
                    "/api/chat/estimate", content=body(), headers=user.auth
                )
            except httpx.WriteError:
                pytest.fail("the gateway closed without answering 413")

        assert_error(response, 413, "body_too_large")

    async def test_body_just_under_the_limit_is_read_and_judged(
        self, gateway: ServedApp, settings: Settings
    ) -> None:
        # 24 MB of JSON is read whole and refused for what it says, not
        # for its size.
        padding = "x" * (settings.max_body_bytes - 1024 * 1024)
        async with gateway.client() as http:
            response = await http.post(
                "/api/auth/login", json={"email": padding, "password": "p"}
            )

        assert response.status_code in {400, 401, 422}, response.text[:200]
        assert_error(response, response.status_code)

    async def test_a_non_numeric_content_length_is_refused(
        self, gateway: ServedApp
    ) -> None:
        host = urlsplit(gateway.url).netloc
        async with connected(gateway) as (reader, writer):
            writer.write(
                request_head(
                    host, "/api/auth/login", "Content-Length: 1e9", method="POST"
                )
            )
            await writer.drain()
            status, _ = await read_response(reader)

        assert 400 <= status < 500


def assert_headers_too_large(status: int, body: bytes) -> None:
    assert status == 431, body[:200]
    error = json.loads(body)
    assert error["statusCode"] == 431
    assert error["code"] == "headers_too_large"
    assert error["message"] == error["error"]


class TestOversizedHeaders:
    async def test_one_huge_header_is_a_4xx_and_others_are_served(
        self, gateway: ServedApp
    ) -> None:
        host = urlsplit(gateway.url).netloc
        async with connected(gateway) as (reader, writer):
            writer.write(request_head(host, "/healthz", "X-Big: " + "a" * 200_000))
            await writer.drain()
            status, body = await read_response(reader)

        assert_headers_too_large(status, body)
        await assert_still_serving(gateway)

    async def test_a_thousand_headers_are_a_4xx_and_others_are_served(
        self, gateway: ServedApp
    ) -> None:
        host = urlsplit(gateway.url).netloc
        many = [f"X-H{n}: {n}" for n in range(1000)]
        async with connected(gateway) as (reader, writer):
            writer.write(request_head(host, "/healthz", *many))
            await writer.drain()
            status, body = await read_response(reader)

        assert_headers_too_large(status, body)
        await assert_still_serving(gateway)

    async def test_a_browser_sized_request_is_served(self, gateway: ServedApp) -> None:
        headers = {f"X-Extra-{n}": "v" * 40 for n in range(40)}
        headers["Cookie"] = "session=" + "c" * 8000
        async with gateway.client() as http:
            response = await http.get("/api/auth/me", headers=headers)

        assert_error(response, 401)

    async def test_a_huge_authorization_header_is_a_401(
        self, gateway: ServedApp
    ) -> None:
        async with gateway.client() as http:
            response = await http.get(
                "/api/auth/me", headers={"Authorization": "Bearer " + "a" * 60_000}
            )

        assert_error(response, 401)


class TestSlowClients:
    async def test_clients_trickling_headers_block_nobody(
        self, gateway: ServedApp
    ) -> None:
        host = urlsplit(gateway.url).netloc
        head = request_head(host, "/api/auth/me")
        async with _slow_clients(gateway, [head[:10]] * SLOW_CLIENTS) as writers:
            for writer in writers:
                writer.write(head[10:12])
            await assert_still_serving(gateway)
            for writer in writers:
                writer.write(head[12:14])
            await assert_still_serving(gateway)

    async def test_clients_trickling_a_body_block_nobody(
        self, gateway: ServedApp
    ) -> None:
        host = urlsplit(gateway.url).netloc
        head = request_head(
            host,
            "/api/auth/login",
            "Content-Type: application/json",
            "Content-Length: 100000",
            method="POST",
        )
        async with _slow_clients(gateway, [head + b'{"email'] * SLOW_CLIENTS):
            await assert_still_serving(gateway)
            await asyncio.sleep(0.5)
            await assert_still_serving(gateway)

    async def test_a_slow_client_is_answered_when_it_finishes(
        self, gateway: ServedApp
    ) -> None:
        host = urlsplit(gateway.url).netloc
        head = request_head(host, "/api/auth/me")
        async with connected(gateway) as (reader, writer):
            for byte in range(len(head)):
                writer.write(head[byte : byte + 1])
                await writer.drain()
                await asyncio.sleep(0.01)
            status, body = await read_response(reader)

        assert status == 401
        assert json.loads(body)["statusCode"] == 401


@asynccontextmanager
async def _slow_clients(
    gateway: ServedApp, openings: list[bytes]
) -> AsyncIterator[list[asyncio.StreamWriter]]:
    url = urlsplit(gateway.url)
    assert url.hostname is not None
    assert url.port is not None
    writers: list[asyncio.StreamWriter] = []
    try:
        for opening in openings:
            _, writer = await asyncio.open_connection(url.hostname, url.port)
            writer.write(opening)
            writers.append(writer)
        yield writers
    finally:
        for writer in writers:
            writer.close()
