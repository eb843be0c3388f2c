"""GoogleTokenVerifier against a loopback stand-in for Google's certificates
endpoint (tests/fakes/google.py), with tokens signed like Google signs them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from libs.errors import InvalidToken, NotConfigured, Unavailable
from services.auth.google import GoogleTokenVerifier
from tests.fakes.google import FakeGoogle
from tests.suite import free_port


@pytest.fixture
async def verifier(google: FakeGoogle) -> AsyncIterator[GoogleTokenVerifier]:
    verifier = GoogleTokenVerifier(google.client_id, google.certs_url)
    yield verifier
    await verifier.close()


class TestAcceptedTokens:
    async def test_identity_is_read_from_the_token(
        self, google: FakeGoogle, verifier: GoogleTokenVerifier
    ) -> None:
        token = google.id_token(
            subject="google-123",
            email="Someone@Gmail.com",
            name="Some One",
            picture="https://example.com/p.png",
        )

        identity = await verifier.verify(token)

        assert identity.subject == "google-123"
        assert identity.email == "Someone@Gmail.com"
        assert identity.email_verified is True
        assert identity.name == "Some One"
        assert identity.picture == "https://example.com/p.png"

    async def test_unverified_email_is_reported_not_trusted(
        self, google: FakeGoogle, verifier: GoogleTokenVerifier
    ) -> None:
        identity = await verifier.verify(google.id_token(email_verified=False))

        assert identity.email_verified is False

    async def test_token_without_name_or_picture(
        self, google: FakeGoogle, verifier: GoogleTokenVerifier
    ) -> None:
        identity = await verifier.verify(google.id_token(name=None, picture=None))

        assert (identity.name, identity.picture) == (None, None)

    async def test_issuer_without_scheme_is_google_too(
        self, google: FakeGoogle, verifier: GoogleTokenVerifier
    ) -> None:
        token = google.id_token(issuer="accounts.google.com")

        assert (await verifier.verify(token)).email_verified


class TestRefusedTokens:
    async def test_token_for_another_client(
        self, google: FakeGoogle, verifier: GoogleTokenVerifier
    ) -> None:
        token = google.id_token(audience="someone-else.apps.googleusercontent.com")

        with pytest.raises(InvalidToken):
            await verifier.verify(token)

    async def test_token_from_another_issuer(
        self, google: FakeGoogle, verifier: GoogleTokenVerifier
    ) -> None:
        token = google.id_token(issuer="https://evil.example.com")

        with pytest.raises(InvalidToken):
            await verifier.verify(token)

    async def test_expired_token(
        self, google: FakeGoogle, verifier: GoogleTokenVerifier
    ) -> None:
        token = google.id_token(expires_in=-120)

        with pytest.raises(InvalidToken):
            await verifier.verify(token)

    async def test_token_signed_with_a_key_google_did_not_publish(
        self, google: FakeGoogle, verifier: GoogleTokenVerifier
    ) -> None:
        token = google.id_token(signing_key=google.other_key())

        with pytest.raises(InvalidToken):
            await verifier.verify(token)

    async def test_token_without_email(
        self, google: FakeGoogle, verifier: GoogleTokenVerifier
    ) -> None:
        with pytest.raises(InvalidToken):
            await verifier.verify(google.id_token(email=""))

    @pytest.mark.parametrize("credential", ["", "not-a-jwt", "a.b.c"])
    async def test_garbage(
        self, verifier: GoogleTokenVerifier, credential: str
    ) -> None:
        with pytest.raises(InvalidToken):
            await verifier.verify(credential)


class TestCertificates:
    async def test_certificates_are_fetched_once_while_fresh(
        self, google: FakeGoogle, verifier: GoogleTokenVerifier
    ) -> None:
        before = google.requests

        await verifier.verify(google.id_token())
        await verifier.verify(google.id_token())

        assert google.requests == before + 1

    async def test_unreachable_google_is_unavailable_not_invalid(
        self, google: FakeGoogle
    ) -> None:
        verifier = GoogleTokenVerifier(
            google.client_id, f"http://127.0.0.1:{free_port()}/oauth2/v1/certs"
        )
        try:
            with pytest.raises(Unavailable):
                await verifier.verify(google.id_token())
        finally:
            await verifier.close()


async def test_unconfigured_server_refuses_google_sign_in(google: FakeGoogle) -> None:
    verifier = GoogleTokenVerifier(None, google.certs_url)
    try:
        assert not verifier.configured
        with pytest.raises(NotConfigured):
            await verifier.verify(google.id_token())
    finally:
        await verifier.close()
