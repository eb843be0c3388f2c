"""Names and e-mail addresses of users, from the auth service (LookupUsers),
for member lists, usage reports, invites bound to an address and the name
of a personal workspace."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from omnihub.auth.v1 import auth_pb2, auth_pb2_grpc

from libs.grpc.client import Upstreams
from libs.grpc.status import from_rpc_error

# Auth answers at most this many users per call.
USERS_PER_CALL = 500


@dataclass(frozen=True)
class Person:
    id: str
    name: str
    email: str
    avatar_url: str


class UserDirectory:
    def __init__(
        self, stub: auth_pb2_grpc.AuthServiceAsyncStub, upstreams: Upstreams
    ) -> None:
        self._stub = stub
        self._upstreams = upstreams

    async def people(self, user_ids: list[str]) -> dict[str, Person]:
        """The users auth knows among `user_ids`, by id."""
        found: dict[str, Person] = {}
        unique = list(dict.fromkeys(user_ids))
        for start in range(0, len(unique), USERS_PER_CALL):
            request = auth_pb2.LookupUsersRequest(
                user_ids=unique[start : start + USERS_PER_CALL]
            )
            found.update({p.id: p for p in await self._lookup(request)})
        return found

    async def person(self, user_id: str) -> Person | None:
        return (await self.people([user_id])).get(user_id)

    async def by_email(self, email: str) -> Person | None:
        found = await self._lookup(auth_pb2.LookupUsersRequest(email=email))
        return found[0] if found else None

    async def _lookup(self, request: auth_pb2.LookupUsersRequest) -> list[Person]:
        try:
            reply = await self._stub.LookupUsers(
                request,
                timeout=self._upstreams.timeout(),
                metadata=self._upstreams.metadata(),
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        return [
            Person(user.id, user.name, user.email, user.avatar_url)
            for user in reply.users
        ]
