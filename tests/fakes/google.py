"""A stand-in for Google's sign-in certificates endpoint.

It publishes an X.509 certificate in the format of
https://www.googleapis.com/oauth2/v1/certs and signs ID tokens with the
matching RSA key, so the auth service's real verification code can be tested
end to end on loopback.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.suite import ServedApp, serve_asgi

ISSUER = "https://accounts.google.com"


def _key_and_certificate() -> tuple[rsa.RSAPrivateKey, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-google")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return key, certificate.public_bytes(serialization.Encoding.PEM).decode()


class FakeGoogle:
    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self.key_id = uuid.uuid4().hex
        self._key, self._certificate = _key_and_certificate()
        self.requests = 0
        self._served: ServedApp | None = None

    async def _certs(self, request: Request) -> JSONResponse:
        self.requests += 1
        return JSONResponse(
            {self.key_id: self._certificate},
            headers={"Cache-Control": "public, max-age=3600"},
        )

    async def start(self) -> None:
        app = Starlette(routes=[Route("/oauth2/v1/certs", self._certs)])
        self._served = await serve_asgi(app)

    async def stop(self) -> None:
        if self._served is not None:
            await self._served.stop()

    @property
    def certs_url(self) -> str:
        assert self._served is not None
        return f"{self._served.url}/oauth2/v1/certs"

    def id_token(
        self,
        *,
        subject: str | None = None,
        email: str = "someone@gmail.com",
        email_verified: bool = True,
        audience: str | None = None,
        issuer: str = ISSUER,
        expires_in: int = 3600,
        name: str | None = "Google User",
        picture: str | None = "https://example.com/avatar.png",
        signing_key: rsa.RSAPrivateKey | None = None,
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": issuer,
            "aud": audience or self.client_id,
            "sub": subject or uuid.uuid4().hex,
            "email": email,
            "email_verified": email_verified,
            "iat": now,
            "exp": now + expires_in,
        }
        if name:
            claims["name"] = name
        if picture:
            claims["picture"] = picture
        return jwt.encode(
            claims,
            signing_key or self._key,
            algorithm="RS256",
            headers={"kid": self.key_id},
        )

    @staticmethod
    def other_key() -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
