from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

import jwt
import pytest

from libs.errors import InvalidToken
from libs.tokens import (
    ALGORITHM,
    ISSUER,
    Audience,
    InternalTokenSource,
    TokenSigner,
)

SECRET = "tokens-test-secret-" + "s" * 32


@pytest.fixture
def signer() -> TokenSigner:
    return TokenSigner(SECRET)


def _audience_key(audience: Audience) -> bytes:
    """The key an honest signer uses for `audience`, to forge tokens that
    differ from a real one in exactly one respect."""
    return hmac.new(SECRET.encode(), audience.value.encode(), hashlib.sha256).digest()


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": Audience.USER.value,
        "sub": "user-1",
        "sid": "session-1",
        "iat": now,
        "exp": now + 60,
    }
    claims.update(overrides)
    return {key: value for key, value in claims.items() if value is not None}


class TestIssueAndVerify:
    def test_user_token_carries_its_claims(self, signer: TokenSigner) -> None:
        token = signer.issue(
            Audience.USER, "user-1", 60, session_id="s-1", email="a@example.com"
        )

        claims = signer.verify(token, Audience.USER)

        assert claims.audience is Audience.USER
        assert claims.subject == "user-1"
        assert claims.session_id == "s-1"
        assert claims.email == "a@example.com"
        assert claims.role is None
        assert abs(claims.expires_at - (time.time() + 60)) <= 2

    def test_admin_token_carries_its_role(self, signer: TokenSigner) -> None:
        token = signer.issue(
            Audience.ADMIN, "admin-1", 60, session_id="s-2", role="support"
        )

        claims = signer.verify(token, Audience.ADMIN)

        assert (claims.subject, claims.role) == ("admin-1", "support")

    def test_internal_token_needs_no_session(self, signer: TokenSigner) -> None:
        token = signer.issue(Audience.INTERNAL, "gateway", 60)

        claims = signer.verify(token, Audience.INTERNAL)

        assert (claims.subject, claims.session_id) == ("gateway", None)

    @pytest.mark.parametrize("audience", [Audience.USER, Audience.ADMIN])
    def test_person_token_without_session_is_refused(
        self, signer: TokenSigner, audience: Audience
    ) -> None:
        token = signer.issue(audience, "someone", 60)

        with pytest.raises(InvalidToken):
            signer.verify(token, audience)

    def test_empty_secret_is_refused(self) -> None:
        with pytest.raises(ValueError, match="secret"):
            TokenSigner("")


class TestAudienceSeparation:
    @pytest.mark.parametrize(
        ("issued", "presented"),
        [
            (Audience.USER, Audience.ADMIN),
            (Audience.ADMIN, Audience.USER),
            (Audience.INTERNAL, Audience.USER),
            (Audience.USER, Audience.INTERNAL),
        ],
    )
    def test_token_of_one_audience_never_passes_as_another(
        self, signer: TokenSigner, issued: Audience, presented: Audience
    ) -> None:
        token = signer.issue(issued, "someone", 60, session_id="s-1")

        with pytest.raises(InvalidToken):
            signer.verify(token, presented)

    def test_audience_claim_alone_does_not_make_a_token_admin(self) -> None:
        # Signed with the user key but claiming the admin audience: the per-
        # audience key, not the claim, decides.
        forged = jwt.encode(
            _claims(aud=Audience.ADMIN.value),
            _audience_key(Audience.USER),
            algorithm=ALGORITHM,
        )

        with pytest.raises(InvalidToken):
            TokenSigner(SECRET).verify(forged, Audience.ADMIN)


class TestRefusedTokens:
    def test_token_signed_with_another_secret(self, signer: TokenSigner) -> None:
        other = TokenSigner("another-secret-" + "o" * 32)
        token = other.issue(Audience.USER, "user-1", 60, session_id="s-1")

        with pytest.raises(InvalidToken):
            signer.verify(token, Audience.USER)

    def test_tampered_payload(self, signer: TokenSigner) -> None:
        token = signer.issue(Audience.USER, "user-1", 60, session_id="s-1")
        header, _payload, signature = token.split(".")
        other = signer.issue(Audience.USER, "user-2", 60, session_id="s-1")
        tampered = ".".join([header, other.split(".")[1], signature])

        with pytest.raises(InvalidToken):
            signer.verify(tampered, Audience.USER)

    def test_unsigned_alg_none_token(self, signer: TokenSigner) -> None:
        token = jwt.encode(_claims(), "", algorithm="none")

        with pytest.raises(InvalidToken):
            signer.verify(token, Audience.USER)

    # The derived key is shorter than PyJWT recommends for HS512; that is the
    # forger's problem here, not ours.
    @pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
    def test_other_hmac_algorithm_even_with_the_right_key(
        self, signer: TokenSigner
    ) -> None:
        token = jwt.encode(_claims(), _audience_key(Audience.USER), algorithm="HS512")

        with pytest.raises(InvalidToken):
            signer.verify(token, Audience.USER)

    def test_control_forged_token_with_pinned_algorithm_passes(
        self, signer: TokenSigner
    ) -> None:
        # Proves the forgeries in this class fail for the reason they name.
        token = jwt.encode(_claims(), _audience_key(Audience.USER), algorithm=ALGORITHM)

        assert signer.verify(token, Audience.USER).subject == "user-1"

    def test_wrong_issuer(self, signer: TokenSigner) -> None:
        token = jwt.encode(
            _claims(iss="someone-else"), _audience_key(Audience.USER), ALGORITHM
        )

        with pytest.raises(InvalidToken):
            signer.verify(token, Audience.USER)

    @pytest.mark.parametrize("missing", ["exp", "iat", "sub", "iss"])
    def test_missing_required_claim(self, signer: TokenSigner, missing: str) -> None:
        token = jwt.encode(
            _claims(**{missing: None}), _audience_key(Audience.USER), ALGORITHM
        )

        with pytest.raises(InvalidToken):
            signer.verify(token, Audience.USER)

    def test_expired_beyond_the_clock_leeway(self, signer: TokenSigner) -> None:
        token = signer.issue(Audience.USER, "user-1", -10, session_id="s-1")

        with pytest.raises(InvalidToken):
            signer.verify(token, Audience.USER)

    def test_just_expired_within_the_clock_leeway_passes(
        self, signer: TokenSigner
    ) -> None:
        token = signer.issue(Audience.USER, "user-1", -1, session_id="s-1")

        assert signer.verify(token, Audience.USER).subject == "user-1"

    def test_garbage(self, signer: TokenSigner) -> None:
        with pytest.raises(InvalidToken):
            signer.verify("not.a.jwt", Audience.USER)


class TestInternalTokenSource:
    def test_token_names_the_service(self, signer: TokenSigner) -> None:
        source = InternalTokenSource(signer, "catalog", 60)

        claims = signer.verify(source.token(), Audience.INTERNAL)

        assert claims.subject == "catalog"

    def test_token_is_reused_within_half_its_lifetime(
        self, signer: TokenSigner
    ) -> None:
        source = InternalTokenSource(signer, "catalog", 60)

        assert source.token() == source.token()

    def test_token_is_renewed_after_half_its_lifetime(
        self, signer: TokenSigner
    ) -> None:
        source = InternalTokenSource(signer, "catalog", 1)
        first = source.token()

        time.sleep(0.55)

        renewed = source.token()
        assert renewed != first
        assert signer.verify(renewed, Audience.INTERNAL).subject == "catalog"
