"""Prometheus metrics: the ones every service shares, and the listener that
serves a process's metrics to the scraper.

A service or the generation worker serves them on METRICS_PORT (unset: not
served), from a thread, so that a scrape never waits for the event loop;
the gateway serves them at GET /metrics on its own port. Everything is in
the client library's default registry, so one scrape shows all of it,
process and Python runtime figures included.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from libs.config import Settings
from libs.logs import get_logger

log = get_logger(__name__)

# From half a millisecond (a cached read) to a minute (the longest call a
# service allows); streams that stay open longer land in +Inf.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

RPCS_HANDLED = Counter(
    "omnihub_grpc_server_handled",
    "RPCs a service finished, by method and gRPC status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
RPC_SECONDS = Histogram(
    "omnihub_grpc_server_handling_seconds",
    "How long a service took over each RPC (a stream: how long it was open).",
    ["grpc_service", "grpc_method"],
    buckets=LATENCY_BUCKETS,
)
RPCS_IN_FLIGHT = Gauge(
    "omnihub_grpc_server_in_flight",
    "RPCs a service is serving now (streams: open ones, e.g. chat replies).",
    ["grpc_service", "grpc_method"],
)


@dataclass
class RpcMetrics:
    """The series of one method, looked up once rather than on every call."""

    service: str
    method: str
    seconds: Histogram = field(init=False)
    in_flight: Gauge = field(init=False)
    _handled: dict[grpc.StatusCode, Counter] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.seconds = RPC_SECONDS.labels(self.service, self.method)
        self.in_flight = RPCS_IN_FLIGHT.labels(self.service, self.method)

    @classmethod
    def of(cls, full_method: str) -> RpcMetrics:
        """For "/omnihub.auth.v1.AuthService/GetMe"."""
        service, _, method = full_method.lstrip("/").rpartition("/")
        return cls(service, method)

    def handled(self, code: grpc.StatusCode) -> Counter:
        counter = self._handled.get(code)
        if counter is None:
            counter = RPCS_HANDLED.labels(self.service, self.method, code.name)
            self._handled[code] = counter
        return counter


class MetricsListener:
    """An HTTP listener serving this process's metrics at /metrics."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @classmethod
    def start(cls, port: int, host: str) -> MetricsListener:
        server, thread = start_http_server(port, addr=host)
        listener = cls(server, thread)
        log.info("metrics.serving", port=listener.port)
        return listener

    @classmethod
    def from_settings(cls, settings: Settings) -> MetricsListener | None:
        """The listener METRICS_PORT asks for, on GRPC_LISTEN_HOST's
        interface; None when METRICS_PORT is unset."""
        if settings.metrics_port is None:
            return None
        return cls.start(settings.metrics_port, listen_host(settings))

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=1.0)


def listen_host(settings: Settings) -> str:
    """gRPC's "[::]" written as a socket address ("::")."""
    return settings.grpc_listen_host.strip("[]")
