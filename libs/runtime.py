"""What every OmniHub process needs to take and make calls: the token signer,
the revocation list, the caller verifier and the upstream channels."""

from __future__ import annotations

import asyncio

from omnihub.auth.v1 import auth_pb2, auth_pb2_grpc

from libs.config import Settings
from libs.grpc.client import Upstreams
from libs.grpc.identity import CallerVerifier
from libs.logs import get_logger
from libs.revocation import (
    RevocationList,
    RevocationSource,
    auth_service_source,
    error_summary,
)
from libs.tokens import InternalTokenSource, TokenSigner

log = get_logger(__name__)

FEED_TIMEOUT_SECONDS = 5.0
# Start-up does not wait long for auth; the poller catches up in the background.
INITIAL_SYNC_TIMEOUT_SECONDS = 1.0


class Runtime:
    def __init__(
        self,
        settings: Settings,
        name: str,
        revocation_source: RevocationSource | None = None,
    ) -> None:
        self.settings = settings
        self.name = name
        self.signer = TokenSigner(settings.signing_secret())
        self.upstreams = Upstreams(
            settings,
            InternalTokenSource(self.signer, name, settings.internal_token_expiry),
        )
        self.revocations = RevocationList(
            revocation_source or self._auth_feed(),
            poll_interval=settings.revocation_poll_interval,
            retention_seconds=max(
                settings.access_token_expiry, settings.admin_token_expiry
            )
            + 60,
        )
        self.verifier = CallerVerifier(self.signer, self.revocations)

    def auth_stub(self) -> auth_pb2_grpc.AuthServiceAsyncStub:
        return auth_pb2_grpc.AuthServiceStub(self.upstreams.channel("auth"))

    def _auth_feed(self) -> RevocationSource:
        async def fetch(
            request: auth_pb2.ListRevokedSessionsRequest,
        ) -> auth_pb2.ListRevokedSessionsResponse:
            response: auth_pb2.ListRevokedSessionsResponse = (
                await self.auth_stub().ListRevokedSessions(
                    request,
                    timeout=FEED_TIMEOUT_SECONDS,
                    metadata=self.upstreams.metadata(),
                )
            )
            return response

        return auth_service_source(fetch)

    async def start(self) -> None:
        try:
            async with asyncio.timeout(INITIAL_SYNC_TIMEOUT_SECONDS):
                await self.revocations.sync()
        except Exception as exc:  # the poller keeps trying
            log.warning("revocation.initial_sync_failed", error=error_summary(exc))
        self.revocations.start()

    async def stop(self) -> None:
        await self.revocations.stop()
        await self.upstreams.close()
