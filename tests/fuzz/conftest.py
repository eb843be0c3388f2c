"""A whole OmniHub suite of its own for the fuzz: every service on a fresh
database, with the local fal, OpenRouter and Razorpay, so that the fuzz's
destructive calls (maintenance mode, bans, DeleteUserData, settings) never
reach another test's state.

`Fleet` also signs in the callers the fuzz uses and collects ids of objects
that exist, for the request strategies to lean towards.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from omnihub.admin.v1 import admin_pb2, admin_pb2_grpc
from omnihub.auth.v1 import auth_pb2, auth_pb2_grpc
from omnihub.billing.v1 import billing_pb2, billing_pb2_grpc
from omnihub.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from omnihub.chat.v1 import chat_pb2, chat_pb2_grpc
from omnihub.workspace.v1 import workspace_pb2, workspace_pb2_grpc

from deploy.simulators import fal, openrouter, razorpay
from libs.config import Settings
from libs.grpc.identity import AUTHORIZATION_KEY, INTERNAL_TOKEN_KEY
from libs.logs import configure_logging
from libs.process import RunningService, ServiceProcess
from libs.tokens import Audience, TokenSigner
from services.admin.main import AdminProcess
from services.auth.main import AuthProcess
from services.billing.main import BillingProcess
from services.catalog.main import CatalogProcess
from services.chat.main import ChatProcess
from services.generation.main import GenerationProcess
from services.workspace.main import WorkspaceProcess
from tests import database
from tests.fakes.google import FakeGoogle
from tests.fuzz.messages import Known
from tests.gateway.factories import PASSWORD, create_operator
from tests.suite import (
    SERVICES,
    ServedApp,
    free_port,
    run_service,
    serve_asgi,
    suite_settings,
)

Metadata = tuple[tuple[str, str], ...]
SEED_TIMEOUT = 15.0
CREDITS_MICROS = 1_000 * 1_000_000


@dataclass
class Fleet:
    settings: Settings
    channels: dict[str, grpc.aio.Channel]
    known: Known = field(default_factory=Known)
    # What the requests of the RPC under test draw from (see Known.snapshot).
    drawn_from: Known = field(default_factory=Known)
    callers: dict[str, Metadata] = field(default_factory=dict)

    def channel(self, process: str) -> grpc.aio.Channel:
        return self.channels[process]

    async def healthy(self, process: str) -> bool:
        stub = health_pb2_grpc.HealthStub(self.channel(process))
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.aio.AioRpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING


def _simulator_settings(google: FakeGoogle, media_dir: Path) -> dict[str, object]:
    return {
        "google_client_id": google.client_id,
        "google_certs_url": google.certs_url,
        "media_dir": str(media_dir),
        "razorpay_base_url": f"http://127.0.0.1:{free_port()}",
        "razorpay_key_id": "rzp_test_fuzz",
        "razorpay_key_secret": "fuzz-razorpay-secret",
        "razorpay_webhook_secret": "fuzz-webhook-secret",
    }


async def _serve_simulators(
    stack: contextlib.AsyncExitStack, settings: Settings
) -> None:
    assert settings.fal_key is not None
    assert settings.openrouter_api_key is not None
    assert settings.razorpay_key_secret is not None
    assert settings.razorpay_webhook_secret is not None
    apps = [
        (
            fal.create_app(key=settings.fal_key.get_secret_value()),
            settings.fal_queue_url,
        ),
        (
            openrouter.create_app(
                api_key=settings.openrouter_api_key.get_secret_value()
            ),
            settings.openrouter_base_url,
        ),
        (
            razorpay.create_app(
                settings.razorpay_key_id or "",
                settings.razorpay_key_secret.get_secret_value(),
                settings.razorpay_webhook_secret.get_secret_value(),
                None,
            ),
            settings.razorpay_base_url,
        ),
    ]
    for app, url in apps:
        served: ServedApp = await serve_asgi(app, urlsplit(url).port)
        stack.push_async_callback(served.stop)


async def _run_services(stack: contextlib.AsyncExitStack, settings: Settings) -> None:
    processes: Iterable[ServiceProcess] = (
        AuthProcess(),
        BillingProcess(),
        CatalogProcess(),
        WorkspaceProcess(),
        GenerationProcess(),
        ChatProcess(),
        AdminProcess(),
    )
    for process in processes:
        running: RunningService = await run_service(process, settings)
        stack.push_async_callback(running.stop, 0)


@pytest.fixture(scope="module")
async def suite(
    database_server: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Fleet]:
    url = await database.create_database(database_server)
    async with contextlib.AsyncExitStack() as stack:
        if not os.environ.get("KEEP_TEST_DATABASE"):
            stack.push_async_callback(database.drop_database, database_server, url)
        google = FakeGoogle(client_id="omnihub-fuzz.apps.googleusercontent.com")
        await google.start()
        stack.push_async_callback(google.stop)
        settings = suite_settings(
            url, **_simulator_settings(google, tmp_path_factory.mktemp("fuzz-media"))
        )
        configure_logging(settings, "fuzz")
        await _serve_simulators(stack, settings)
        await _run_services(stack, settings)
        channels = {
            name: grpc.aio.insecure_channel(settings.address_of(name))
            for name in SERVICES
        }
        for channel in channels.values():
            stack.push_async_callback(channel.close)
        fleet = Fleet(settings, channels)
        await _sign_in_callers(fleet)
        await _seed(fleet)
        yield fleet


def _internal(settings: Settings, service: str) -> tuple[str, str]:
    signer = TokenSigner(settings.signing_secret())
    return (INTERNAL_TOKEN_KEY, signer.issue(Audience.INTERNAL, service, 3600))


async def _register(fleet: Fleet, label: str) -> tuple[str, str]:
    """A new user's (id, access token), signed up over auth's gRPC."""
    stub = auth_pb2_grpc.AuthServiceStub(fleet.channel("auth"))
    email = f"{label}-{uuid.uuid4().hex[:10]}@example.com"
    reply = await stub.Register(
        auth_pb2.RegisterRequest(email=email, password=PASSWORD, name=label),
        timeout=SEED_TIMEOUT,
        metadata=(_internal(fleet.settings, "gateway"),),
    )
    fleet.known.add_word(email)
    fleet.known.add_id(reply.user.id)
    return reply.user.id, reply.tokens.access_token


async def _sign_in_operator(fleet: Fleet) -> str:
    operator = await create_operator(fleet.settings, "superadmin")
    stub = auth_pb2_grpc.AuthServiceStub(fleet.channel("auth"))
    reply = await stub.AdminLogin(
        auth_pb2.AdminLoginRequest(
            username=operator.username, password=operator.password
        ),
        timeout=SEED_TIMEOUT,
        metadata=(_internal(fleet.settings, "gateway"),),
    )
    fleet.known.add_id(reply.admin.id)
    fleet.known.add_word(operator.username)
    return reply.access_token


async def _sign_in_callers(fleet: Fleet) -> None:
    """The identities every RPC is called with: nobody, a user and another
    user (each through the gateway, as it forwards them), another OmniHub
    process, and an operator."""
    fleet.callers = {
        "anonymous": (),
        "user": await _user(fleet, "fuzz-user"),
        "other_user": await _user(fleet, "fuzz-other"),
        "service": (_internal(fleet.settings, "admin"),),
        "operator": await _operator(fleet),
    }


async def _user(fleet: Fleet, label: str) -> Metadata:
    """A new user with credits to spend, so that paid calls can go through."""
    user_id, token = await _register(fleet, label)
    billing = billing_pb2_grpc.BillingServiceStub(fleet.channel("billing"))
    await billing.Grant(
        billing_pb2.GrantRequest(
            account=billing_pb2.AccountRef(
                owner_type=billing_pb2.OWNER_TYPE_USER, owner_id=user_id
            ),
            amount_micros=CREDITS_MICROS,
            idempotency_key=f"fuzz-{user_id}",
            reason="fuzz",
        ),
        timeout=SEED_TIMEOUT,
        metadata=(_internal(fleet.settings, "admin"),),
    )
    return _through_gateway(fleet, token)


async def _operator(fleet: Fleet) -> Metadata:
    return _through_gateway(fleet, await _sign_in_operator(fleet))


def _through_gateway(fleet: Fleet, token: str) -> Metadata:
    """A person's token as the gateway forwards it, with its own beside it."""
    gateway = _internal(fleet.settings, "gateway")
    return ((AUTHORIZATION_KEY, f"Bearer {token}"), gateway)


async def _accepted(call: Any, message: Message, metadata: Metadata) -> bool:
    try:
        await call(message, metadata=metadata, timeout=SEED_TIMEOUT)
    except grpc.aio.AioRpcError:
        return False
    return True


@pytest.fixture
async def fleet(suite: Fleet) -> Fleet:
    """The suite, with a new user or operator in place of one the fuzz
    signed out, banned or deleted, so that every RPC meets live callers."""
    auth = auth_pb2_grpc.AuthServiceStub(suite.channel("auth"))
    for name in ("user", "other_user"):
        probe = auth_pb2.GetMeRequest()
        if not await _accepted(auth.GetMe, probe, suite.callers[name]):
            suite.callers[name] = await _user(suite, f"fuzz-{name}")
            if name == "user":
                # Objects the new user owns, for its calls to find.
                await _seed(suite)
    admin = admin_pb2_grpc.AdminServiceStub(suite.channel("admin"))
    flags = admin_pb2.ListFeatureFlagsRequest()
    if not await _accepted(admin.ListFeatureFlags, flags, suite.callers["operator"]):
        suite.callers["operator"] = await _operator(suite)
    suite.drawn_from = suite.known.snapshot()
    return suite


async def _seed(fleet: Fleet) -> None:
    """Objects for the fuzz to find: the user's workspaces, a project, an
    invite, a conversation, an announcement, the catalog's models, the
    plans and the admin settings' names."""
    user = fleet.callers["user"]
    operator = fleet.callers["operator"]
    workspace = workspace_pb2_grpc.WorkspaceServiceStub(fleet.channel("workspace"))
    admin = admin_pb2_grpc.AdminServiceStub(fleet.channel("admin"))
    catalog = catalog_pb2_grpc.CatalogServiceStub(fleet.channel("catalog"))
    models = await _seeded(fleet, catalog.ListModels, catalog_pb2.ListModelsRequest())
    team = await _seeded(
        fleet,
        workspace.CreateWorkspace,
        workspace_pb2.CreateWorkspaceRequest(name="Fuzz team"),
    )
    team_id = team.workspace.id if team else ""
    model_id = models.models[0].id if models and models.models else ""
    seeds: list[tuple[Any, Message, Metadata]] = [
        (workspace.ListWorkspaces, workspace_pb2.ListWorkspacesRequest(), user),
        (
            workspace.CreateProject,
            workspace_pb2.CreateProjectRequest(workspace_id=team_id, name="Fuzz"),
            user,
        ),
        (
            workspace.CreateInvite,
            workspace_pb2.CreateInviteRequest(
                workspace_id=team_id, email="invitee@example.com"
            ),
            user,
        ),
        (
            chat_pb2_grpc.ChatServiceStub(fleet.channel("chat")).CreateConversation,
            chat_pb2.CreateConversationRequest(
                model_id=model_id, title="Fuzz", workspace_id=team_id
            ),
            user,
        ),
        (
            admin.CreateAnnouncement,
            admin_pb2.CreateAnnouncementRequest(
                title="Fuzz", body="Fuzz", audience="all", severity="info"
            ),
            operator,
        ),
        (admin.GetSettings, admin_pb2.GetSettingsRequest(), operator),
        (
            billing_pb2_grpc.BillingServiceStub(fleet.channel("billing")).ListPlans,
            billing_pb2.ListPlansRequest(),
            user,
        ),
    ]
    for method, message, metadata in seeds:
        await _seeded(fleet, method, message, metadata)


async def _seeded(
    fleet: Fleet, method: Any, message: Message, metadata: Metadata | None = None
) -> Any:
    """The reply of a seeding call, its ids and names remembered; None when
    the call was refused (the fuzz then has fewer real ids, nothing more)."""
    metadata = fleet.callers["user"] if metadata is None else metadata
    try:
        reply = await method(message, metadata=metadata, timeout=SEED_TIMEOUT)
    except grpc.aio.AioRpcError as exc:
        print(f"fuzz seed refused: {exc.code().name} {exc.details()}")
        return None
    fleet.known.remember(reply)
    return reply
