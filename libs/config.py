"""Settings shared by every OmniHub process, read from the environment.

One class, so that an operator sees every variable in one place; each process
reads only the fields it needs. Durations accept `900`, `900s`, `15m`, `2h` or
`7d`; a bare number means seconds (the original read it as milliseconds).
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d)?\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> int:
    """Return a duration in whole seconds."""
    if isinstance(value, int):
        return value
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"not a duration: {value!r} (use e.g. 900, 15m, 2h, 7d)")
    amount, unit = match.groups()
    return int(amount) * _UNIT_SECONDS[unit or "s"]


Seconds = Annotated[int, BeforeValidator(parse_duration)]


class RateLimit:
    """`10/60s`: at most 10 events in any 60-second window (burst 10)."""

    def __init__(self, count: int, period_seconds: int) -> None:
        self.count = count
        self.period_seconds = period_seconds

    @classmethod
    def parse(cls, value: object) -> RateLimit:
        if isinstance(value, RateLimit):
            return value
        count, _, period = str(value).partition("/")
        return cls(int(count), parse_duration(period or "60s"))

    @property
    def interval_seconds(self) -> float:
        return self.period_seconds / self.count


def _split_networks(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        arbitrary_types_allowed=True,
    )

    environment: Literal["development", "test", "production"] = "development"
    log_level: str = "INFO"
    log_format: Literal["json", "console", "auto"] = "auto"
    # Where a service or a worker serves Prometheus metrics (/metrics, on the
    # interface of GRPC_LISTEN_HOST); the gateway serves them on PORT.
    # Unset: not served. Traces are set by the OTEL_* variables (libs/tracing).
    metrics_port: int | None = None

    # HTTP gateway
    port: int = 3001
    frontend_url: str = "http://localhost:3000"
    docs_enabled: bool | None = None
    max_body_bytes: int = 25 * 1024 * 1024
    trusted_proxies: Annotated[
        list[ipaddress.IPv4Network | ipaddress.IPv6Network],
        NoDecode,
        BeforeValidator(_split_networks),
    ] = Field(
        default_factory=lambda: [
            ipaddress.ip_network("127.0.0.0/8"),
            ipaddress.ip_network("::1/128"),
        ]
    )

    # Tokens
    jwt_secret: SecretStr | None = None
    access_token_expiry: Seconds = 900
    refresh_token_expiry: Seconds = 7 * 86400
    refresh_reuse_grace: Seconds = 10
    admin_token_expiry: Seconds = 8 * 3600
    internal_token_expiry: Seconds = 300
    revocation_poll_interval: float = 0.5
    # How long the gateway keeps a session's GET /api/auth/me answer
    # (gateway/me.py); the user's own writes drop it at once. 0: never kept.
    me_cache_seconds: float = Field(default=2.0, ge=0, le=60)

    # Accounts
    admin_username: str | None = None
    admin_password: SecretStr | None = None
    auth_rate_limit_account: Annotated[RateLimit, NoDecode] = RateLimit(10, 60)
    auth_rate_limit_address: Annotated[RateLimit, NoDecode] = RateLimit(30, 60)
    google_client_id: str | None = None
    google_client_secret: SecretStr | None = None
    google_certs_url: str = "https://www.googleapis.com/oauth2/v1/certs"

    # Database
    database_url: str | None = None
    database_ssl: Literal["disable", "require", "verify-full"] = "disable"
    database_ca_cert: str | None = None
    # Kept open per process; overflow connections are closed after use, so
    # size the pool for the usual concurrency (7 services share one server).
    database_pool_size: int = 16
    database_max_overflow: int = 4

    # gRPC
    rpc_timeout: float = 10.0
    rpc_max_timeout: float = 60.0
    grpc_max_message_bytes: int = 32 * 1024 * 1024
    grpc_listen_host: str = "[::]"
    # Keepalive pings find a connection to a vanished peer (a host gone
    # without closing its sockets) in time + timeout seconds, also while the
    # connection is idle. Servers refuse pings more frequent than
    # min_ping_interval, so clients must not ping more often than that.
    grpc_keepalive_time: float = 30.0
    grpc_keepalive_timeout: float = 10.0
    grpc_keepalive_without_calls: bool = True
    grpc_min_ping_interval: float = 10.0
    # Servers close each connection after this many seconds (calls under way
    # finish first), so that clients resolve `dns:///` names again and
    # spread their calls over replicas started since. 0: never.
    grpc_max_connection_age: float = 300.0
    auth_address: str = "localhost:50051"
    catalog_address: str = "localhost:50052"
    generation_address: str = "localhost:50053"
    chat_address: str = "localhost:50054"
    workspace_address: str = "localhost:50055"
    billing_address: str = "localhost:50056"
    admin_address: str = "localhost:50057"
    # How often processes re-read feature flags (and the gateway its
    # rate-limit rules) from the admin service; never on a request's path.
    admin_poll_interval: float = 2.0
    # How long the admin service keeps the dashboard's figures and each
    # analytics range before asking the owning services again. 0: never kept.
    admin_insights_cache_seconds: float = 30.0

    # Providers
    fal_key: SecretStr | None = None
    # fal's queue API. Without FAL_KEY, `make run` and the tests point this,
    # and the key set below, at the local fal simulator.
    fal_queue_url: str = "https://queue.fal.run"
    fal_jwks_url: str = "https://rest.alpha.fal.ai/.well-known/jwks.json"
    # Our fal account's user id; webhooks signed for another account are refused.
    fal_user_id: str | None = None
    # Public URL of the gateway's POST /api/webhooks/fal. Unset: no webhooks,
    # jobs are followed by polling alone.
    fal_webhook_url: str | None = None
    fal_timeout: float = 30.0
    openrouter_api_key: SecretStr | None = None
    openrouter_base_url: str = "https://openrouter.ai/api/v1"
    # Seconds without a byte from OpenRouter before a reply counts as stalled.
    openrouter_timeout: float = 60.0

    # Generation outputs are copied here (provider URLs expire) and served by
    # the gateway under MEDIA_BASE_URL.
    media_dir: str = ".data/media"
    media_base_url: str = "http://localhost:3001/media"

    # Generation worker
    worker_concurrency: int = 8
    worker_lease: Seconds = 30
    # How often a worker looks for due jobs when it found none last time.
    worker_idle_interval: float = 0.5
    # How often a running provider job is polled (webhooks usually come first).
    fal_poll_interval: float = 2.0
    # Razorpay. Without keys, `make run` starts the local simulator and points
    # RAZORPAY_BASE_URL at it; the same client code talks to either.
    razorpay_base_url: str = "https://api.razorpay.com"
    razorpay_key_id: str | None = None
    razorpay_key_secret: SecretStr | None = None
    razorpay_webhook_secret: SecretStr | None = None

    @model_validator(mode="after")
    def _check_keepalive(self) -> Settings:
        if self.grpc_keepalive_time < self.grpc_min_ping_interval:
            # A server answers pings that come too often with GOAWAY
            # ("too_many_pings") and the connection drops.
            raise ValueError(
                "GRPC_KEEPALIVE_TIME must not be shorter than GRPC_MIN_PING_INTERVAL"
            )
        return self

    @field_validator(
        "auth_rate_limit_account", "auth_rate_limit_address", mode="before"
    )
    @classmethod
    def _parse_rate_limit(cls, value: object) -> RateLimit:
        return RateLimit.parse(value)

    @field_validator("database_ssl", mode="before")
    @classmethod
    def _parse_ssl(cls, value: object) -> object:
        """Accept the original's true/false as well as libpq-style modes."""
        text = str(value).strip().lower()
        if text in {"true", "1", "yes", "on"}:
            return "verify-full"
        if text in {"false", "0", "no", "off", ""}:
            return "disable"
        return text

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @property
    def show_docs(self) -> bool:
        if self.docs_enabled is not None:
            return self.docs_enabled
        return not self.is_production

    def address_of(self, service: str) -> str:
        return str(getattr(self, f"{service}_address"))

    def signing_secret(self) -> str:
        """The JWT secret. Production refuses to run without one; elsewhere a
        random secret is made for this process, which other processes will
        not share (so `make run` always passes one in)."""
        if self.jwt_secret is not None and self.jwt_secret.get_secret_value():
            secret = self.jwt_secret.get_secret_value()
            if self.is_production and len(secret) < 32:
                raise RuntimeError("JWT_SECRET must be at least 32 characters")
            return secret
        if self.is_production:
            raise RuntimeError("JWT_SECRET is required in production")
        generated = secrets.token_urlsafe(48)
        self.jwt_secret = SecretStr(generated)
        _warn_generated_secret()
        return generated


def _warn_generated_secret() -> None:
    from libs.logs import get_logger

    get_logger(__name__).warning(
        "jwt_secret.generated",
        hint="JWT_SECRET is unset; tokens signed by this process are not "
        "accepted by any other process. Set JWT_SECRET to share one.",
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
