"""JWT issue and verification for users, operators and services.

Three audiences, each signed with its own key derived from JWT_SECRET, so a
token of one kind can never pass as another even where a check is forgotten.
The algorithm is pinned to HS256; `alg: none` and every other algorithm are
refused. Access tokens name their session (`sid`) so that ending a session
ends its access tokens (see libs.revocation).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass

import jwt

from libs.errors import InvalidToken

ISSUER = "omnihub"
ALGORITHM = "HS256"
CLOCK_LEEWAY_SECONDS = 5
VERIFIED_CACHE_SIZE = 10_000


class Audience(enum.StrEnum):
    USER = "omnihub:user"
    ADMIN = "omnihub:admin"
    INTERNAL = "omnihub:internal"


@dataclass(frozen=True)
class TokenClaims:
    audience: Audience
    subject: str
    session_id: str | None
    expires_at: int
    email: str | None = None
    role: str | None = None


class TokenSigner:
    def __init__(self, secret: str, cache_size: int = VERIFIED_CACHE_SIZE) -> None:
        if not secret:
            raise ValueError("a signing secret is required")
        # A token is verified on every request it comes with, and the same
        # few tokens come again and again (a service's internal token, a
        # user's access token); remember the claims of good ones until they
        # expire. Revocation is checked apart from this, on every request.
        self._verified: dict[tuple[str, Audience], TokenClaims] = {}
        self._cache_size = cache_size
        self._keys = {
            audience: hmac.new(
                secret.encode(), audience.value.encode(), hashlib.sha256
            ).digest()
            for audience in Audience
        }

    def issue(
        self,
        audience: Audience,
        subject: str,
        lifetime_seconds: int,
        *,
        session_id: str | None = None,
        email: str | None = None,
        role: str | None = None,
    ) -> str:
        now = int(time.time())
        claims: dict[str, object] = {
            "iss": ISSUER,
            "aud": audience.value,
            "sub": subject,
            "iat": now,
            "exp": now + lifetime_seconds,
            "jti": uuid.uuid4().hex,
        }
        if session_id is not None:
            claims["sid"] = session_id
        if email is not None:
            claims["email"] = email
        if role is not None:
            claims["role"] = role
        return jwt.encode(claims, self._keys[audience], algorithm=ALGORITHM)

    def verify(self, token: str, audience: Audience) -> TokenClaims:
        """Return the claims of a valid token of `audience` or raise InvalidToken."""
        cached = self._verified.get((token, audience))
        if cached is not None:
            if cached.expires_at + CLOCK_LEEWAY_SECONDS > time.time():
                return cached
            del self._verified[(token, audience)]
        claims = self._decode(token, audience)
        if len(self._verified) >= self._cache_size:
            self._verified.pop(next(iter(self._verified)))
        self._verified[(token, audience)] = claims
        return claims

    def _decode(self, token: str, audience: Audience) -> TokenClaims:
        try:
            claims = jwt.decode(
                token,
                self._keys[audience],
                algorithms=[ALGORITHM],
                audience=audience.value,
                issuer=ISSUER,
                leeway=CLOCK_LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "sub", "aud", "iss"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken() from exc
        session_id = claims.get("sid")
        if audience is not Audience.INTERNAL and not isinstance(session_id, str):
            raise InvalidToken()
        return TokenClaims(
            audience=audience,
            subject=str(claims["sub"]),
            session_id=session_id,
            expires_at=int(claims["exp"]),
            email=claims.get("email"),
            role=claims.get("role"),
        )


class InternalTokenSource:
    """A short-lived token naming this service, renewed before it expires."""

    def __init__(
        self, signer: TokenSigner, service: str, lifetime_seconds: int
    ) -> None:
        self._signer = signer
        self._service = service
        self._lifetime = lifetime_seconds
        self._token = ""
        self._renew_at = 0.0

    def token(self) -> str:
        now = time.monotonic()
        if now >= self._renew_at:
            self._token = self._signer.issue(
                Audience.INTERNAL, self._service, self._lifetime
            )
            self._renew_at = now + self._lifetime / 2
        return self._token
