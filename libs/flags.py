"""Feature flags as any process sees them: a copy of the admin service's
flags, refreshed in the background.

Reading a flag never waits for the admin service. While it cannot be
reached the last values it gave stay in force; before it has ever answered,
each flag has its default (DEFAULTS, or the caller's). An operator's change
reaches every process within one poll interval (ADMIN_POLL_INTERVAL).

    flags = FeatureFlags(runtime.upstreams, interval=settings.admin_poll_interval)
    flags.start()
    if not flags.enabled("video_generation"):
        raise FeatureDisabled(...)
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod

import grpc
from omnihub.admin.v1 import admin_pb2, admin_pb2_grpc

from libs.grpc.client import Upstreams
from libs.logs import get_logger

log = get_logger(__name__)

VIDEO_GENERATION = "video_generation"
COMMUNITY_GALLERY = "community_gallery"
MAINTENANCE_MODE = "maintenance_mode"
# A flag nobody has set yet; the admin service seeds the same values.
DEFAULTS = {VIDEO_GENERATION: True, COMMUNITY_GALLERY: True, MAINTENANCE_MODE: False}
DEFAULT_MAINTENANCE_MESSAGE = (
    "OmniHub is down for maintenance. Please try again in a few minutes."
)
DEFAULT_INTERVAL_SECONDS = 2.0
# A fetch that takes longer is abandoned; the next poll tries again.
FETCH_TIMEOUT_SECONDS = 1.0


class PolledCache(ABC):
    """Something read from another service every `interval` seconds by a
    background task, and read from memory by requests."""

    name = "cache"

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self.fetched = False

    @abstractmethod
    async def fetch(self) -> None:
        """Read the current values and keep them (raise to keep the old)."""

    async def refresh(self) -> bool:
        """Fetch once; False (old values kept) when the source failed."""
        try:
            async with asyncio.timeout(FETCH_TIMEOUT_SECONDS):
                await self.fetch()
        except (grpc.aio.AioRpcError, TimeoutError) as exc:
            self._note_failure(exc)
            return False
        if self._failing:
            log.info("polled_cache.recovered", cache=self.name)
        self._failing = False
        self.fetched = True
        return True

    def _note_failure(self, exc: BaseException) -> None:
        # Once per outage: a poll every two seconds must not flood the log.
        if not self._failing:
            code = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else ""
            log.warning(
                "polled_cache.unavailable",
                cache=self.name,
                code=code or type(exc).__name__,
            )
        self._failing = True

    async def prime_and_start(self) -> None:
        """Fetch once, so the first requests see the real values when the
        source is up, then keep polling."""
        await self.refresh()
        self.start()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._poll(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _poll(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self._interval)


class FeatureFlags(PolledCache):
    name = "feature_flags"

    def __init__(
        self, upstreams: Upstreams, interval: float = DEFAULT_INTERVAL_SECONDS
    ) -> None:
        super().__init__(interval)
        self._upstreams = upstreams
        self._stub = admin_pb2_grpc.AdminServiceStub(upstreams.channel("admin"))
        self._flags: dict[str, bool] = {}
        self._maintenance_message = ""

    def enabled(self, key: str, default: bool | None = None) -> bool:
        """The flag's last known state; else `default`; else DEFAULTS; else
        off."""
        known = self._flags.get(key)
        if known is not None:
            return known
        if default is not None:
            return default
        return DEFAULTS.get(key, False)

    @property
    def maintenance_message(self) -> str:
        return self._maintenance_message or DEFAULT_MAINTENANCE_MESSAGE

    async def fetch(self) -> None:
        reply: admin_pb2.GetFeatureFlagsResponse = await self._stub.GetFeatureFlags(
            admin_pb2.GetFeatureFlagsRequest(),
            timeout=FETCH_TIMEOUT_SECONDS,
            metadata=self._upstreams.metadata(),
        )
        self._flags = dict(reply.flags)
        self._maintenance_message = reply.maintenance_message
