from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

import bcrypt
import pytest
from argon2 import PasswordHasher, Type

from services.auth.passwords import PasswordHashing

PASSWORD = "correct horse battery"
# The seeded admin hash of the original platform: its last character carries
# non-zero padding bits, so bcrypt cannot match any password against it.
MALFORMED_BCRYPT = "$2a$10$xVqYLGxPz9y8oN5Z3Gk4S.HxGGxNxZ6U8k9qRKhRqL6XKwQZwQZwQ"


@pytest.fixture(scope="module")
def passwords() -> PasswordHashing:
    return PasswordHashing()


def legacy_bcrypt(password: str, prefix: str = "$2b$") -> str:
    """A hash as the original platform's JS bcrypt (cost 10) stored it."""
    hashed = bcrypt.hashpw(password.encode()[:72], bcrypt.gensalt(rounds=10))
    return prefix + hashed.decode()[len("$2b$") :]


class TestArgon2:
    async def test_new_hashes_are_argon2id(self, passwords: PasswordHashing) -> None:
        hashed = await passwords.hash(PASSWORD)

        assert hashed.startswith("$argon2id$")

    async def test_same_password_hashes_differently_each_time(
        self, passwords: PasswordHashing
    ) -> None:
        assert await passwords.hash(PASSWORD) != await passwords.hash(PASSWORD)

    async def test_right_password_verifies_without_upgrade(
        self, passwords: PasswordHashing
    ) -> None:
        hashed = await passwords.hash(PASSWORD)

        verification = await passwords.verify(hashed, PASSWORD)

        assert verification.ok
        assert verification.upgraded_hash is None

    async def test_wrong_password_fails(self, passwords: PasswordHashing) -> None:
        hashed = await passwords.hash(PASSWORD)

        verification = await passwords.verify(hashed, PASSWORD + "!")

        assert not verification.ok
        assert verification.upgraded_hash is None

    async def test_weaker_parameters_are_upgraded_on_success(
        self, passwords: PasswordHashing
    ) -> None:
        weak = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)

        verification = await passwords.verify(weak.hash(PASSWORD), PASSWORD)

        assert verification.ok
        assert verification.upgraded_hash is not None
        assert not PasswordHasher().check_needs_rehash(verification.upgraded_hash)

    async def test_argon2i_hash_is_upgraded_to_argon2id(
        self, passwords: PasswordHashing
    ) -> None:
        older = PasswordHasher(type=Type.I)

        verification = await passwords.verify(older.hash(PASSWORD), PASSWORD)

        assert verification.ok
        assert verification.upgraded_hash is not None
        assert verification.upgraded_hash.startswith("$argon2id$")


class TestLegacyBcrypt:
    @pytest.mark.parametrize("prefix", ["$2a$", "$2b$", "$2y$"])
    async def test_legacy_hash_verifies_and_is_upgraded(
        self, passwords: PasswordHashing, prefix: str
    ) -> None:
        verification = await passwords.verify(legacy_bcrypt(PASSWORD, prefix), PASSWORD)

        assert verification.ok
        assert verification.upgraded_hash is not None
        assert verification.upgraded_hash.startswith("$argon2id$")
        upgraded = await passwords.verify(verification.upgraded_hash, PASSWORD)
        assert upgraded.ok

    async def test_wrong_password_against_legacy_hash_fails_without_upgrade(
        self, passwords: PasswordHashing
    ) -> None:
        verification = await passwords.verify(legacy_bcrypt(PASSWORD), "wrong")

        assert not verification.ok
        assert verification.upgraded_hash is None

    async def test_only_the_first_72_bytes_count_as_in_the_original(
        self, passwords: PasswordHashing
    ) -> None:
        long_password = "é" * 50  # 100 bytes in UTF-8
        stored = legacy_bcrypt(long_password)

        verification = await passwords.verify(stored, long_password)

        assert verification.ok
        assert (await passwords.verify(stored, "é" * 36 + "tail")).ok

    async def test_malformed_legacy_hash_fails_without_error(
        self, passwords: PasswordHashing
    ) -> None:
        verification = await passwords.verify(MALFORMED_BCRYPT, "admin123")

        assert not verification.ok


class TestUnusableHashes:
    @pytest.mark.parametrize("stored", [None, ""])
    async def test_account_without_password_never_verifies(
        self, passwords: PasswordHashing, stored: str | None
    ) -> None:
        verification = await passwords.verify(stored, "")

        assert not verification.ok

    @pytest.mark.parametrize(
        "stored", ["plaintext-password", "$argon2id$garbage", "$pbkdf2-sha256$1$x$y"]
    )
    async def test_unknown_hash_format_fails_without_error(
        self, passwords: PasswordHashing, stored: str
    ) -> None:
        verification = await passwords.verify(stored, "plaintext-password")

        assert not verification.ok


async def _seconds(work: Awaitable[object]) -> float:
    started = time.perf_counter()
    await work
    return time.perf_counter() - started


class TestTiming:
    async def test_missing_account_costs_about_as_much_as_a_wrong_password(
        self, passwords: PasswordHashing
    ) -> None:
        hashed = await passwords.hash(PASSWORD)

        # The fastest of a few runs each, so that a busy machine does not decide.
        wrong_password = min(
            [await _seconds(passwords.verify(hashed, "x")) for _ in range(3)]
        )
        missing_account = min(
            [await _seconds(passwords.burn_time("x")) for _ in range(3)]
        )

        assert missing_account > wrong_password / 3

    async def test_hashing_does_not_block_the_event_loop(
        self, passwords: PasswordHashing
    ) -> None:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        ticker = asyncio.create_task(tick())
        await asyncio.gather(*(passwords.hash(PASSWORD) for _ in range(2)))
        ticker.cancel()

        assert ticks > 3
