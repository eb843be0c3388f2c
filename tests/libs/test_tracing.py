"""Traces across processes: one request through the gateway is one trace,
with a server span in the gateway, a client span per call and a server span
in each service, and the worker's steps of a job join the trace of the
request that created it.

OpenTelemetry's SDK is configured here as an embedding application would:
a tracer provider with an in-memory exporter in place of OTLP, which
configure_tracing then adopts. A provider can be set once per process, so
it stays set for the rest of the session; the exporter is shut down when
this module ends. A gateway and a generation service of this module's own
are started after it is set (a channel gets its tracing interceptors when
it is made); the other services are the session's. How the OTEL_*
variables choose an exporter is checked in child processes.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
import structlog
from omnihub.auth.v1 import auth_pb2, auth_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id

from gateway.app import create_app
from libs.config import Settings
from libs.grpc.tracing import client_interceptors
from libs.process import RunningService
from libs.tracing import TRACER, configure_tracing, exporters_wanted
from services.auth.main import AuthProcess
from services.generation.main import GenerationProcess
from tests.database import ROOT
from tests.gateway.factories import SignedInUser, register
from tests.suite import ServedApp, free_port, run_gateway, run_service

IMAGE_MODEL = "fal-flux-schnell"
WAIT_SECONDS = 10.0
AUTH_GET_ME = "omnihub.auth.v1.AuthService/GetMe"
GENERATION_SERVICE = "omnihub.generation.v1.GenerationService"
A_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
A_TRACEPARENT = f"00-{A_TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert configure_tracing("tests")
    yield exporter
    exporter.clear()
    exporter.shutdown()


@dataclass
class TracedSuite:
    http: httpx.AsyncClient
    settings: Settings
    exporter: InMemorySpanExporter

    async def spans_until(
        self, found: Callable[[list[ReadableSpan]], bool]
    ) -> list[ReadableSpan]:
        """Every span exported so far, once `found` says they are enough
        (spans are exported as they end, some after the reply is read)."""
        started = time.monotonic()
        while True:
            spans = list(self.exporter.get_finished_spans())
            if found(spans):
                return spans
            assert time.monotonic() - started < WAIT_SECONDS, _describe(spans)
            await asyncio.sleep(0.02)

    async def trace_of(self, response: httpx.Response) -> list[ReadableSpan]:
        """The spans of the trace the gateway began for `response`."""
        request_id = response.headers["x-request-id"]
        spans = await self.spans_until(
            lambda spans: any(_is_gateway_span(s, request_id) for s in spans)
        )
        (root,) = [s for s in spans if _is_gateway_span(s, request_id)]
        return [s for s in spans if _trace_id(s) == _trace_id(root)]


def _is_gateway_span(span: ReadableSpan, request_id: str) -> bool:
    attributes = span.attributes or {}
    return (
        span.kind is SpanKind.SERVER
        and "http.route" in attributes
        and attributes.get("omnihub.request_id") == request_id
    )


def _trace_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return format_trace_id(span.context.trace_id)


def _span_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return format_span_id(span.context.span_id)


def _parent_id(span: ReadableSpan) -> str | None:
    return format_span_id(span.parent.span_id) if span.parent else None


def _describe(spans: list[ReadableSpan]) -> list[str]:
    return [f"{s.kind.name} {s.name} {_trace_id(s)}" for s in spans]


def _one(spans: list[ReadableSpan], kind: SpanKind, name: str) -> ReadableSpan:
    matching = [s for s in spans if s.kind is kind and s.name == name]
    assert len(matching) == 1, _describe(spans)
    return matching[0]


@pytest.fixture(scope="module")
async def traced(
    exporter: InMemorySpanExporter,
    settings: Settings,
    auth_service: AuthProcess,
    generation_workers: object,
) -> AsyncIterator[TracedSuite]:
    own = settings.model_copy(
        update={
            "generation_address": f"127.0.0.1:{free_port()}",
            "port": free_port(),
            # Every GET /api/auth/me here must reach auth, not a kept answer.
            "me_cache_seconds": 0,
        }
    )
    generation: RunningService = await run_service(GenerationProcess(), own)
    gateway: ServedApp = await run_gateway(own)
    async with gateway.client() as http:
        yield TracedSuite(http, own, exporter)
    await gateway.stop()
    await generation.stop(grace=0)


@pytest.fixture(scope="module")
async def user(traced: TracedSuite) -> SignedInUser:
    return await register(traced.http)


class TestOneRequestOneTrace:
    async def test_gateway_client_and_service_spans_share_the_trace(
        self, traced: TracedSuite, user: SignedInUser
    ) -> None:
        response = await traced.http.get("/api/auth/me", headers=user.auth)
        assert response.status_code == 200

        spans = await traced.trace_of(response)

        gateway = _one(spans, SpanKind.SERVER, "GET /api/auth/me")
        client = _one(spans, SpanKind.CLIENT, AUTH_GET_ME)
        served = _one(spans, SpanKind.SERVER, AUTH_GET_ME)
        assert gateway.parent is None
        assert _parent_id(client) == _span_id(gateway)
        assert _parent_id(served) == _span_id(client)

    async def test_spans_say_how_the_call_ended(
        self, traced: TracedSuite, user: SignedInUser
    ) -> None:
        response = await traced.http.get("/api/auth/me", headers=user.auth)

        spans = await traced.trace_of(response)

        served = _one(spans, SpanKind.SERVER, AUTH_GET_ME)
        gateway = _one(spans, SpanKind.SERVER, "GET /api/auth/me")
        assert served.attributes is not None
        assert served.attributes["rpc.grpc.status_code"] == 0
        assert served.attributes["rpc.service"] == "omnihub.auth.v1.AuthService"
        assert gateway.attributes is not None
        assert gateway.attributes["http.response.status_code"] == 200
        assert gateway.attributes["http.route"] == "/api/auth/me"

    async def test_refused_call_is_marked_as_an_error(
        self, traced: TracedSuite, user: SignedInUser
    ) -> None:
        response = await traced.http.get(
            f"/api/generations/{uuid.uuid4()}", headers=user.auth
        )
        assert response.status_code == 404

        spans = await traced.trace_of(response)

        (served,) = [
            s
            for s in spans
            if s.kind is SpanKind.SERVER and s.name.startswith(GENERATION_SERVICE)
        ]
        assert served.attributes is not None
        assert (
            served.attributes["rpc.grpc.status_code"]
            == (grpc.StatusCode.NOT_FOUND.value[0])
        )
        assert not served.status.is_ok


@dataclass(frozen=True)
class CreatedGeneration:
    spans: list[ReadableSpan]
    trace_id: str


@pytest.fixture(scope="module")
async def created(traced: TracedSuite, user: SignedInUser) -> CreatedGeneration:
    """One image generation made through the gateway, and its trace."""
    response = await traced.http.post(
        "/api/generate",
        json={"type": "image", "model": IMAGE_MODEL, "prompt": "a traced lighthouse"},
        headers=user.auth,
    )
    assert response.status_code == 201, response.text
    spans = await traced.trace_of(response)
    return CreatedGeneration(spans, _trace_id(spans[0]))


class TestTraceThroughServices:
    async def test_service_to_service_calls_stay_in_the_trace(
        self, created: CreatedGeneration
    ) -> None:
        served = {
            s.name.rpartition("/")[0]
            for s in created.spans
            if s.kind is SpanKind.SERVER and s.name.startswith("omnihub.")
        }

        assert GENERATION_SERVICE in served
        # Reached from the generation service, not from the gateway.
        assert "omnihub.billing.v1.BillingService" in served

    async def test_every_span_hangs_from_the_gateways(
        self, created: CreatedGeneration
    ) -> None:
        ids = {_span_id(s) for s in created.spans}
        roots = [s for s in created.spans if s.parent is None]

        assert [root.name for root in roots] == ["POST /api/generate"]
        assert all(_parent_id(s) in ids for s in created.spans if s.parent)

    async def test_workers_steps_join_the_creating_requests_trace(
        self, traced: TracedSuite, created: CreatedGeneration
    ) -> None:
        spans = await traced.spans_until(
            lambda spans: any(
                s.name == "generation.job.step" and _trace_id(s) == created.trace_id
                for s in spans
            )
        )

        step = next(
            s
            for s in spans
            if s.name == "generation.job.step" and _trace_id(s) == created.trace_id
        )
        creating = _one(
            created.spans,
            SpanKind.SERVER,
            f"{GENERATION_SERVICE}/CreateGenerations",
        )
        assert step.kind is SpanKind.CONSUMER
        assert _parent_id(step) == _span_id(creating)


class TestContextAtTheEdges:
    async def test_trace_context_from_a_trusted_proxy_is_continued(
        self, traced: TracedSuite
    ) -> None:
        # The test client is on loopback, inside TRUSTED_PROXIES.
        response = await traced.http.get(
            "/healthz", headers={"traceparent": A_TRACEPARENT}
        )

        spans = await traced.trace_of(response)

        assert _trace_id(spans[0]) == A_TRACE_ID

    async def test_trace_context_from_anyone_else_is_ignored(
        self, traced: TracedSuite
    ) -> None:
        untrusting = traced.settings.model_copy(update={"trusted_proxies": []})
        transport = httpx.ASGITransport(app=create_app(untrusting))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gateway"
        ) as http:
            response = await http.get(
                "/healthz", headers={"traceparent": A_TRACEPARENT}
            )

        spans = await traced.trace_of(response)

        assert _trace_id(spans[0]) != A_TRACE_ID
        assert spans[0].parent is None

    async def test_a_call_without_trace_context_starts_its_own_trace(
        self, traced: TracedSuite, user: SignedInUser
    ) -> None:
        # Two calls on one connection: the second must not inherit the first's.
        async with grpc.aio.insecure_channel(traced.settings.auth_address) as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            metadata = (("authorization", f"Bearer {user.access_token}"),)
            for _ in range(2):
                await stub.GetMe(auth_pb2.GetMeRequest(), metadata=metadata, timeout=5)
        spans = await traced.spans_until(
            lambda spans: len(_roots_named(spans, AUTH_GET_ME)) >= 2
        )

        first, second = _roots_named(spans, AUTH_GET_ME)[-2:]

        assert _trace_id(first) != _trace_id(second)


def _roots_named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name and s.parent is None]


ECHO_SERVICE = "omnihub.test.v1.Echo"


class Echo:
    async def echo(self, request: bytes, context: Any) -> bytes:
        if request == b"missing":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        return request

    async def count(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        for number in range(int(request or b"3")):
            yield str(number).encode()
            await asyncio.sleep(0.01)


@pytest.fixture(scope="module")
async def echo_channel(exporter: InMemorySpanExporter) -> AsyncIterator[Any]:
    """A channel with the interceptors tracing gives it, to a plain server."""
    echo = Echo()
    server = grpc.aio.server()
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "Echo": grpc.unary_unary_rpc_method_handler(echo.echo),
        "Count": grpc.unary_stream_rpc_method_handler(echo.count),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(ECHO_SERVICE, handlers),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    interceptors = client_interceptors()
    assert interceptors, "tracing is on: channels get their interceptors"
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", interceptors=interceptors
    ) as channel:
        yield channel
    await server.stop(0)


async def _client_span_of(
    exporter: InMemorySpanExporter, name: str, trace_id: str
) -> ReadableSpan:
    started = time.monotonic()
    while True:
        for span in exporter.get_finished_spans():
            if (
                span.kind is SpanKind.CLIENT
                and span.name == f"{ECHO_SERVICE}/{name}"
                and _trace_id(span) == trace_id
            ):
                return span
        assert time.monotonic() - started < WAIT_SECONDS
        await asyncio.sleep(0.02)


def _code_of(span: ReadableSpan) -> int:
    assert span.attributes is not None
    code = span.attributes["rpc.grpc.status_code"]
    assert isinstance(code, int)
    return code


class TestClientSpans:
    async def test_unary_call_span_carries_its_status(
        self, exporter: InMemorySpanExporter, echo_channel: Any
    ) -> None:
        echo = echo_channel.unary_unary(f"/{ECHO_SERVICE}/Echo")
        with (
            TRACER.start_as_current_span("caller") as caller,
            pytest.raises(grpc.aio.AioRpcError),
        ):
            await echo(b"missing", timeout=5)
        trace_id = format_trace_id(caller.get_span_context().trace_id)

        span = await _client_span_of(exporter, "Echo", trace_id)

        assert _code_of(span) == grpc.StatusCode.NOT_FOUND.value[0]
        assert not span.status.is_ok

    async def test_stream_read_to_its_end_ends_its_span_ok(
        self, exporter: InMemorySpanExporter, echo_channel: Any
    ) -> None:
        count = echo_channel.unary_stream(f"/{ECHO_SERVICE}/Count")
        with TRACER.start_as_current_span("caller") as caller:
            call = count(b"3", timeout=5)
            first = await call.read()
            rest = [message async for message in call]
        trace_id = format_trace_id(caller.get_span_context().trace_id)

        span = await _client_span_of(exporter, "Count", trace_id)

        assert [first, *rest] == [b"0", b"1", b"2"]
        assert _code_of(span) == grpc.StatusCode.OK.value[0]

    async def test_stream_the_caller_cancels_ends_its_span_cancelled(
        self, exporter: InMemorySpanExporter, echo_channel: Any
    ) -> None:
        count = echo_channel.unary_stream(f"/{ECHO_SERVICE}/Count")
        with TRACER.start_as_current_span("caller") as caller:
            call = count(b"1000", timeout=5)
            assert await call.read() == b"0"
            call.cancel()
        trace_id = format_trace_id(caller.get_span_context().trace_id)

        span = await _client_span_of(exporter, "Count", trace_id)

        assert _code_of(span) == grpc.StatusCode.CANCELLED.value[0]


class TestLogLines:
    def test_log_lines_carry_the_trace_id_of_the_current_span(
        self, exporter: InMemorySpanExporter, settings: Settings
    ) -> None:
        processors = structlog.get_config()["processors"]
        event: object = {"event": "probe.logged"}

        with TRACER.start_as_current_span("logged") as span:
            for processor in processors[:-1]:  # all but the renderer
                event = processor(None, "warning", event)

        assert isinstance(event, dict)
        assert event["trace_id"] == format_trace_id(span.get_span_context().trace_id)

    def test_log_lines_outside_a_trace_have_no_trace_id(
        self, settings: Settings
    ) -> None:
        processors = structlog.get_config()["processors"]
        event: object = {"event": "probe.logged"}

        for processor in processors[:-1]:
            event = processor(None, "warning", event)

        assert isinstance(event, dict)
        assert "trace_id" not in event


class TestExporterChoice:
    def test_tracing_is_off_without_otel_variables(self) -> None:
        assert exporters_wanted({}) == []

    def test_an_otlp_endpoint_turns_the_otlp_exporter_on(self) -> None:
        environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}

        assert exporters_wanted(environ) == ["otlp"]

    def test_exporters_are_named_by_otel_traces_exporter(self) -> None:
        assert exporters_wanted({"OTEL_TRACES_EXPORTER": "console,otlp"}) == [
            "console",
            "otlp",
        ]

    def test_none_turns_tracing_off_despite_an_endpoint(self) -> None:
        environ = {
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
        }

        assert exporters_wanted(environ) == []

    def test_the_sdk_can_be_disabled_outright(self) -> None:
        environ = {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}

        assert exporters_wanted(environ) == []

    def test_otlp_over_http_is_refused_rather_than_misdirected(self) -> None:
        environ = {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        }

        assert exporters_wanted(environ) == []


PROBE = """
import sys
from opentelemetry import trace
from libs.config import Settings
from libs.logs import configure_logging
from libs.tracing import TRACER, tracing_enabled
configure_logging(Settings(_env_file=None, environment="test"), "probe-service")
with TRACER.start_as_current_span("probe.span"):
    pass
provider = trace.get_tracer_provider()
if tracing_enabled():
    provider.force_flush()
print("enabled" if tracing_enabled() else "disabled", flush=True)
"""


def _run_probe(**environ: str) -> str:
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("OTEL_")
    }
    env |= environ | {"PYTHONPATH": f"{ROOT}:{ROOT / 'protos'}"}
    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


class TestConfigureTracing:
    def test_a_process_records_nothing_by_default(self) -> None:
        output = _run_probe()

        assert output.strip() == "disabled"

    def test_otel_traces_exporter_switches_export_on(self) -> None:
        output = _run_probe(OTEL_TRACES_EXPORTER="console")

        assert '"name": "probe.span"' in output
        assert '"service.name": "probe-service"' in output
        assert output.strip().endswith("enabled")

    def test_otel_service_name_overrides_the_process_name(self) -> None:
        output = _run_probe(
            OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="omnihub-auth-eu"
        )

        assert '"service.name": "omnihub-auth-eu"' in output
