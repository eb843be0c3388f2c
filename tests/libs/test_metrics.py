"""Prometheus metrics: the gRPC interceptor's counts and latencies over a
real server, the listener on METRICS_PORT, and the gateway's /metrics after
real requests.

Every process keeps its metrics in the client library's one registry, which
the whole test session shares, so each test reads how much a series grew
while it ran rather than its value.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import grpc
import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from libs import errors
from libs.config import Settings
from libs.grpc.identity import Access, CallerVerifier
from libs.grpc.server import ServiceDefinition, ServiceServer
from libs.revocation import RevocationBatch, RevocationList
from libs.tokens import TokenSigner
from tests.suite import ServedApp

SERVICE = "omnihub.test.v1.Meter"
SECRET = "metrics-test-secret-" + "s" * 32

Context = grpc.aio.ServicerContext[bytes, bytes]


class Meter:
    """A service whose methods end each way a call can end."""

    async def ok(self, request: bytes, context: Context) -> bytes:
        return b"ok"

    async def refuse(self, request: bytes, context: Context) -> bytes:
        raise errors.NotFound("No such meter.")

    async def crash(self, request: bytes, context: Context) -> bytes:
        raise RuntimeError("a bug")

    async def count(self, request: bytes, context: Context) -> AsyncIterator[bytes]:
        for number in range(3):
            yield str(number).encode()


def _register(meter: Any, server: grpc.aio.Server) -> None:
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "Ok": grpc.unary_unary_rpc_method_handler(meter.ok),
        "Refuse": grpc.unary_unary_rpc_method_handler(meter.refuse),
        "Crash": grpc.unary_unary_rpc_method_handler(meter.crash),
        "AdminOnly": grpc.unary_unary_rpc_method_handler(meter.ok),
        "Count": grpc.unary_stream_rpc_method_handler(meter.count),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, handlers),)
    )


ACCESS = {
    "Ok": Access.PUBLIC,
    "Refuse": Access.PUBLIC,
    "Crash": Access.PUBLIC,
    "AdminOnly": Access.ADMIN,
    "Count": Access.PUBLIC,
}


async def _no_revocations(since: datetime | None) -> RevocationBatch:
    return RevocationBatch([], datetime.now().astimezone())


@pytest.fixture(scope="module")
async def meter() -> AsyncIterator[tuple[ServiceServer, grpc.aio.Channel]]:
    settings = Settings(
        _env_file=None,
        environment="test",
        jwt_secret=SECRET,
        grpc_listen_host="127.0.0.1",
        metrics_port=0,
    )
    revocations = RevocationList(
        _no_revocations, poll_interval=60, retention_seconds=60
    )
    server = ServiceServer(
        "meter",
        settings,
        CallerVerifier(TokenSigner(SECRET), revocations),
        [ServiceDefinition(SERVICE, Meter(), _register, ACCESS)],
    )
    port = await server.start(0, host="127.0.0.1")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield server, channel
    await server.stop(grace=0)


def handled(method: str, code: str) -> float:
    value = REGISTRY.get_sample_value(
        "omnihub_grpc_server_handled_total",
        {"grpc_service": SERVICE, "grpc_method": method, "grpc_code": code},
    )
    return value or 0.0


def timed(method: str) -> float:
    value = REGISTRY.get_sample_value(
        "omnihub_grpc_server_handling_seconds_count",
        {"grpc_service": SERVICE, "grpc_method": method},
    )
    return value or 0.0


async def growth(read: Callable[[], float], calls: Callable[[], Any]) -> float:
    before = read()
    await calls()
    return read() - before


async def unary(channel: grpc.aio.Channel, method: str) -> bytes | grpc.StatusCode:
    multicallable: Any = channel.unary_unary(f"/{SERVICE}/{method}")
    try:
        reply: bytes = await multicallable(b"", timeout=5)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return reply


Served = tuple[ServiceServer, grpc.aio.Channel]


class TestServiceInterceptor:
    async def test_successful_calls_are_counted_as_ok(self, meter: Served) -> None:
        _, channel = meter

        async def three_calls() -> None:
            for _ in range(3):
                assert await unary(channel, "Ok") == b"ok"

        assert await growth(lambda: handled("Ok", "OK"), three_calls) == 3

    async def test_refusal_is_counted_by_its_status_code(self, meter: Served) -> None:
        _, channel = meter

        async def refused() -> None:
            assert await unary(channel, "Refuse") is grpc.StatusCode.NOT_FOUND

        assert await growth(lambda: handled("Refuse", "NOT_FOUND"), refused) == 1
        assert handled("Refuse", "OK") == 0

    async def test_crash_is_counted_as_internal(self, meter: Served) -> None:
        _, channel = meter

        async def crashed() -> None:
            assert await unary(channel, "Crash") is grpc.StatusCode.INTERNAL

        assert await growth(lambda: handled("Crash", "INTERNAL"), crashed) == 1

    async def test_call_refused_by_its_access_rule_is_counted(
        self, meter: Served
    ) -> None:
        _, channel = meter

        async def unauthenticated() -> None:
            code = await unary(channel, "AdminOnly")
            assert code is grpc.StatusCode.UNAUTHENTICATED

        grown = await growth(
            lambda: handled("AdminOnly", "UNAUTHENTICATED"), unauthenticated
        )
        assert grown == 1

    async def test_every_call_is_timed(self, meter: Served) -> None:
        _, channel = meter

        async def two_calls() -> None:
            await unary(channel, "Ok")
            await unary(channel, "Refuse")

        assert await growth(lambda: timed("Ok") + timed("Refuse"), two_calls) == 2

    async def test_stream_is_counted_once_when_it_ends(self, meter: Served) -> None:
        _, channel = meter

        async def one_stream() -> None:
            streaming: Any = channel.unary_stream(f"/{SERVICE}/Count")
            replies = [reply async for reply in streaming(b"", timeout=5)]
            assert replies == [b"0", b"1", b"2"]

        assert await growth(lambda: handled("Count", "OK"), one_stream) == 1

    async def test_nothing_is_left_in_flight(self, meter: Served) -> None:
        _, channel = meter
        await unary(channel, "Ok")
        await unary(channel, "Crash")

        for method in ("Ok", "Crash"):
            in_flight = REGISTRY.get_sample_value(
                "omnihub_grpc_server_in_flight",
                {"grpc_service": SERVICE, "grpc_method": method},
            )
            assert in_flight == 0


class TestMetricsListener:
    async def test_service_serves_its_metrics_on_the_metrics_port(
        self, meter: Served
    ) -> None:
        server, channel = meter
        await unary(channel, "Ok")
        assert server.metrics_port is not None

        async with httpx.AsyncClient() as http:
            response = await http.get(f"http://127.0.0.1:{server.metrics_port}/metrics")

        assert response.status_code == 200
        samples = _samples(response.text, "omnihub_grpc_server_handled")
        ok = {"grpc_service": SERVICE, "grpc_method": "Ok", "grpc_code": "OK"}
        assert any(labels == ok and value >= 1 for labels, value in samples)

    async def test_no_listener_without_a_metrics_port(self) -> None:
        settings = Settings(_env_file=None, environment="test", jwt_secret=SECRET)
        server = ServiceServer(
            "quiet",
            settings,
            CallerVerifier(TokenSigner(SECRET), None),
            [ServiceDefinition(SERVICE, Meter(), _register, ACCESS)],
        )
        await server.start(0, host="127.0.0.1")
        try:
            assert server.metrics_port is None
        finally:
            await server.stop(grace=0)


def _samples(exposition: str, family: str) -> list[tuple[dict[str, str], float]]:
    return [
        (sample.labels, sample.value)
        for metrics in text_string_to_metric_families(exposition)
        if metrics.name == family
        for sample in metrics.samples
        if sample.name == f"{family}_total"
    ]


async def _http_requests(http: httpx.AsyncClient) -> dict[tuple[str, str, str], float]:
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (labels["route"], labels["method"], labels["status"]): value
        for labels, value in _samples(response.text, "omnihub_http_requests")
    }


class TestGatewayMetrics:
    async def test_requests_are_counted_by_route_template(
        self, gateway: ServedApp, settings: Settings
    ) -> None:
        async with gateway.client() as http:
            before = await _http_requests(http)
            await http.get("/api/models/no-such-model")
            await http.get("/api/models/another-missing-model")
            after = await _http_requests(http)

        key = ("/api/models/{model_id:path}", "GET", "404")
        assert after[key] - before.get(key, 0) == 2
        assert not any("no-such-model" in route for route, _, _ in after)

    async def test_paths_no_route_matches_share_one_label(
        self, gateway: ServedApp
    ) -> None:
        async with gateway.client() as http:
            before = await _http_requests(http)
            await http.get("/no/such/page")
            await http.get("/nor/this/one")
            after = await _http_requests(http)

        key = ("unmatched", "GET", "404")
        assert after[key] - before.get(key, 0) == 2

    async def test_successful_requests_are_counted_with_their_status(
        self, gateway: ServedApp
    ) -> None:
        async with gateway.client() as http:
            before = await _http_requests(http)
            assert (await http.get("/healthz")).status_code == 200
            after = await _http_requests(http)

        key = ("/healthz", "GET", "200")
        assert after[key] - before.get(key, 0) == 1

    async def test_latency_and_in_flight_are_exposed(self, gateway: ServedApp) -> None:
        async with gateway.client() as http:
            await http.get("/healthz")
            response = await http.get("/metrics")

        families = {
            metrics.name: metrics
            for metrics in text_string_to_metric_families(response.text)
        }
        latency = families["omnihub_http_request_duration_seconds"]
        counts = [
            sample
            for sample in latency.samples
            if sample.name.endswith("_count") and sample.labels["route"] == "/healthz"
        ]
        assert counts
        assert counts[0].value >= 1
        # This very request is the one in flight while the page is made.
        (in_flight,) = families["omnihub_http_requests_in_flight"].samples
        assert in_flight.value >= 1
