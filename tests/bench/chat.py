"""The chat benchmark:

    python -m tests.bench.chat [--tokens 200] [--streams 1,32]
        [--replies-per-stream 30] [--warmup-per-stream 3]

It starts the suite as OS processes (auth, billing, catalog, workspace,
chat, the gateway) and the local LLM (deploy/simulators/openrouter.py)
streaming `--tokens` tokens per reply with no delay between them, on a fresh
database, and for each number of concurrent streams measures replies sent
two ways:

1. Through the gateway: POST /api/chat/conversations/{id}/messages read as
   the web client reads it (Server-Sent Events, over HTTP/1.1 with httpx).
2. Directly on the chat service's SendMessage gRPC stream, with the
   metadata the gateway would send.

Each stream sends its replies one after another, each in a conversation of
its own made beforehand (titled, so that no title request runs), from a user
of its own (so streams do not contend for one credit account). Per reply:
the time to the first `content` event (TTFT) and to `done`, from the moment
the request is sent. The gateway's added latency per event is the
difference of the two paths' median totals divided by the events of a
reply. The client runs in this process, on the same machine.

Results are printed and written to bench-results/chat-<time>.md and .json;
each process's output is in bench-results/logs/chat-<time>/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import secrets
import shlex
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import grpc
import httpx
from omnihub.chat.v1 import chat_pb2, chat_pb2_grpc

from libs.grpc.identity import AUTHORIZATION_KEY, INTERNAL_TOKEN_KEY
from libs.tokens import Audience, InternalTokenSource, TokenSigner
from tests.bench import processes
from tests.bench.cpu import CpuSplit, Watched
from tests.bench.deployment import STARTED_SERVICES, Deployment, start_suite
from tests.bench.measure import SuiteMeter
from tests.bench.processes import ChildFailed
from tests.bench.report import markdown_table, text_table
from tests.database import ROOT
from tests.suite import free_port

T = TypeVar("T")

PASSWORD = "bench-password-1"
MODEL = "openai/gpt-4o-mini"
REPLY_TIMEOUT_SECONDS = 60.0
CREATE_ATTEMPTS = 5
HEADER = [
    "path",
    "streams",
    "replies",
    "TTFT p50 ms",
    "TTFT p99 ms",
    "total p50 ms",
    "total p99 ms",
    "replies/s",
    "events/reply",
    "errors",
]


class BenchFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class Options:
    tokens: int
    token_delay: float
    streams: tuple[int, ...]
    replies_per_stream: int
    warmup_per_stream: int
    results_dir: Path

    @property
    def content(self) -> str:
        return f"Benchmark reply [tokens={self.tokens}]"


@dataclass(frozen=True)
class Timing:
    first_token: float
    total: float
    events: int


@dataclass
class Series:
    path: str
    streams: int
    timings: list[Timing] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    cpu: CpuSplit | None = None

    def percentile(self, values: list[float], share: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]

    def ttft(self, share: float) -> float:
        return self.percentile([t.first_token for t in self.timings], share)

    def total(self, share: float) -> float:
        return self.percentile([t.total for t in self.timings], share)

    @property
    def events_per_reply(self) -> float:
        return sum(t.events for t in self.timings) / len(self.timings)

    def cpu_per_event_ms(self, process: str) -> float | None:
        """CPU milliseconds `process` spent per event of the timed replies."""
        if self.cpu is None or process not in self.cpu.cores or not self.timings:
            return None
        events = sum(t.events for t in self.timings)
        return self.cpu.cores[process] * self.seconds * 1000 / events

    def row(self) -> list[str]:
        if not self.timings:
            return [
                self.path,
                str(self.streams),
                "0",
                *["-"] * 6,
                str(len(self.errors)),
            ]
        rate = len(self.timings) / self.seconds if self.seconds else 0.0
        return [
            self.path,
            str(self.streams),
            str(len(self.timings)),
            f"{self.ttft(0.5) * 1000:.1f}",
            f"{self.ttft(0.99) * 1000:.1f}",
            f"{self.total(0.5) * 1000:.1f}",
            f"{self.total(0.99) * 1000:.1f}",
            f"{rate:.1f}",
            f"{self.events_per_reply:.1f}",
            str(len(self.errors)),
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "streams": self.streams,
            "replies": len(self.timings),
            "seconds": round(self.seconds, 3),
            "ttft_ms": _quantiles(self.ttft) if self.timings else None,
            "total_ms": _quantiles(self.total) if self.timings else None,
            "events_per_reply": self.events_per_reply if self.timings else None,
            "cpu_cores": self.cpu.cores if self.cpu else None,
            "machine_cores_busy": self.cpu.machine if self.cpu else None,
            "errors": self.errors[:20],
        }


def _quantiles(of: Callable[[float], float]) -> dict[str, float]:
    return {"p50": round(of(0.5) * 1000, 2), "p99": round(of(0.99) * 1000, 2)}


@dataclass(frozen=True)
class Comparison:
    streams: int
    gateway: Series
    direct: Series

    @property
    def measured(self) -> bool:
        return bool(self.gateway.timings and self.direct.timings)

    @property
    def first_token_ms(self) -> float:
        return (self.gateway.ttft(0.5) - self.direct.ttft(0.5)) * 1000

    @property
    def total_ms(self) -> float:
        return (self.gateway.total(0.5) - self.direct.total(0.5)) * 1000

    @property
    def per_event_ms(self) -> float:
        """Added latency per event after the first piece: what the gateway
        adds to the whole reply beyond what it adds before the first piece,
        over the events that follow it (the rest of the pieces and done)."""
        following = max(1.0, self.gateway.events_per_reply - 2)
        return (self.total_ms - self.first_token_ms) / following

    def lines(self) -> list[str]:
        plural = "s" if self.streams != 1 else ""
        if not self.measured:
            return [f"- {self.streams} stream{plural}: not measured (errors)"]
        lines = [
            f"- {self.streams} stream{plural}: +{self.first_token_ms:.1f} ms to "
            f"the first piece, +{self.total_ms:.1f} ms to done (medians), "
            f"{self.per_event_ms:.3f} ms per event after the first piece "
            f"({self.gateway.events_per_reply:.1f} events a reply)"
        ]
        cpu = self.gateway.cpu_per_event_ms("gateway")
        if cpu is not None:
            per_reply = cpu * self.gateway.events_per_reply
            lines.append(f"  gateway CPU: {per_reply:.1f} ms per reply relayed")
        return lines

    def to_json(self) -> dict[str, Any]:
        if not self.measured:
            return {"streams": self.streams}
        return {
            "streams": self.streams,
            "added_ms_to_first_piece": round(self.first_token_ms, 3),
            "added_ms_to_done": round(self.total_ms, 3),
            "added_ms_per_following_event": round(self.per_event_ms, 4),
        }


@dataclass(frozen=True)
class Summary:
    command: str
    settings: dict[str, str]
    comparisons: list[Comparison]

    def _rows(self) -> list[list[str]]:
        rows = []
        for comparison in self.comparisons:
            rows += [comparison.gateway.row(), comparison.direct.row()]
        return rows

    def _notes(self) -> list[str]:
        notes = ["Gateway added latency:"]
        for comparison in self.comparisons:
            notes += comparison.lines()
        notes += ["", "Cores busy on average during each series:"]
        for comparison in self.comparisons:
            for series in (comparison.gateway, comparison.direct):
                split = series.cpu.describe() if series.cpu else "not measured"
                notes.append(f"- {series.path}, {series.streams} streams: {split}")
        return notes

    def as_text(self) -> str:
        settings = [f"{key}: {value}" for key, value in self.settings.items()]
        return "\n".join(
            [*settings, "", text_table(self._rows(), HEADER), "", *self._notes()]
        )

    def as_markdown(self) -> str:
        settings = [f"- {key}: {value}" for key, value in self.settings.items()]
        return "\n".join(
            [
                "# Chat benchmark",
                "",
                f"`{self.command}`",
                "",
                *settings,
                "",
                markdown_table(self._rows(), HEADER),
                "",
                *self._notes(),
                "",
            ]
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "settings": self.settings,
            "series": [
                series.to_json()
                for comparison in self.comparisons
                for series in (comparison.gateway, comparison.direct)
            ],
            "gateway_added": [c.to_json() for c in self.comparisons],
        }


@dataclass(frozen=True)
class User:
    id: str
    access_token: str


Reply = Callable[[User, str], Awaitable[Timing]]


class ChatBench:
    def __init__(self, options: Options, stack: AsyncExitStack, log_dir: Path) -> None:
        self.options = options
        self.stack = stack
        self.log_dir = log_dir
        self.deployment: Deployment | None = None
        self.llm: processes.Child | None = None

    async def run(self) -> list[Comparison]:
        deployment = self.deployment = await self._deployment()
        most = max(self.options.streams)
        limits = httpx.Limits(max_connections=most * 2, max_keepalive_connections=most)
        async with httpx.AsyncClient(
            base_url=deployment.gateway_url,
            timeout=REPLY_TIMEOUT_SECONDS,
            limits=limits,
        ) as http:
            # One at a time: each sign-up costs auth a password hash.
            users = [await _register(http) for _ in range(most)]
            direct = DirectChat(deployment)
            try:
                return [
                    await self._compare(http, direct, users[:streams], streams)
                    for streams in self.options.streams
                ]
            finally:
                await direct.close()

    async def _deployment(self) -> Deployment:
        say("Starting PostgreSQL, the local LLM, the services and the gateway ...")
        key = f"sk-or-bench-{secrets.token_hex(8)}"
        port = free_port()
        env = processes.child_environment({"OPENROUTER_API_KEY": key})
        llm = await processes.start(
            "llm",
            [
                "deploy.simulators.openrouter",
                "--port",
                str(port),
                "--token-delay",
                str(self.options.token_delay),
            ],
            env,
            self.log_dir,
        )
        self.stack.push_async_callback(llm.stop)
        self.llm = llm
        base = f"http://127.0.0.1:{port}"
        await processes.wait_until(llm, processes.http_ok(f"{base}/simulator/faults"))
        return await start_suite(
            self.stack,
            self.log_dir,
            services=(*STARTED_SERVICES, "chat"),
            environment={
                "OPENROUTER_API_KEY": key,
                "OPENROUTER_BASE_URL": f"{base}/api/v1",
            },
        )

    async def _compare(
        self,
        http: httpx.AsyncClient,
        direct: DirectChat,
        users: list[User],
        streams: int,
    ) -> Comparison:
        gateway_reply = GatewayChat(http, self.options.content).reply
        gateway = await self._series("gateway", http, users, gateway_reply)
        direct_reply = direct.replier(self.options.content)
        grpc_series = await self._series("gRPC direct", http, users, direct_reply)
        return Comparison(streams, gateway, grpc_series)

    async def _series(
        self, path: str, http: httpx.AsyncClient, users: list[User], reply: Reply
    ) -> Series:
        options = self.options
        series = Series(path, len(users))
        say(f"Measuring {path} with {len(users)} concurrent streams ...")
        count = options.warmup_per_stream + options.replies_per_stream
        conversations = await _gathered(
            [_conversations(http, user, count) for user in users]
        )

        async def stream(user: User, owned: list[str], timed: bool) -> None:
            for conversation_id in owned:
                try:
                    timing = await reply(user, conversation_id)
                except Exception as exc:  # counted, and the run goes on
                    series.errors.append(f"{type(exc).__name__}: {exc}"[:300])
                    continue
                if timed:
                    series.timings.append(timing)

        warm = options.warmup_per_stream
        await asyncio.gather(
            *(
                stream(u, c[:warm], False)
                for u, c in zip(users, conversations, strict=True)
            )
        )
        series.errors.clear()
        assert self.deployment is not None
        assert self.llm is not None
        meter = SuiteMeter(
            self.deployment,
            None,
            extra={
                "llm": [Watched(self.llm.pid)],
                "harness": [Watched(os.getpid())],
            },
        )
        await meter.start()
        started = time.perf_counter()
        await asyncio.gather(
            *(
                stream(u, c[warm:], True)
                for u, c in zip(users, conversations, strict=True)
            )
        )
        series.seconds = time.perf_counter() - started
        series.cpu, _ = await meter.stop()
        return series


class GatewayChat:
    """Replies read from the gateway as the web client reads them."""

    def __init__(self, http: httpx.AsyncClient, content: str) -> None:
        self._http = http
        self._body = {"content": content}

    async def reply(self, user: User, conversation_id: str) -> Timing:
        headers = {"Authorization": f"Bearer {user.access_token}"}
        url = f"/api/chat/conversations/{conversation_id}/messages"
        first = None
        events = 0
        started = time.perf_counter()
        async with self._http.stream(
            "POST", url, json=self._body, headers=headers
        ) as response:
            if response.status_code != 200:
                raise BenchFailed(f"{response.status_code}: {await response.aread()!r}")
            async for chunk in response.aiter_raw():
                if first is None and b'"type":"content"' in chunk:
                    first = time.perf_counter()
                events += chunk.count(b"\n\n")
                if b'"type":"error"' in chunk:
                    raise BenchFailed(chunk.decode(errors="replace")[:200])
                if b'"type":"done"' in chunk:
                    break
        ended = time.perf_counter()
        if first is None:
            raise BenchFailed("the reply had no content")
        return Timing(first - started, ended - started, events)


class DirectChat:
    """Replies read from the chat service's gRPC stream, with the metadata
    the gateway sends (the user's token and an internal one)."""

    def __init__(self, deployment: Deployment) -> None:
        assert deployment.jwt_secret is not None
        self._signer = TokenSigner(deployment.jwt_secret)
        self._internal = InternalTokenSource(self._signer, "bench", 300)
        address = deployment.environment["CHAT_ADDRESS"]
        self._channel = grpc.aio.insecure_channel(address)
        self._stub = chat_pb2_grpc.ChatServiceStub(self._channel)

    def replier(self, content: str) -> Reply:
        async def reply(user: User, conversation_id: str) -> Timing:
            metadata = (
                (INTERNAL_TOKEN_KEY, self._internal.token()),
                (AUTHORIZATION_KEY, f"Bearer {self._token(user)}"),
            )
            first = None
            events = 0
            started = time.perf_counter()
            call = self._stub.SendMessage(
                chat_pb2.SendMessageRequest(
                    conversation_id=conversation_id, content=content
                ),
                metadata=metadata,
                timeout=REPLY_TIMEOUT_SECONDS,
            )
            async for event in call:
                events += 1
                kind = event.WhichOneof("event")
                if kind == "content" and first is None:
                    first = time.perf_counter()
                elif kind == "error":
                    raise BenchFailed(event.error.message)
            ended = time.perf_counter()
            if first is None:
                raise BenchFailed("the reply had no content")
            return Timing(first - started, ended - started, events)

        return reply

    def _token(self, user: User) -> str:
        return self._signer.issue(
            Audience.USER, user.id, 900, session_id=str(uuid.uuid4())
        )

    async def close(self) -> None:
        await self._channel.close()


async def _gathered(calls: list[Awaitable[T]]) -> list[T]:
    return list(await asyncio.gather(*calls))


async def _register(http: httpx.AsyncClient) -> User:
    email = f"bench-chat-{uuid.uuid4().hex[:12]}@example.com"
    response = await http.post(
        "/api/auth/register",
        json={"email": email, "password": PASSWORD, "name": "Bench"},
    )
    if response.status_code != 201:
        raise BenchFailed(f"register answered {response.status_code}: {response.text}")
    body = response.json()
    return User(body["user"]["id"], body["accessToken"])


async def _conversations(http: httpx.AsyncClient, user: User, count: int) -> list[str]:
    return [await _conversation(http, user) for _ in range(count)]


async def _conversation(http: httpx.AsyncClient, user: User) -> str:
    """A titled conversation (so that its first reply asks for no title). A
    503 is tried again: just after start-up a service's first connections
    to the others may still be opening."""
    for attempt in range(CREATE_ATTEMPTS):
        response = await http.post(
            "/api/chat/conversations",
            json={"modelId": MODEL, "title": "Benchmark"},
            headers={"Authorization": f"Bearer {user.access_token}"},
        )
        if response.status_code == 201:
            return str(response.json()["id"])
        if response.status_code != 503 or attempt == CREATE_ATTEMPTS - 1:
            break
        await asyncio.sleep(0.5)
    raise BenchFailed(f"create answered {response.status_code}: {response.text}")


# --- Command line -------------------------------------------------------------


def parse_arguments(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.chat",
        description="Streamed chat replies from the local LLM, through the "
        "gateway and straight from the chat service (see tests/bench/README.md).",
    )
    parser.add_argument("--tokens", type=int, default=200, help="per reply (200)")
    parser.add_argument(
        "--token-delay",
        type=float,
        default=0.0,
        help="seconds the local LLM waits before each token (0: none)",
    )
    parser.add_argument(
        "--streams", default="1,32", help="concurrent streams per series (1,32)"
    )
    parser.add_argument(
        "--replies-per-stream", type=int, default=30, help="timed, per stream (30)"
    )
    parser.add_argument(
        "--warmup-per-stream", type=int, default=3, help="untimed first (3)"
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=ROOT / "bench-results",
        help="where to write the Markdown and JSON (default bench-results/)",
    )
    args = parser.parse_args(argv)
    try:
        streams = tuple(int(part) for part in args.streams.split(",") if part)
    except ValueError:
        parser.error("--streams: numbers separated by commas")
    if not streams or min(streams) < 1:
        parser.error("--streams: at least one stream")
    if args.tokens < 1 or args.replies_per_stream < 1 or args.warmup_per_stream < 0:
        parser.error("--tokens and --replies-per-stream at least 1")
    if args.token_delay < 0:
        parser.error("--token-delay cannot be negative")
    return Options(
        tokens=args.tokens,
        token_delay=args.token_delay,
        streams=streams,
        replies_per_stream=args.replies_per_stream,
        warmup_per_stream=args.warmup_per_stream,
        results_dir=args.results,
    )


def command_line(argv: list[str]) -> str:
    words = ["python", "-m", "tests.bench.chat", *argv]
    if os.environ.get("TEST_DATABASE_URL"):
        words.insert(0, "TEST_DATABASE_URL=...")
    return shlex.join(words)


def settings_of(options: Options, deployment: Deployment) -> dict[str, str]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores",
        "database": deployment.database,
        "reply": f"{options.tokens} tokens from the local LLM, "
        + (
            f"{options.token_delay * 1000:g} ms before each"
            if options.token_delay
            else "no delay between them"
        ),
        "per stream": f"{options.warmup_per_stream} untimed, then "
        f"{options.replies_per_stream} timed replies, one after another",
    }


def write(summary: Summary, directory: Path, stem: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    markdown, data = directory / f"{stem}.md", directory / f"{stem}.json"
    markdown.write_text(summary.as_markdown())
    data.write_text(json.dumps(summary.to_json(), indent=2) + "\n")
    return markdown, data


async def benchmark(options: Options, stamp: str, command: str) -> Summary:
    log_dir = options.results_dir / "logs" / f"chat-{stamp}"
    async with AsyncExitStack() as stack:
        bench = ChatBench(options, stack, log_dir)
        comparisons = await bench.run()
        assert bench.deployment is not None
        settings = settings_of(options, bench.deployment)
    return Summary(command, settings, comparisons)


async def _main(options: Options, stamp: str, command: str) -> Summary:
    # A SIGTERM stops the children and drops the database, as Ctrl-C does.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await benchmark(options, stamp, command)


def say(message: str) -> None:
    print(message, flush=True)


def main(argv: list[str]) -> int:
    options = parse_arguments(argv)
    command = command_line(argv)
    say(command)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    try:
        summary = asyncio.run(_main(options, stamp, command))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\nInterrupted; every child process was stopped.", file=sys.stderr)
        return 130
    except (BenchFailed, ChildFailed) as error:
        print(f"\nbench failed: {error}", file=sys.stderr)
        return 1
    print()
    print(summary.as_text())
    markdown, data = write(summary, options.results_dir, f"chat-{stamp}")
    print(f"\nWritten: {os.path.relpath(markdown)}, {data.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
