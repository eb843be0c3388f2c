"""Password hashing: argon2id for everything new; bcrypt hashes imported from
the original platform still verify and are replaced on the next sign-in.

Hashing costs tens of milliseconds of CPU, so it runs in a worker thread and
never blocks the event loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import bcrypt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
_BCRYPT_MAX_BYTES = 72


@dataclass(frozen=True)
class Verification:
    ok: bool
    # A fresh argon2id hash to store when the old one is bcrypt or weaker.
    upgraded_hash: str | None = None


class PasswordHashing:
    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self._hasher = hasher or PasswordHasher()
        # Compared against when an account does not exist, so that a wrong
        # e-mail costs as long as a wrong password.
        self._dummy_hash = self._hasher.hash("omnihub-dummy-password")

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> Verification:
        return await asyncio.to_thread(self._verify, stored_hash, password)

    async def burn_time(self, password: str) -> None:
        await self.verify(self._dummy_hash, password)

    def _verify(self, stored_hash: str | None, password: str) -> Verification:
        if not stored_hash:
            self._check_argon2(self._dummy_hash, password)
            return Verification(ok=False)
        if stored_hash.startswith(_BCRYPT_PREFIXES):
            ok = _check_bcrypt(stored_hash, password)
            return Verification(ok, self._hasher.hash(password) if ok else None)
        ok = self._check_argon2(stored_hash, password)
        if ok and self._hasher.check_needs_rehash(stored_hash):
            return Verification(ok=True, upgraded_hash=self._hasher.hash(password))
        return Verification(ok=ok)

    def _check_argon2(self, stored_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash, password)
        except (VerificationError, InvalidHashError):
            return False


def _check_bcrypt(stored_hash: str, password: str) -> bool:
    # The original hashed with a JS bcrypt that silently used only the first
    # 72 bytes; truncate the same way so its hashes keep verifying.
    secret = password.encode()[:_BCRYPT_MAX_BYTES]
    try:
        return bcrypt.checkpw(secret, stored_hash.encode())
    except ValueError:
        return False
