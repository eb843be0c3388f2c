from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from libs.config import RateLimit, Settings, parse_duration


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine running the tests may export OmniHub's own variables."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


def _settings(**values: Any) -> Settings:
    """Settings from `values` and the environment only, never a stray .env."""
    return Settings(_env_file=None, **values)


class TestParseDuration:
    @pytest.mark.parametrize(
        ("text", "seconds"),
        [
            ("900", 900),
            ("900s", 900),
            ("15m", 900),
            ("2h", 7200),
            ("7d", 604800),
            (" 30 s ", 30),
            (45, 45),
        ],
    )
    def test_accepted_forms(self, text: object, seconds: int) -> None:
        assert parse_duration(text) == seconds

    @pytest.mark.parametrize("text", ["", "15 minutes", "1.5h", "-5", "7w", "m"])
    def test_refused_forms(self, text: str) -> None:
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(text)


class TestRateLimit:
    def test_count_and_period(self) -> None:
        limit = RateLimit.parse("10/2m")

        assert (limit.count, limit.period_seconds) == (10, 120)
        assert limit.interval_seconds == 12

    def test_period_defaults_to_a_minute(self) -> None:
        assert RateLimit.parse("5").period_seconds == 60

    def test_read_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AUTH_RATE_LIMIT_ACCOUNT", "3/30s")

        limit = _settings().auth_rate_limit_account

        assert (limit.count, limit.period_seconds) == (3, 30)


class TestSettingsFromEnvironment:
    def test_durations_accept_units(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("REFRESH_TOKEN_EXPIRY", "7d")
        monkeypatch.setenv("ACCESS_TOKEN_EXPIRY", "900")

        settings = _settings()

        assert settings.refresh_token_expiry == 604800
        assert settings.access_token_expiry == 900

    def test_bad_duration_is_refused_at_start_up(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("REFRESH_TOKEN_EXPIRY", "a week")

        with pytest.raises(ValidationError, match="not a duration"):
            _settings()

    def test_trusted_proxies_are_a_comma_list(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.7 ,fd00::/8")

        assert _settings().trusted_proxies == [
            ipaddress.ip_network("10.0.0.0/8"),
            ipaddress.ip_network("192.168.1.7/32"),
            ipaddress.ip_network("fd00::/8"),
        ]

    def test_trusted_proxies_default_to_loopback(self) -> None:
        networks = _settings().trusted_proxies

        assert ipaddress.ip_address("127.0.0.1") in networks[0]
        assert not any(ipaddress.ip_address("10.1.2.3") in net for net in networks)

    @pytest.mark.parametrize(
        ("value", "mode"),
        [
            ("true", "verify-full"),
            ("false", "disable"),
            ("", "disable"),
            ("require", "require"),
            ("VERIFY-FULL", "verify-full"),
        ],
    )
    def test_database_ssl_accepts_booleans_and_modes(
        self, monkeypatch: pytest.MonkeyPatch, value: str, mode: str
    ) -> None:
        monkeypatch.setenv("DATABASE_SSL", value)

        assert _settings().database_ssl == mode

    def test_unknown_database_ssl_mode_is_refused(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("DATABASE_SSL", "maybe")

        with pytest.raises(ValidationError):
            _settings()


class TestSigningSecret:
    def test_configured_secret_is_used(self) -> None:
        secret = "configured-" + "c" * 32

        assert _settings(jwt_secret=secret).signing_secret() == secret

    def test_production_without_secret_refuses_to_run(self) -> None:
        settings = _settings(environment="production")

        with pytest.raises(RuntimeError, match="JWT_SECRET is required"):
            settings.signing_secret()

    def test_production_with_short_secret_refuses_to_run(self) -> None:
        settings = _settings(environment="production", jwt_secret="short")

        with pytest.raises(RuntimeError, match="at least 32"):
            settings.signing_secret()

    def test_development_generates_one_secret_and_keeps_it(self) -> None:
        settings = _settings(environment="development")

        first = settings.signing_secret()

        assert len(first) >= 32
        assert settings.signing_secret() == first
        assert settings.jwt_secret == SecretStr(first)

    def test_each_development_process_generates_its_own(self) -> None:
        one = _settings(environment="development").signing_secret()
        other = _settings(environment="development").signing_secret()

        assert one != other


class TestDerivedValues:
    @pytest.mark.parametrize(
        ("environment", "docs_enabled", "shown"),
        [
            ("production", None, False),
            ("development", None, True),
            ("test", None, True),
            ("production", True, True),
            ("development", False, False),
        ],
    )
    def test_docs_are_hidden_in_production_unless_asked_for(
        self, environment: str, docs_enabled: bool | None, shown: bool
    ) -> None:
        settings = _settings(environment=environment, docs_enabled=docs_enabled)

        assert settings.show_docs is shown

    def test_address_of_a_service(self) -> None:
        settings = _settings(billing_address="billing:9000")

        assert settings.address_of("billing") == "billing:9000"
