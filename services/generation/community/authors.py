"""Who wrote a post, as the gallery shows them: the nickname and avatar the
auth service holds now (a renamed author shows the new name), looked up in
batches and remembered for a short while, since every feed page needs them.

The gallery never shows a name or e-mail address. When auth cannot be
reached the feed still answers: callers fall back to the nickname stored
on the post at publish time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import grpc
from omnihub.auth.v1 import auth_pb2, auth_pb2_grpc

from libs.errors import DomainError
from libs.grpc.client import Upstreams
from libs.grpc.status import from_rpc_error
from libs.logs import get_logger

log = get_logger(__name__)

ANONYMOUS_NICKNAME = "Anonymous"
# Auth answers at most this many users per call.
USERS_PER_CALL = 500
REMEMBER_SECONDS = 30.0
REMEMBER_AT_MOST = 10_000


@dataclass(frozen=True)
class Author:
    nickname: str
    avatar_url: str


ANONYMOUS = Author(ANONYMOUS_NICKNAME, "")


class Authors:
    def __init__(
        self,
        stub: auth_pb2_grpc.AuthServiceAsyncStub,
        upstreams: Upstreams,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stub = stub
        self._upstreams = upstreams
        self._clock = clock
        self._remembered: dict[str, tuple[float, Author]] = {}

    async def of(self, user_ids: Iterable[str]) -> dict[str, Author]:
        """The authors among `user_ids` that auth knows, by id; empty for
        any it could not be asked about."""
        now = self._clock()
        found: dict[str, Author] = {}
        missing: list[str] = []
        for user_id in dict.fromkeys(user_ids):
            remembered = self._remembered.get(user_id)
            if remembered is not None and remembered[0] > now:
                found[user_id] = remembered[1]
            else:
                missing.append(user_id)
        for start in range(0, len(missing), USERS_PER_CALL):
            batch = missing[start : start + USERS_PER_CALL]
            found.update(await self._look_up(batch, now))
        return found

    async def one(self, user_id: str) -> Author:
        return (await self.of([user_id])).get(user_id, ANONYMOUS)

    async def _look_up(self, user_ids: list[str], now: float) -> dict[str, Author]:
        try:
            reply = await self._stub.LookupUsers(
                auth_pb2.LookupUsersRequest(user_ids=user_ids),
                timeout=self._upstreams.timeout(),
                metadata=self._upstreams.metadata(),
            )
        except grpc.aio.AioRpcError as exc:
            error: DomainError = from_rpc_error(exc)
            log.warning("community.authors_unavailable", code=error.code)
            return {}
        authors = {
            user.id: Author(user.nickname or ANONYMOUS_NICKNAME, user.avatar_url)
            for user in reply.users
        }
        self._remember(authors, now)
        return authors

    def _remember(self, authors: dict[str, Author], now: float) -> None:
        if len(self._remembered) + len(authors) > REMEMBER_AT_MOST:
            self._remembered = {
                key: entry for key, entry in self._remembered.items() if entry[0] > now
            }
        while self._remembered and (
            len(self._remembered) + len(authors) > REMEMBER_AT_MOST
        ):
            # Dicts keep insertion order: the oldest entry goes first.
            del self._remembered[next(iter(self._remembered))]
        expires = now + REMEMBER_SECONDS
        for user_id, author in authors.items():
            self._remembered.pop(user_id, None)
            self._remembered[user_id] = (expires, author)
