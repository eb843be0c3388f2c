"""Secrets never reach the logs.

The gateway, auth, billing, chat, generation and its worker run here as real
OS processes at DEBUG level with JSON logs, configured with this test's own
secrets (JWT secret, FAL_KEY, OPENROUTER_API_KEY, Razorpay key secret and
webhook secret, Google client secret) and pointed at local simulators that
know them. Flows that carry more secrets (passwords, access and refresh
tokens, Google ID tokens) run through them, the error paths included:
wrong passwords, forged tokens, provider failures, bad payment signatures.
Then every line each process wrote is searched for every secret.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from deploy.simulators.fal import create_app as create_fal
from deploy.simulators.openrouter import create_app as create_openrouter
from deploy.simulators.razorpay import create_app as create_razorpay
from libs.config import Settings
from libs.db import create_engine
from libs.grpc.client import service_descriptor
from libs.tokens import Audience, TokenSigner
from services.billing.razorpay import webhook_signature
from services.chat.main import ChatProcess
from tests.bench import processes
from tests.fakes.google import FakeGoogle
from tests.fixtures.generation import settings_environment
from tests.gateway.factories import bearer, create_operator
from tests.suite import ServedApp, free_port, serve_asgi

SPAWNED_SERVICES = ("auth", "billing", "chat", "generation")
IMAGE_MODEL = "fal-flux-schnell"
CHAT_MODEL = "openai/gpt-4o-mini"
DEADLINE_SECONDS = 20.0


def _secret(label: str) -> str:
    return f"{label}-{secrets.token_hex(16)}"


@dataclass
class Secrets:
    """Every secret the flows use, by name, to search the logs for."""

    values: dict[str, str] = field(default_factory=dict)

    def new(self, label: str) -> str:
        value = _secret(label)
        self.values[label] = value
        return value

    def add(self, label: str, value: str) -> str:
        self.values[label] = value
        # A JWT's signature is what makes it worth stealing: a log line
        # holding only that part leaks it too.
        if value.count(".") == 2:
            self.values[f"{label} signature"] = value.rsplit(".", 1)[1]
        return value


@dataclass
class LoggedSuite:
    url: str
    secrets: Secrets
    log_dir: Path
    children: list[processes.Child]
    fal: ServedApp
    llm: ServedApp
    razorpay_webhook_secret: str

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=20.0)

    def logs(self) -> dict[str, str]:
        return {
            path.name: path.read_text(errors="replace")
            for path in sorted(self.log_dir.glob("*.log"))
        }


async def _simulators(
    stack: AsyncExitStack, found: Secrets, gateway_port: int
) -> tuple[ServedApp, ServedApp, ServedApp]:
    fal = await serve_asgi(create_fal(key=found.new("fal-key")))
    stack.push_async_callback(fal.stop)
    llm = await serve_asgi(create_openrouter(api_key=found.new("openrouter-key")))
    stack.push_async_callback(llm.stop)
    razorpay = await serve_asgi(
        create_razorpay(
            "rzp_test_logs",
            found.new("razorpay-key-secret"),
            found.new("razorpay-webhook-secret"),
            f"http://127.0.0.1:{gateway_port}/api/payments/webhook",
        )
    )
    stack.push_async_callback(razorpay.stop)
    return fal, llm, razorpay


def _environment(
    settings: Settings,
    found: Secrets,
    gateway_port: int,
    simulators: tuple[ServedApp, ServedApp, ServedApp],
) -> dict[str, str]:
    fal, llm, razorpay = simulators
    assert settings.jwt_secret is not None
    found.add("jwt-secret", settings.jwt_secret.get_secret_value())
    gateway = f"http://127.0.0.1:{gateway_port}"
    env = settings_environment(settings) | {
        f"{name.upper()}_ADDRESS": f"127.0.0.1:{free_port()}"
        for name in SPAWNED_SERVICES
    }
    return env | {
        "LOG_LEVEL": "DEBUG",
        "LOG_FORMAT": "json",
        "PORT": str(gateway_port),
        "PYTHONUNBUFFERED": "1",
        "MEDIA_BASE_URL": f"{gateway}/media",
        "FAL_KEY": found.values["fal-key"],
        "FAL_QUEUE_URL": fal.url,
        "FAL_JWKS_URL": f"{fal.url}/.well-known/jwks.json",
        "FAL_WEBHOOK_URL": f"{gateway}/api/webhooks/fal",
        "OPENROUTER_API_KEY": found.values["openrouter-key"],
        "OPENROUTER_BASE_URL": f"{llm.url}/api/v1",
        "RAZORPAY_BASE_URL": razorpay.url,
        "RAZORPAY_KEY_ID": "rzp_test_logs",
        "RAZORPAY_KEY_SECRET": found.values["razorpay-key-secret"],
        "RAZORPAY_WEBHOOK_SECRET": found.values["razorpay-webhook-secret"],
        "GOOGLE_CLIENT_SECRET": found.new("google-client-secret"),
    }


async def _start_processes(
    stack: AsyncExitStack, env: dict[str, str], log_dir: Path
) -> list[processes.Child]:
    """All at once (the gateway is ready once its upstreams are)."""
    modules = {name: [f"services.{name}.main", "serve"] for name in SPAWNED_SERVICES}
    modules |= {"worker": ["services.generation.worker"], "gateway": ["gateway.main"]}
    children = []
    for name, module_args in modules.items():
        child = await processes.start(name, module_args, env, log_dir)
        stack.push_async_callback(child.stop)
        children.append(child)
    for child, name in zip(children, SPAWNED_SERVICES, strict=False):
        ready = processes.grpc_serving(
            env[f"{name.upper()}_ADDRESS"], service_descriptor(name).full_name
        )
        await processes.wait_until(child, ready)
    url = f"http://127.0.0.1:{env['PORT']}"
    await processes.wait_until(children[-1], processes.http_ok(f"{url}/readyz"))
    return children


@pytest.fixture(scope="module")
async def suite(
    settings: Settings,
    admin_gateway: ServedApp,
    chat_service: ChatProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[LoggedSuite]:
    # The session's services own the schemas (migrated) and serve catalog,
    # workspace and admin; the rest run here as processes of their own.
    found = Secrets()
    gateway_port = free_port()
    log_dir = tmp_path_factory.mktemp("secret-logs")
    async with AsyncExitStack() as stack:
        simulators = await _simulators(stack, found, gateway_port)
        env = _environment(settings, found, gateway_port, simulators)
        children = await _start_processes(stack, env, log_dir)
        yield LoggedSuite(
            f"http://127.0.0.1:{gateway_port}",
            found,
            log_dir,
            children,
            simulators[0],
            simulators[1],
            found.values["razorpay-webhook-secret"],
        )


async def _accounts(http: httpx.AsyncClient, found: Secrets) -> dict[str, Any]:
    email = f"logs-{uuid.uuid4().hex[:10]}@example.com"
    password = found.new("password")
    registered = await http.post(
        "/api/auth/register",
        json={"email": email, "password": password, "name": "Log Tester"},
    )
    assert registered.status_code == 201, registered.text
    found.add("register access token", registered.json()["accessToken"])
    found.add("register refresh token", registered.json()["refreshToken"])
    wrong = await http.post(
        "/api/auth/login", json={"email": email, "password": found.new("wrong-pw")}
    )
    assert wrong.status_code == 401, wrong.text
    login = await http.post(
        "/api/auth/login", json={"email": email, "password": password}
    )
    assert login.status_code == 200, login.text
    body: dict[str, Any] = login.json()
    found.add("access token", body["accessToken"])
    found.add("refresh token", body["refreshToken"])
    refreshed = await http.post(
        "/api/auth/refresh", json={"refreshToken": body["refreshToken"]}
    )
    assert refreshed.status_code == 200, refreshed.text
    found.add("refreshed access token", refreshed.json()["accessToken"])
    found.add("refreshed refresh token", refreshed.json()["refreshToken"])
    # Once its successor is used, the old refresh token is a reuse: the
    # session ends, and the event is logged.
    successor = await http.post(
        "/api/auth/refresh", json={"refreshToken": refreshed.json()["refreshToken"]}
    )
    assert successor.status_code == 200, successor.text
    reused = await http.post(
        "/api/auth/refresh", json={"refreshToken": body["refreshToken"]}
    )
    assert reused.status_code == 401, reused.text
    return await _login(http, found, email, password)


async def _login(
    http: httpx.AsyncClient, found: Secrets, email: str, password: str
) -> dict[str, Any]:
    login = await http.post(
        "/api/auth/login", json={"email": email, "password": password}
    )
    assert login.status_code == 200, login.text
    body: dict[str, Any] = login.json()
    found.add("second access token", body["accessToken"])
    found.add("second refresh token", body["refreshToken"])
    return body


async def _forged_tokens(http: httpx.AsyncClient, found: Secrets) -> None:
    signer = TokenSigner(_secret("another-jwt-secret"))
    forged = found.add(
        "forged token",
        signer.issue(Audience.USER, str(uuid.uuid4()), 900, session_id="s"),
    )
    for token in (forged, found.new("garbage-token")):
        response = await http.get("/api/auth/me", headers=bearer(token))
        assert response.status_code == 401, response.text


async def _google(http: httpx.AsyncClient, google: FakeGoogle, found: Secrets) -> None:
    good = found.add("google id token", google.id_token(email="logs@gmail.com"))
    signed_in = await http.post("/api/auth/google", json={"credential": good})
    assert signed_in.status_code == 200, signed_in.text
    bad = found.add(
        "bad google id token", google.id_token(signing_key=google.other_key())
    )
    refused = await http.post("/api/auth/google", json={"credential": bad})
    assert refused.status_code == 401, refused.text


async def _operator(
    http: httpx.AsyncClient, settings: Settings, found: Secrets
) -> None:
    operator = await create_operator(settings)
    found.add("operator password", operator.password)
    wrong = await http.post(
        "/api/admin/login",
        json={"username": operator.username, "password": found.new("wrong-admin-pw")},
    )
    assert wrong.status_code == 401, wrong.text
    signed_in = await http.post(
        "/api/admin/login",
        json={"username": operator.username, "password": operator.password},
    )
    assert signed_in.status_code == 200, signed_in.text
    found.add("operator token", signed_in.json()["token"])


async def _generations(
    http: httpx.AsyncClient, suite: LoggedSuite, auth: dict[str, str]
) -> None:
    failing = f"fails {uuid.uuid4().hex[:8]}"
    async with suite.fal.client() as fal:
        fault = await fal.post(
            "/simulator/faults",
            json={"mode": "submit_422", "prompt_contains": failing},
        )
        assert fault.status_code == 200, fault.text
    ids = []
    for prompt in ("a lighthouse", failing):
        response = await http.post(
            "/api/generate",
            json={"type": "image", "model": IMAGE_MODEL, "prompt": prompt},
            headers=auth,
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    # Both finish (a worker of the test session, if one runs, may take a
    # job too: its logs are not searched, so the statuses are not pinned).
    for generation_id in ids:
        await _finished(http, auth, generation_id)


async def _finished(
    http: httpx.AsyncClient, auth: dict[str, str], generation_id: str
) -> str:
    started = time.monotonic()
    while True:
        found = await http.get(f"/api/generations/{generation_id}", headers=auth)
        status: str = found.json()["status"]
        if status in {"completed", "failed", "cancelled"}:
            return status
        assert time.monotonic() - started < DEADLINE_SECONDS, found.text
        await asyncio.sleep(0.1)


async def _chat(
    http: httpx.AsyncClient, suite: LoggedSuite, auth: dict[str, str]
) -> None:
    marker = f"mark-{uuid.uuid4().hex[:12]}"
    async with suite.llm.client() as llm:
        fault = await llm.post(
            "/simulator/faults", json={"mode": "rate_limit", "match": marker}
        )
        assert fault.status_code == 200, fault.text
    created = await http.post(
        "/api/chat/conversations", json={"modelId": CHAT_MODEL}, headers=auth
    )
    assert created.status_code == 201, created.text
    path = f"/api/chat/conversations/{created.json()['id']}/messages"
    headers = {**auth, "Accept": "application/json"}
    answered = await http.post(path, json={"content": "hello"}, headers=headers)
    assert answered.status_code == 201, answered.text
    failed = await http.post(path, json={"content": marker}, headers=headers)
    assert failed.status_code >= 400, failed.text


async def _payments(
    http: httpx.AsyncClient, suite: LoggedSuite, auth: dict[str, str]
) -> None:
    order = await http.post(
        "/api/payments/create-order",
        json={"type": "credits", "credits": 100},
        headers=auth,
    )
    assert order.status_code == 201, order.text
    forged = await http.post(
        "/api/payments/verify",
        json={
            "razorpay_order_id": order.json()["orderId"],
            "razorpay_payment_id": "pay_AnythingAtAll1",
            "razorpay_signature": "ab" * 32,
        },
        headers=auth,
    )
    assert forged.status_code == 400, forged.text
    body = b'{"event":"payment.captured","payload":{}}'
    for secret in (suite.razorpay_webhook_secret, "not-the-secret"):
        await http.post(
            "/api/payments/webhook",
            content=body,
            headers={
                "X-Razorpay-Signature": webhook_signature(body, secret),
                "X-Razorpay-Event-Id": uuid.uuid4().hex,
            },
        )


@pytest.fixture(scope="module")
async def logs_after_flows(
    suite: LoggedSuite, settings: Settings, google: FakeGoogle
) -> dict[str, str]:
    found = suite.secrets
    async with suite.client() as http:
        tokens = await _accounts(http, found)
        await _forged_tokens(http, found)
        await _google(http, google, found)
        await _operator(http, settings, found)
        auth = bearer(tokens["accessToken"])
        await _generations(http, suite, auth)
        await _chat(http, suite, auth)
        await _payments(http, suite, auth)
        logout = await http.post(
            "/api/auth/logout",
            json={"refreshToken": tokens["refreshToken"]},
            headers=auth,
        )
        assert logout.status_code == 200, logout.text
    for child in suite.children:
        await child.stop()
    return suite.logs()


def test_every_process_logged_the_flows(logs_after_flows: dict[str, str]) -> None:
    # The control: the search below would find nothing in empty logs. The
    # gateway logs little (no access log), so one event is enough to show
    # that its output is captured.
    for name in ("auth", "billing", "chat", "generation", "worker", "gateway"):
        lines = logs_after_flows[f"{name}.log"].splitlines()
        events = [json.loads(line) for line in lines if line.startswith("{")]
        assert events, (name, lines[:5])
        assert all("event" in event for event in events)


def test_no_secret_appears_in_any_log_line(
    suite: LoggedSuite, logs_after_flows: dict[str, str]
) -> None:
    leaks = [
        f"{name}: {label}"
        for name, text in logs_after_flows.items()
        for label, secret in suite.secrets.values.items()
        if secret in text
    ]

    assert len(suite.secrets.values) >= 20, suite.secrets.values.keys()
    assert not leaks, leaks


async def test_a_failed_statement_does_not_quote_its_values(
    settings: Settings,
) -> None:
    # Errors are logged with their traceback, whose text is the driver's
    # error: it must not carry the statement's bound values.
    secret = _secret("bound-value")
    engine = create_engine(settings, "public")
    try:
        async with engine.connect() as db:
            with pytest.raises(DBAPIError) as caught:
                await db.execute(
                    text("SELECT length(CAST(:value AS text)) / 0"),
                    {"value": secret},
                )
    finally:
        await engine.dispose()

    assert "division by zero" in str(caught.value)
    assert secret not in str(caught.value)
