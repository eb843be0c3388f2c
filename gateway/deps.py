"""Request dependencies: the upstream services, the caller's identity and
where the request came from."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from omnihub.auth.v1 import auth_pb2

from gateway.me import MeAnswers
from gateway.upstream import Upstream
from libs.config import Settings
from libs.errors import PermissionDenied, Unauthenticated
from libs.tokens import Audience, TokenClaims

MAX_USER_AGENT_LENGTH = 512
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def get_upstream(request: Request) -> Upstream:
    upstream: Upstream = request.app.state.upstream
    return upstream


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


# Metadata naming where an operator's request came from; the admin service
# writes it into the audit trail (the request id travels as x-request-id).
CLIENT_ADDRESS_KEY = "x-client-address"


@dataclass(frozen=True)
class Principal:
    """A verified caller, the header to forward to services, and any other
    metadata the services should see (for operators: the client address)."""

    claims: TokenClaims
    authorization: str
    metadata: tuple[tuple[str, str], ...] = ()

    @property
    def id(self) -> str:
        return self.claims.subject


def principal(request: Request, audience: Audience) -> Principal:
    header = request.headers.get("authorization")
    if not header:
        raise Unauthenticated()
    upstream: Upstream = request.app.state.upstream
    claims = upstream.runtime.verifier.verify_bearer(header)
    if claims.audience is not audience:
        raise PermissionDenied(
            "Operator tokens cannot be used here."
            if audience is Audience.USER
            else "This needs an operator sign-in."
        )
    return Principal(claims, header)


async def require_user(request: Request) -> AsyncIterator[Principal]:
    user = principal(request, Audience.USER)
    if request.method in READ_METHODS:
        yield user
        return
    # A write: no /me answer kept from before it (or read while it runs)
    # may be served after it (see gateway/me.py).
    answers: MeAnswers = request.app.state.me_answers
    answers.forget_user(user.id)
    try:
        yield user
    finally:
        answers.forget_user(user.id)


async def require_admin(request: Request) -> Principal:
    operator = principal(request, Audience.ADMIN)
    settings: Settings = request.app.state.settings
    address = client_address(request, settings) or ""
    return Principal(
        operator.claims, operator.authorization, ((CLIENT_ADDRESS_KEY, address),)
    )


def client_address(request: Request, settings: Settings) -> str | None:
    """The real client address: the TCP peer, or the address a trusted proxy
    reports in X-Forwarded-For (the right-most hop that is not a trusted
    proxy itself). Never X-Forwarded-For from an untrusted peer."""
    peer = request.client.host if request.client else None
    if peer is None or not _trusted(peer, settings):
        return peer
    forwarded = request.headers.get("x-forwarded-for", "")
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _is_address(hop):
            break
        if not _trusted(hop, settings):
            return hop
    return peer


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _trusted(address: str, settings: Settings) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in settings.trusted_proxies)


async def client_info(request: Request) -> auth_pb2.ClientInfo:
    settings: Settings = request.app.state.settings
    return auth_pb2.ClientInfo(
        ip_address=client_address(request, settings) or "",
        user_agent=(request.headers.get("user-agent") or "")[:MAX_USER_AGENT_LENGTH],
    )


UpstreamDep = Annotated[Upstream, Depends(get_upstream)]
UserDep = Annotated[Principal, Depends(require_user)]
AdminDep = Annotated[Principal, Depends(require_admin)]
ClientDep = Annotated[auth_pb2.ClientInfo, Depends(client_info)]
