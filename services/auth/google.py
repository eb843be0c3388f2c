"""Google sign-in: verify a Google Identity Services ID token.

The token's signature is checked against Google's published certificates
(`GOOGLE_CERTS_URL`, cached as long as Google's Cache-Control allows), its
audience against `GOOGLE_CLIENT_ID`, its issuer and expiry by google-auth.
Tests and local runs point the certificate URL at a loopback server; the
verification code is the same.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
from google.auth import exceptions as google_exceptions
from google.auth import jwt as google_jwt

from libs.errors import InvalidToken, NotConfigured, Unavailable
from libs.logs import get_logger

log = get_logger(__name__)

GOOGLE_ISSUERS = frozenset({"accounts.google.com", "https://accounts.google.com"})
DEFAULT_CERT_TTL_SECONDS = 3600
CLOCK_SKEW_SECONDS = 10


@dataclass(frozen=True)
class GoogleIdentity:
    subject: str
    email: str
    email_verified: bool
    name: str | None
    picture: str | None


class GoogleTokenVerifier:
    def __init__(
        self,
        client_id: str | None,
        certs_url: str,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._client_id = client_id
        self._certs_url = certs_url
        self._http = http or httpx.AsyncClient(timeout=5.0)
        self._certs: dict[str, str] = {}
        self._certs_expire_at = 0.0

    @property
    def configured(self) -> bool:
        return bool(self._client_id)

    async def verify(self, credential: str) -> GoogleIdentity:
        if not self._client_id:
            raise NotConfigured("Google sign-in is not configured on this server.")
        certs = await self._certificates()
        try:
            claims = google_jwt.decode(  # type: ignore[no-untyped-call]
                credential,
                certs=certs,
                audience=self._client_id,
                clock_skew_in_seconds=CLOCK_SKEW_SECONDS,
            )
        except (ValueError, google_exceptions.GoogleAuthError) as exc:
            log.info("google.token_refused", reason=str(exc)[:200])
            raise InvalidToken("Google sign-in failed. Try again.") from exc
        if claims.get("iss") not in GOOGLE_ISSUERS or not claims.get("email"):
            raise InvalidToken("Google sign-in failed. Try again.")
        return GoogleIdentity(
            subject=str(claims["sub"]),
            email=str(claims["email"]),
            email_verified=claims.get("email_verified") in (True, "true"),
            name=claims.get("name"),
            picture=claims.get("picture"),
        )

    async def _certificates(self) -> dict[str, str]:
        if self._certs and time.monotonic() < self._certs_expire_at:
            return self._certs
        try:
            response = await self._http.get(self._certs_url)
            response.raise_for_status()
            certs = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("google.certs_unavailable", error=str(exc))
            raise Unavailable(
                "Google sign-in is unreachable right now. Try again."
            ) from exc
        if not isinstance(certs, dict) or not certs:
            raise Unavailable("Google sign-in is unreachable right now. Try again.")
        self._certs = {str(key): str(value) for key, value in certs.items()}
        self._certs_expire_at = time.monotonic() + _max_age(response)
        return self._certs

    async def close(self) -> None:
        await self._http.aclose()


def _max_age(response: httpx.Response) -> float:
    for directive in response.headers.get("cache-control", "").split(","):
        name, _, value = directive.strip().partition("=")
        if name == "max-age" and value.isdigit():
            return float(value)
    return DEFAULT_CERT_TTL_SECONDS
