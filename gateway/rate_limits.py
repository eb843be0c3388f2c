"""Per-user and per-tier rate limits on the expensive routes, shared by
every gateway replica.

The rules (`user:<id>`, `tier:<plan id>`, `tier:free`: requests per window)
are the operators', kept by the admin service and polled here in the
background. A request to an expensive route (starting a generation or an
upscale, a chat message, a prompt enhancement) from a signed-in user with a
rule of their own, or of their tier, spends one request of that subject's
allowance with one CheckRateLimit call: a single PostgreSQL statement in the
admin service, so every replica draws on the same allowance (GCRA: a burst
of `requests`, then one per window / requests). Every other request costs
nothing: reads never call out, and neither do users no rule covers.

A user's tier is their active subscription's plan (billing GetActivePlan,
remembered for a minute), `tier:free` without one; it is only looked up
while some tier has a rule. If the admin service does not answer quickly
the request goes through: an outage of the limiter must not stop the
platform, and the provider calls it protects are paid for by credits.
"""

from __future__ import annotations

import math
import re
import time
from collections import OrderedDict

import grpc
from omnihub.admin.v1 import admin_pb2, admin_pb2_grpc
from omnihub.billing.v1 import billing_pb2, billing_pb2_grpc
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import render_domain_error
from libs.errors import DomainError, RateLimited
from libs.flags import PolledCache
from libs.grpc.client import Upstreams
from libs.grpc.identity import CallerVerifier
from libs.logs import get_logger
from libs.tokens import Audience

log = get_logger(__name__)

# (method, path) of the routes that spend provider money.
EXPENSIVE_ROUTES = (
    ("POST", re.compile(r"^/api/generate$")),
    ("POST", re.compile(r"^/api/upscale$")),
    ("POST", re.compile(r"^/api/enhance-prompt$")),
    ("POST", re.compile(r"^/api/chat/conversations/[^/]+/messages$")),
)
FREE_TIER = "tier:free"
CHECK_TIMEOUT_SECONDS = 0.5
PLAN_TIMEOUT_SECONDS = 0.5
PLAN_MEMORY_SECONDS = 60.0
PLANS_REMEMBERED = 10_000


def is_expensive(method: str, path: str) -> bool:
    return any(method == m and pattern.match(path) for m, pattern in EXPENSIVE_ROUTES)


class RateLimitRules(PolledCache):
    """The subjects that have a rule, as last read from the admin service."""

    name = "rate_limit_rules"

    def __init__(self, upstreams: Upstreams, interval: float) -> None:
        super().__init__(interval)
        self._upstreams = upstreams
        self._stub = admin_pb2_grpc.AdminServiceStub(upstreams.channel("admin"))
        self._subjects: frozenset[str] = frozenset()

    async def fetch(self) -> None:
        reply: admin_pb2.GetRateLimitsResponse = await self._stub.GetRateLimits(
            admin_pb2.GetRateLimitsRequest(),
            timeout=CHECK_TIMEOUT_SECONDS * 2,
            metadata=self._upstreams.metadata(),
        )
        self._subjects = frozenset(rule.subject for rule in reply.rules)

    def has(self, subject: str) -> bool:
        return subject in self._subjects

    @property
    def any_tier(self) -> bool:
        return any(subject.startswith("tier:") for subject in self._subjects)


class PlanLookup:
    """Users' active plans from billing, remembered for a minute."""

    def __init__(self, upstreams: Upstreams) -> None:
        self._upstreams = upstreams
        self._billing = billing_pb2_grpc.BillingServiceStub(
            upstreams.channel("billing")
        )
        self._known: OrderedDict[str, tuple[float, str]] = OrderedDict()

    async def plan_of(self, user_id: str) -> str:
        """The plan id, or "" for none (also while billing cannot say)."""
        now = time.monotonic()
        remembered = self._known.get(user_id)
        if remembered is not None and remembered[0] > now:
            return remembered[1]
        try:
            reply = await self._billing.GetActivePlan(
                billing_pb2.GetActivePlanRequest(user_id=user_id),
                timeout=PLAN_TIMEOUT_SECONDS,
                metadata=self._upstreams.metadata(),
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("rate_limit.plan_unknown", code=exc.code().name)
            return ""
        self._remember(user_id, reply.plan_id, now)
        return reply.plan_id

    def _remember(self, user_id: str, plan_id: str, now: float) -> None:
        self._known[user_id] = (now + PLAN_MEMORY_SECONDS, plan_id)
        self._known.move_to_end(user_id)
        while len(self._known) > PLANS_REMEMBERED:
            self._known.popitem(last=False)


class RateLimiter:
    def __init__(self, upstreams: Upstreams, interval: float) -> None:
        self.rules = RateLimitRules(upstreams, interval)
        self._plans = PlanLookup(upstreams)
        self._upstreams = upstreams
        self._admin = admin_pb2_grpc.AdminServiceStub(upstreams.channel("admin"))

    async def subject_for(self, user_id: str) -> str | None:
        """The rule that governs this user: their own, else their tier's."""
        own = f"user:{user_id}"
        if self.rules.has(own):
            return own
        if not self.rules.any_tier:
            return None
        plan = await self._plans.plan_of(user_id)
        tier = f"tier:{plan}" if plan else FREE_TIER
        return tier if self.rules.has(tier) else None

    async def retry_after(self, subject: str) -> float | None:
        """Spend one request; seconds to wait when refused, else None."""
        try:
            reply = await self._admin.CheckRateLimit(
                admin_pb2.CheckRateLimitRequest(subject=subject, cost=1),
                timeout=CHECK_TIMEOUT_SECONDS,
                metadata=self._upstreams.metadata(),
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("rate_limit.check_failed_open", code=exc.code().name)
            return None
        return None if reply.allowed else reply.retry_after_seconds


class RateLimitMiddleware:
    """429 (with Retry-After) for a signed-in user over their allowance on
    an expensive route; anything else passes untouched."""

    def __init__(
        self, app: ASGIApp, limiter: RateLimiter, verifier: CallerVerifier
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.verifier = verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_expensive(scope["method"], scope["path"]):
            wait = await self._wait(scope)
            if wait is not None:
                await self._refuse(wait, scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _wait(self, scope: Scope) -> float | None:
        user_id = self._user(scope)
        if user_id is None:
            return None
        subject = await self.limiter.subject_for(user_id)
        if subject is None:
            return None
        return await self.limiter.retry_after(subject)

    def _user(self, scope: Scope) -> str | None:
        """The signed-in user, if the request carries a good user token (a
        bad one is the route's to refuse)."""
        for name, value in scope["headers"]:
            if name == b"authorization":
                try:
                    claims = self.verifier.verify_bearer(value.decode("latin-1"))
                except DomainError:
                    return None
                return claims.subject if claims.audience is Audience.USER else None
        return None

    async def _refuse(
        self, wait: float, scope: Scope, receive: Receive, send: Send
    ) -> None:
        seconds = max(1, math.ceil(wait))
        log.info("rate_limit.refused", path=scope["path"], retry_after=seconds)
        error = RateLimited(
            f"Too many requests. Try again in {seconds} seconds.", retry_after=wait
        )
        await render_domain_error(error)(scope, receive, send)
