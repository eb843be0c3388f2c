"""Traces that follow one request from the gateway through every gRPC hop
and into the generation worker.

Spans are made with OpenTelemetry's API. Until `configure_tracing` installs
the SDK, which it does only when the standard OTLP environment variables ask
for an exporter, nothing is recorded: a span then costs well under a
microsecond and only carries a caller's trace context along, so log lines
still name the trace of a call that arrived with one.

The context travels as a W3C `traceparent` in gRPC metadata, and with a
generation job in its row (`jobs.trace_context`), so that the worker's steps
join the trace of the request that created the job.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, format_trace_id
from opentelemetry.trace.propagation.tracecontext import (
    TraceContextTextMapPropagator,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import SpanExporter

# Not libs.logs: it imports this module to put trace ids on log lines.
log = structlog.get_logger(__name__)

TRACER = trace.get_tracer("omnihub")
SERVICE_NAMESPACE = "omnihub"
_PROPAGATOR = TraceContextTextMapPropagator()
_EXPORTERS = ("otlp", "console")
_UNRECORDED = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
# Set once, by configure_tracing: asking the API for its provider on every
# call would cost a couple of microseconds (it looks in os.environ).
_recording = False


def configure_tracing(service: str) -> bool:
    """Export this process's spans where the OTEL_* environment says.

    Tracing is on when OTEL_TRACES_EXPORTER names an exporter (`otlp`,
    `console`, or both comma-separated) or, with that unset, when
    OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set.
    The SDK reads the rest itself (endpoint, headers, OTEL_TRACES_SAMPLER,
    OTEL_BSP_*, OTEL_RESOURCE_ATTRIBUTES). A provider set before, by an
    earlier call, a test or `opentelemetry-instrument`, is used as it is.
    Returns whether spans are recorded.
    """
    global _recording
    if type(trace.get_tracer_provider()) not in _UNRECORDED:
        _recording = True
        return True
    names = exporters_wanted(os.environ)
    if not names:
        return False
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=_resource(service))
    for name in names:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    trace.set_tracer_provider(provider)
    _recording = True
    log.info("tracing.configured", exporters=names)
    return True


def exporters_wanted(environ: Mapping[str, str]) -> list[str]:
    """The span exporters the environment asks for; empty means tracing off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    listed = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if listed:
        names = [name.strip() for name in listed.split(",") if name.strip()]
    elif environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        names = ["otlp"]
    else:
        return []
    unknown = [name for name in names if name not in (*_EXPORTERS, "none")]
    if unknown:
        log.warning("tracing.exporter_unsupported", exporters=unknown)
    if "otlp" in names and _protocol(environ) != "grpc":
        # Only the gRPC flavour of OTLP is installed; http/protobuf would
        # send to another port, so rather export nothing than fail quietly.
        log.warning("tracing.protocol_unsupported", protocol=_protocol(environ))
        names.remove("otlp")
    return [name for name in names if name in _EXPORTERS]


def _protocol(environ: Mapping[str, str]) -> str:
    return (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "grpc"
    ).strip()


def _resource(service: str) -> Resource:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    detected = Resource.create({"service.namespace": SERVICE_NAMESPACE})
    if os.environ.get("OTEL_SERVICE_NAME"):
        return detected
    return detected.merge(Resource({SERVICE_NAME: service}))


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter,
    )

    return OTLPSpanExporter()


def tracing_enabled() -> bool:
    """Whether spans are recorded (configure_tracing decided it)."""
    return _recording


def extract(carrier: Mapping[str, str]) -> Context:
    """The caller's trace context from `traceparent` (and `tracestate`)."""
    if "traceparent" not in carrier:
        return Context()
    return _PROPAGATOR.extract(carrier)


def context_of(traceparent: str | None) -> Context:
    """The trace context a stored `traceparent` names (empty when None)."""
    if not traceparent:
        return Context()
    return _PROPAGATOR.extract({"traceparent": traceparent})


def propagation_headers(span: Span) -> dict[str, str]:
    """`traceparent` (and `tracestate`) that make a callee's spans children
    of `span`; empty when `span` carries no valid context."""
    carrier: dict[str, str] = {}
    if span.get_span_context().is_valid:
        _PROPAGATOR.inject(carrier, trace.set_span_in_context(span))
    return carrier


def current_traceparent() -> str | None:
    """The W3C traceparent of the span being run, to store with work that
    continues later (a generation job); None outside any trace."""
    return propagation_headers(trace.get_current_span()).get("traceparent")


def current_trace_id() -> str | None:
    """The hex trace id of the span being run, for log lines."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return format_trace_id(span_context.trace_id)


def start_span(
    name: str,
    kind: SpanKind,
    parent: Context | None = None,
) -> Span:
    """A span under `parent` (by default the current span).

    With tracing off this is what the API's no-op tracer would return, the
    parent's context as a span that records nothing (or the invalid span),
    without its detour: it runs for every call and every request."""
    if not tracing_enabled():
        return trace.get_current_span(parent)
    return TRACER.start_span(
        name,
        context=parent,
        kind=kind,
        record_exception=False,
        set_status_on_exception=False,
    )


def make_current(span: Span) -> None:
    """Make `span` the parent of what this task does next (nothing to do
    for the invalid span of an untraced call).

    Without detaching: each RPC and each job step runs in a task of its own,
    whose context dies with it, as the log context and caller do."""
    if span.get_span_context().is_valid:
        otel_context.attach(trace.set_span_in_context(span))
