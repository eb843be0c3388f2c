"""Who is calling an RPC, and which callers each RPC admits.

The gateway forwards the end user's access token as `authorization` metadata
and adds its own short-lived internal token as `x-omnihub-internal`. Every
service verifies both itself (it trusts no identity it cannot verify) and
checks the method's access rule. A method without a rule is refused.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

from libs.errors import InvalidToken, PermissionDenied, Unauthenticated
from libs.revocation import RevocationList
from libs.tokens import Audience, TokenClaims, TokenSigner

AUTHORIZATION_KEY = "authorization"
INTERNAL_TOKEN_KEY = "x-omnihub-internal"  # noqa: S105 - a header name
REQUEST_ID_KEY = "x-request-id"
TRACEPARENT_KEY = "traceparent"


class Access(enum.Enum):
    """Who may call a method."""

    PUBLIC = "public"  # anyone, signed in or not
    USER = "user"  # a signed-in user
    ADMIN = "admin"  # a signed-in operator
    SERVICE = "service"  # another OmniHub process (the gateway included)


@dataclass(frozen=True)
class Caller:
    user: TokenClaims | None = None
    admin: TokenClaims | None = None
    service: str | None = None
    token_error: InvalidToken | None = None

    @property
    def user_id(self) -> str:
        if self.user is None:
            raise Unauthenticated()
        return self.user.subject

    @property
    def admin_id(self) -> str:
        if self.admin is None:
            raise Unauthenticated()
        return self.admin.subject

    @property
    def session_id(self) -> str | None:
        claims = self.user or self.admin
        return claims.session_id if claims else None


ANONYMOUS = Caller()
_current_caller: ContextVar[Caller] = ContextVar("omnihub_caller", default=ANONYMOUS)


def current_caller() -> Caller:
    return _current_caller.get()


def set_current_caller(caller: Caller) -> None:
    _current_caller.set(caller)


class CallerVerifier:
    def __init__(self, signer: TokenSigner, revocations: RevocationList | None) -> None:
        self._signer = signer
        self._revocations = revocations

    def verify_bearer(self, header: str | None) -> TokenClaims:
        """Claims of a valid, unrevoked user or admin bearer token."""
        if not header or not header.startswith("Bearer "):
            raise Unauthenticated()
        token = header[len("Bearer ") :].strip()
        claims = self._verify_any(token, (Audience.USER, Audience.ADMIN))
        if claims.session_id and self.is_revoked(claims.session_id):
            raise InvalidToken()
        return claims

    def is_revoked(self, session_id: str) -> bool:
        return self._revocations is not None and self._revocations.is_revoked(
            session_id
        )

    def _verify_any(self, token: str, audiences: Sequence[Audience]) -> TokenClaims:
        error = InvalidToken()
        for audience in audiences:
            try:
                return self._signer.verify(token, audience)
            except InvalidToken as exc:
                error = exc
        raise error

    def caller_from_metadata(self, metadata: Mapping[str, str]) -> Caller:
        user = admin = None
        token_error = None
        header = metadata.get(AUTHORIZATION_KEY)
        if header:
            try:
                claims = self.verify_bearer(header)
            except (InvalidToken, Unauthenticated):
                token_error = InvalidToken()
            else:
                if claims.audience is Audience.USER:
                    user = claims
                else:
                    admin = claims
        service = None
        internal = metadata.get(INTERNAL_TOKEN_KEY)
        if internal:
            try:
                service = self._signer.verify(internal, Audience.INTERNAL).subject
            except InvalidToken:
                token_error = InvalidToken()
        return Caller(user=user, admin=admin, service=service, token_error=token_error)


def authorize(caller: Caller, access: Access) -> None:
    """Raise unless `caller` may call a method with rule `access`."""
    if access is Access.PUBLIC:
        return
    if access is Access.USER and caller.user is not None:
        return
    if access is Access.ADMIN and caller.admin is not None:
        return
    if access is Access.SERVICE and caller.service is not None:
        return
    if caller.token_error is not None:
        raise caller.token_error
    # A service token names the calling process, not the person it acts
    # for: a user or operator method without one is unauthenticated.
    person_known = caller.user is not None or caller.admin is not None
    if not person_known and (
        caller.service is None or access in (Access.USER, Access.ADMIN)
    ):
        raise Unauthenticated()
    raise PermissionDenied()
