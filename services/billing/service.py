"""Business rules of the billing service: the ledger, holds and idempotency.

Functions take a database session and never commit; the servicer owns the
transaction, so an operation's idempotency record, its balance changes and
its ledger entries commit together or not at all. A failed operation (say,
insufficient credits) therefore leaves no trace, and its key stays free.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from libs.errors import (
    DomainError,
    FailedPrecondition,
    FieldViolation,
    IdempotencyKeyReused,
    InsufficientCredits,
    InvalidArgument,
    NotFound,
    Unauthenticated,
    format_credits,
)
from libs.grpc.identity import Caller
from libs.logs import get_logger
from services.billing import repository
from services.billing.models import OWNER_TYPES, Hold, LedgerEntry, Owner
from services.billing.repository import AccountBalance, Unbalanced

log = get_logger(__name__)

# 10^15 micro-credits is a billion credits: far above any real movement,
# far below what a BIGINT sum of many of them could overflow.
MAX_AMOUNT_MICROS = 10**15
MAX_KEY_LENGTH = 255
MAX_REASON_LENGTH = 500
MAX_REFERENCE_LENGTH = 255
MAX_ACTOR_LENGTH = 255
MAX_TAGS = 16
MAX_TAG_KEY_LENGTH = 64
MAX_TAG_VALUE_LENGTH = 256
MAX_BALANCES = 500
MAX_USAGE_GROUPS = 4
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
SIGNUP_REASON = "Sign-up credits"
# PostgreSQL text and JSONB cannot store U+0000; refuse it as bad input
# rather than fail on it inside the transaction.
NUL = "\x00"
_NUL_MESSAGE = "{field} must not contain a NUL character."
# Stands in for a field that failed validation; never reaches the database
# because the violations are raised first.
_NIL_UUID = uuid.UUID(int=0)


@dataclass(frozen=True)
class AccountRef:
    """An account as a caller names it, not yet validated."""

    owner_type: str
    owner_id: str


# Replies. Each money movement's reply is stored with its operation and
# rebuilt from there for every retry, so retries get byte-identical replies.


@dataclass(frozen=True)
class Outcome:
    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(**data)


@dataclass(frozen=True)
class Entry(Outcome):
    id: int
    owner_type: str
    owner_id: str
    kind: str
    amount: int
    balance_after: int
    reason: str
    reference: str
    tags: dict[str, str]
    created_at: datetime

    @classmethod
    def of(cls, row: LedgerEntry, owner: Owner) -> Entry:
        return cls(
            id=row.id,
            owner_type=owner.type,
            owner_id=str(owner.id),
            kind=row.kind,
            amount=row.amount,
            balance_after=row.balance_after,
            reason=row.reason,
            reference=row.reference,
            tags=dict(row.tags),
            created_at=row.created_at,
        )

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "created_at": self.created_at.isoformat()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(**{**data, "created_at": datetime.fromisoformat(data["created_at"])})


@dataclass(frozen=True)
class HoldPlaced(Outcome):
    hold_id: str
    balance_after: int


@dataclass(frozen=True)
class Captured(Outcome):
    captured: int
    released: int
    balance_after: int


@dataclass(frozen=True)
class Released(Outcome):
    released: int
    balance_after: int


@dataclass(frozen=True)
class Transferred(Outcome):
    from_balance_after: int
    to_balance_after: int


@dataclass(frozen=True)
class SignupGranted(Outcome):
    granted: int
    balance: int


@dataclass(frozen=True)
class HoldsReleased:
    holds: int
    released: int


@dataclass(frozen=True)
class Balance:
    balance: int
    held: int


@dataclass(frozen=True)
class OwnedBalance:
    owner_type: str
    owner_id: str
    balance: int
    held: int


@dataclass(frozen=True)
class UsageGroup:
    values: tuple[str, ...]
    count: int
    captured: int


@dataclass(frozen=True)
class PublicSettings:
    """What anyone may know of the billing settings."""

    signup_credits_micros: int
    credit_price_paise: int


@dataclass(frozen=True)
class EntryPage:
    entries: list[Entry]
    next_page_token: str


OutcomeT = TypeVar("OutcomeT", bound=Outcome)


class Checks:
    """Collects every field violation of a request and raises them together."""

    def __init__(self) -> None:
        self._violations: list[FieldViolation] = []

    def fail(self, field: str, message: str) -> None:
        self._violations.append(FieldViolation(field, message))

    def done(self) -> None:
        if self._violations:
            raise InvalidArgument(
                self._violations[0].message, violations=tuple(self._violations)
            )

    def owner(self, field: str, ref: AccountRef) -> Owner:
        if ref.owner_type not in OWNER_TYPES:
            self.fail(f"{field}.owner_type", "Name the account's owner type.")
        return Owner(ref.owner_type, self.uuid(f"{field}.owner_id", ref.owner_id))

    def uuid(self, field: str, value: str) -> uuid.UUID:
        try:
            return uuid.UUID(value)
        except ValueError:
            self.fail(field, f"{field} must be a UUID.")
            return _NIL_UUID

    def amount(self, field: str, value: int, *, minimum: int = 1) -> int:
        if not minimum <= value <= MAX_AMOUNT_MICROS:
            self.fail(
                field,
                f"{field} must be between {minimum} and {MAX_AMOUNT_MICROS} "
                "micro-credits.",
            )
        return value

    def key(self, value: str) -> str:
        if not 1 <= len(value) <= MAX_KEY_LENGTH:
            self.fail(
                "idempotency_key",
                f"idempotency_key must be 1 to {MAX_KEY_LENGTH} characters long.",
            )
        elif NUL in value:
            self.fail("idempotency_key", _NUL_MESSAGE.format(field="idempotency_key"))
        return value

    def text(
        self, field: str, value: str, limit: int, *, required: bool = False
    ) -> str:
        if required and not value.strip():
            self.fail(field, f"{field} is required.")
        elif len(value) > limit:
            self.fail(field, f"{field} must be at most {limit} characters long.")
        elif NUL in value:
            self.fail(field, _NUL_MESSAGE.format(field=field))
        return value

    def tags(self, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_TAGS:
            self.fail("tags", f"At most {MAX_TAGS} tags are allowed.")
        for key, tag in value.items():
            if (
                not 1 <= len(key) <= MAX_TAG_KEY_LENGTH
                or len(tag) > MAX_TAG_VALUE_LENGTH
                or NUL in key + tag
            ):
                self.fail(
                    "tags",
                    f"Tag names are 1 to {MAX_TAG_KEY_LENGTH} characters and "
                    f"values at most {MAX_TAG_VALUE_LENGTH}, without NUL.",
                )
                break
        return dict(value)


def _fingerprint(kind: str, request: dict[str, Any]) -> bytes:
    canonical = json.dumps(
        {"kind": kind, **request}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).digest()


def _lock_order(owner: Owner) -> tuple[str, uuid.UUID]:
    return owner.type, owner.id


class BillingService:
    # Reading

    async def balance(
        self, db: AsyncSession, caller: Caller, account: AccountRef
    ) -> Balance:
        checks = Checks()
        owner = checks.owner("account", account)
        checks.done()
        _require_readable(caller, owner)
        found = await repository.account_by_owner(db, owner)
        return Balance(found.balance, found.held) if found else Balance(0, 0)

    async def balances(
        self, db: AsyncSession, caller: Caller, accounts: list[AccountRef]
    ) -> list[OwnedBalance]:
        """Several balances in one query, in the order asked; each account
        under the same rule as `balance`."""
        checks = Checks()
        if len(accounts) > MAX_BALANCES:
            checks.fail("accounts", f"Ask for at most {MAX_BALANCES} accounts.")
        owners = [
            checks.owner(f"accounts[{index}]", account)
            for index, account in enumerate(accounts)
        ]
        checks.done()
        for owner in owners:
            _require_readable(caller, owner)
        found = await repository.balances_of(db, list(set(owners)))
        zero = AccountBalance(_NIL_UUID, 0, 0)
        return [
            OwnedBalance(
                owner.type,
                str(owner.id),
                found.get(owner, zero).balance,
                found.get(owner, zero).held,
            )
            for owner in owners
        ]

    async def summarize_usage(
        self, db: AsyncSession, tags: dict[str, str], group_by: list[str]
    ) -> list[UsageGroup]:
        """What captured holds carrying `tags` charged, per group."""
        checks = Checks()
        if not tags:
            checks.fail("tags", "Name at least one tag to select holds by.")
        tags = checks.tags(tags)
        if len(group_by) > MAX_USAGE_GROUPS or len(set(group_by)) < len(group_by):
            checks.fail(
                "group_by", f"Group by at most {MAX_USAGE_GROUPS} different tags."
            )
        for name in group_by:
            checks.text("group_by", name, MAX_TAG_KEY_LENGTH, required=True)
        checks.done()
        totals = await repository.captured_usage(db, tags, group_by)
        return [UsageGroup(t.values, t.count, t.captured) for t in totals]

    async def transactions(
        self,
        db: AsyncSession,
        caller: Caller,
        account: AccountRef,
        page_size: int,
        page_token: str,
    ) -> EntryPage:
        checks = Checks()
        owner = checks.owner("account", account)
        if page_size < 0:
            checks.fail("page_size", "page_size may not be negative.")
        before_id = _page_position(checks, page_token)
        checks.done()
        _require_readable(caller, owner)
        found = await repository.account_by_owner(db, owner)
        if found is None:
            return EntryPage([], "")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        rows = await repository.entries_page(db, found.account_id, before_id, size + 1)
        entries = [Entry.of(row, owner) for row in rows[:size]]
        more = len(rows) > size
        return EntryPage(entries, str(entries[-1].id) if more else "")

    # Money in

    async def grant(
        self,
        db: AsyncSession,
        account: AccountRef,
        amount: int,
        key: str,
        reason: str,
    ) -> Entry:
        checks = Checks()
        owner = checks.owner("account", account)
        checks.amount("amount_micros", amount)
        checks.key(key)
        checks.text("reason", reason, MAX_REASON_LENGTH)
        checks.done()

        async def run() -> Entry:
            return await self._credit(db, owner, "grant", amount, key, reason=reason)

        request = {"account": str(owner), "amount": amount, "reason": reason}
        return await _once(db, key, "grant", request, Entry, run)

    async def grant_signup_credits(
        self, db: AsyncSession, user_id: str
    ) -> SignupGranted:
        """The configured sign-up credits, once per user however often called."""
        checks = Checks()
        owner = Owner("user", checks.uuid("user_id", user_id))
        checks.done()
        key = f"signup:{owner.id}"

        async def run() -> SignupGranted:
            amount = await repository.signup_credits(db)
            if amount == 0:
                found = await repository.account_by_owner(db, owner)
                return SignupGranted(0, found.balance if found else 0)
            entry = await self._credit(
                db, owner, "grant", amount, key, reason=SIGNUP_REASON
            )
            return SignupGranted(amount, entry.balance_after)

        return await _once(
            db, key, "signup", {"user_id": str(owner.id)}, SignupGranted, run
        )

    async def purchase(
        self,
        db: AsyncSession,
        user_id: uuid.UUID,
        amount: int,
        key: str,
        reason: str,
        reference: str,
        tags: dict[str, str],
    ) -> Entry:
        """Credits a user paid for, once per key: payments use their order."""
        checks = Checks()
        checks.amount("amount_micros", amount)
        checks.key(key)
        checks.done()
        owner = Owner("user", user_id)

        async def run() -> Entry:
            return await self._credit(
                db,
                owner,
                "purchase",
                amount,
                key,
                reason=reason,
                reference=reference,
                tags=tags,
            )

        request = {"account": str(owner), "amount": amount, "reference": reference}
        return await _once(db, key, "purchase", request, Entry, run)

    async def refund(
        self,
        db: AsyncSession,
        account: AccountRef,
        amount: int,
        key: str,
        reason: str,
        reference: str,
    ) -> Entry:
        checks = Checks()
        owner = checks.owner("account", account)
        checks.amount("amount_micros", amount)
        checks.key(key)
        checks.text("reason", reason, MAX_REASON_LENGTH)
        checks.text("reference", reference, MAX_REFERENCE_LENGTH)
        checks.done()

        async def run() -> Entry:
            return await self._credit(
                db, owner, "refund", amount, key, reason=reason, reference=reference
            )

        request = {
            "account": str(owner),
            "amount": amount,
            "reason": reason,
            "reference": reference,
        }
        return await _once(db, key, "refund", request, Entry, run)

    async def _credit(
        self,
        db: AsyncSession,
        owner: Owner,
        kind: str,
        amount: int,
        key: str,
        *,
        reason: str = "",
        reference: str = "",
        tags: dict[str, str] | None = None,
    ) -> Entry:
        account = await repository.credit(db, owner, amount)
        row = await repository.append_entry(
            db,
            account_id=account.account_id,
            kind=kind,
            amount=amount,
            balance_after=account.balance,
            operation_key=key,
            reason=reason,
            reference=reference,
            tags=tags,
        )
        log.info("credits.added", kind=kind, account=str(owner), amount_micros=amount)
        return Entry.of(row, owner)

    # Holds

    async def hold(
        self,
        db: AsyncSession,
        account: AccountRef,
        amount: int,
        key: str,
        reason: str,
        reference: str,
        tags: dict[str, str],
    ) -> HoldPlaced:
        checks = Checks()
        owner = checks.owner("account", account)
        checks.amount("amount_micros", amount)
        checks.key(key)
        checks.text("reason", reason, MAX_REASON_LENGTH)
        checks.text("reference", reference, MAX_REFERENCE_LENGTH)
        tags = checks.tags(tags)
        checks.done()

        async def run() -> HoldPlaced:
            account = await repository.debit(db, owner, amount, hold=True)
            if account is None:
                raise await _insufficient(db, owner, amount)
            hold_id = await repository.insert_hold(
                db, account.account_id, amount, reason, reference, tags
            )
            await repository.append_entry(
                db,
                account_id=account.account_id,
                kind="hold",
                amount=-amount,
                balance_after=account.balance,
                operation_key=key,
                reason=reason,
                reference=reference,
                tags=tags,
                hold_id=hold_id,
            )
            log.info(
                "credits.held",
                account=str(owner),
                amount_micros=amount,
                hold_id=str(hold_id),
            )
            return HoldPlaced(str(hold_id), account.balance)

        request = {
            "account": str(owner),
            "amount": amount,
            "reason": reason,
            "reference": reference,
            "tags": tags,
        }
        return await _once(db, key, "hold", request, HoldPlaced, run)

    async def capture(
        self, db: AsyncSession, hold_id: str, amount: int, key: str
    ) -> Captured:
        """Charge `amount` of a hold (zero charges nothing) and return the rest.

        The capture entry carries the returned part, zero included, so every
        hold's settlement is in the ledger.
        """
        checks = Checks()
        parsed = checks.uuid("hold_id", hold_id)
        checks.amount("amount_micros", amount, minimum=0)
        checks.key(key)
        checks.done()

        async def run() -> Captured:
            hold = await repository.capture_hold(db, parsed, amount)
            if hold is None:
                raise await _unsettled_hold_error(db, parsed, amount)
            returned = hold.amount - amount
            account = await _settle(db, hold, "capture", returned, key)
            log.info(
                "credits.captured",
                hold_id=str(hold.id),
                amount_micros=amount,
                returned_micros=returned,
            )
            return Captured(amount, returned, account.balance)

        request = {"hold_id": str(parsed), "amount": amount}
        return await _once(db, key, "capture", request, Captured, run)

    async def release(self, db: AsyncSession, hold_id: str, key: str) -> Released:
        checks = Checks()
        parsed = checks.uuid("hold_id", hold_id)
        checks.key(key)
        checks.done()

        async def run() -> Released:
            hold = await repository.release_hold(db, parsed)
            if hold is None:
                raise await _unsettled_hold_error(db, parsed)
            account = await _settle(db, hold, "release", hold.amount, key)
            log.info(
                "credits.released", hold_id=str(hold.id), amount_micros=hold.amount
            )
            return Released(hold.amount, account.balance)

        return await _once(db, key, "release", {"hold_id": str(parsed)}, Released, run)

    # Moves and corrections

    async def transfer(
        self,
        db: AsyncSession,
        source: AccountRef,
        target: AccountRef,
        amount: int,
        key: str,
        reason: str,
        tags: dict[str, str],
    ) -> Transferred:
        checks = Checks()
        debited = checks.owner("from_account", source)
        credited = checks.owner("to_account", target)
        if debited == credited:
            checks.fail("to_account", "A transfer needs two different accounts.")
        checks.amount("amount_micros", amount)
        checks.key(key)
        checks.text("reason", reason, MAX_REASON_LENGTH)
        tags = checks.tags(tags)
        checks.done()

        async def run() -> Transferred:
            after = await _move(db, debited, credited, amount)
            for owner, other, signed in (
                (debited, credited, -amount),
                (credited, debited, amount),
            ):
                await repository.append_entry(
                    db,
                    account_id=after[owner].account_id,
                    kind="transfer",
                    amount=signed,
                    balance_after=after[owner].balance,
                    operation_key=key,
                    reason=reason,
                    reference=str(other),
                    tags=tags,
                )
            log.info(
                "credits.transferred",
                source=str(debited),
                target=str(credited),
                amount_micros=amount,
            )
            return Transferred(after[debited].balance, after[credited].balance)

        request = {
            "from": str(debited),
            "to": str(credited),
            "amount": amount,
            "reason": reason,
            "tags": tags,
        }
        return await _once(db, key, "transfer", request, Transferred, run)

    async def adjust(
        self,
        db: AsyncSession,
        account: AccountRef,
        delta: int,
        key: str,
        reason: str,
        actor: str,
    ) -> Entry:
        """An operator's correction; it may not take the balance below zero."""
        checks = Checks()
        owner = checks.owner("account", account)
        if delta == 0 or abs(delta) > MAX_AMOUNT_MICROS:
            checks.fail(
                "delta_micros",
                f"delta_micros must be non-zero and at most {MAX_AMOUNT_MICROS} "
                "micro-credits either way.",
            )
        checks.key(key)
        checks.text("reason", reason, MAX_REASON_LENGTH, required=True)
        checks.text("actor", actor, MAX_ACTOR_LENGTH, required=True)
        checks.done()

        async def run() -> Entry:
            if delta > 0:
                account = await repository.credit(db, owner, delta)
            else:
                found = await repository.debit(db, owner, -delta)
                if found is None:
                    raise await _insufficient(db, owner, -delta)
                account = found
            row = await repository.append_entry(
                db,
                account_id=account.account_id,
                kind="adjustment",
                amount=delta,
                balance_after=account.balance,
                operation_key=key,
                reason=reason,
                tags={"actor": actor},
            )
            log.info(
                "credits.adjusted", account=str(owner), delta_micros=delta, actor=actor
            )
            return Entry.of(row, owner)

        request = {
            "account": str(owner),
            "delta": delta,
            "reason": reason,
            "actor": actor,
        }
        return await _once(db, key, "adjustment", request, Entry, run)

    # A deleted user (the admin service's user deletion)

    async def release_open_holds(self, db: AsyncSession, user_id: str) -> HoldsReleased:
        """Return every hold still open on the user's own account. The
        ledger stays: it is an append-only financial record that names the
        user by id only. Each release is keyed by its hold, so a repeat
        releases nothing twice."""
        checks = Checks()
        owner = Owner("user", checks.uuid("user_id", user_id))
        checks.done()
        account = await repository.account_by_owner(db, owner)
        if account is None:
            return HoldsReleased(0, 0)
        count = released = 0
        for hold_id in await repository.open_hold_ids(db, account.account_id):
            try:
                # A savepoint: a hold its owner settled meanwhile leaves no
                # half-claimed key behind.
                async with db.begin_nested():
                    outcome = await self.release(
                        db, str(hold_id), f"user-deleted:{hold_id}"
                    )
            except FailedPrecondition:
                continue
            count += 1
            released += outcome.released
        log.info(
            "billing.user_holds_released",
            user_id=user_id,
            holds=count,
            released_micros=released,
        )
        return HoldsReleased(count, released)

    # Settings and bookkeeping (no RPC of their own; the admin service and
    # `services.billing.main reconcile` use them)

    async def signup_credits(self, db: AsyncSession) -> int:
        return await repository.signup_credits(db)

    async def public_settings(self, db: AsyncSession) -> PublicSettings:
        found = await repository.public_settings(db)
        return PublicSettings(found.signup_credits_micros, found.credit_price_paise)

    async def active_plan(self, db: AsyncSession, user_id: str) -> str:
        """The user's paid-up plan, "" for none (or an id that is no UUID)."""
        try:
            parsed = uuid.UUID(user_id)
        except ValueError:
            return ""
        return await repository.active_plan(db, parsed) or ""

    async def update_settings(
        self,
        db: AsyncSession,
        signup_credits_micros: int | None,
        credit_price_paise: int | None,
    ) -> PublicSettings:
        """Change the settings given; sign-ups read them at grant time, so
        the next one gets the new credits."""
        checks = Checks()
        values: dict[str, int] = {}
        if signup_credits_micros is not None:
            values["signup_credits_micros"] = checks.amount(
                "signup_credits_micros", signup_credits_micros, minimum=0
            )
        if credit_price_paise is not None:
            values["credit_price_paise"] = checks.amount(
                "credit_price_paise", credit_price_paise
            )
        checks.done()
        if values:
            await repository.update_settings(db, values)
            log.info("billing.settings_updated", **values)
        return await self.public_settings(db)

    async def set_signup_credits(self, db: AsyncSession, micros: int) -> None:
        checks = Checks()
        checks.amount("signup_credits_micros", micros, minimum=0)
        checks.done()
        await repository.set_signup_credits(db, micros)
        log.info("billing.signup_credits_set", signup_credits_micros=micros)

    async def unbalanced_accounts(self, db: AsyncSession) -> list[Unbalanced]:
        return await repository.unbalanced_accounts(db)


async def _once(
    db: AsyncSession,
    key: str,
    kind: str,
    request: dict[str, Any],
    outcome: type[OutcomeT],
    run: Callable[[], Awaitable[OutcomeT]],
) -> OutcomeT:
    """Run a money movement once per idempotency key.

    The key is claimed first, in the movement's own transaction: a
    concurrent duplicate waits on it and then finds the stored reply. The
    same key with a different request is refused rather than answered.
    """
    fingerprint = _fingerprint(kind, request)
    if not await repository.claim_operation(db, key, kind, fingerprint):
        stored = await repository.stored_operation(db, key)
        if stored.fingerprint != fingerprint:
            log.info(
                "billing.idempotency_key_reused", kind=kind, first_kind=stored.kind
            )
            raise IdempotencyKeyReused()
        return outcome.from_json(stored.result)
    result = await run()
    await repository.record_result(db, key, result.to_json())
    return result


async def _move(
    db: AsyncSession, debited: Owner, credited: Owner, amount: int
) -> dict[Owner, AccountBalance]:
    """Debit one account and credit the other. The two rows are locked in
    one global order, so transfers in opposite directions cannot deadlock."""
    after: dict[Owner, AccountBalance] = {}
    for owner in sorted((debited, credited), key=_lock_order):
        if owner == debited:
            found = await repository.debit(db, debited, amount)
            if found is None:
                raise await _insufficient(db, debited, amount)
            after[owner] = found
        else:
            after[owner] = await repository.credit(db, credited, amount)
    return after


async def _settle(
    db: AsyncSession,
    hold: Hold,
    kind: str,
    returned: int,
    key: str,
) -> AccountBalance:
    """Close a settled hold on its account and write its settlement entry."""
    account = await repository.settle_held(db, hold.account_id, hold.amount, returned)
    await repository.append_entry(
        db,
        account_id=account.account_id,
        kind=kind,
        amount=returned,
        balance_after=account.balance,
        operation_key=key,
        reason=hold.reason,
        reference=hold.reference,
        tags=dict(hold.tags),
        hold_id=hold.id,
    )
    return account


async def _insufficient(
    db: AsyncSession, owner: Owner, required: int
) -> InsufficientCredits:
    found = await repository.account_by_owner(db, owner)
    return InsufficientCredits.amounts(required, found.balance if found else 0)


async def _unsettled_hold_error(
    db: AsyncSession, hold_id: uuid.UUID, capture: int | None = None
) -> DomainError:
    """Why a hold could not be settled."""
    hold = await repository.hold_by_id(db, hold_id)
    if hold is None:
        return NotFound("No such hold.")
    if hold.status != "held":
        return FailedPrecondition(f"This hold was already {hold.status}.")
    assert capture is not None
    return InvalidArgument.for_field(
        "amount_micros",
        f"The capture ({format_credits(capture)} credits) is more than the "
        f"hold ({format_credits(hold.amount)} credits).",
    )


def _page_position(checks: Checks, page_token: str) -> int | None:
    """The entry id a page token continues after; tokens are entry ids."""
    if not page_token:
        return None
    if not page_token.isdigit() or len(page_token) > 19:
        checks.fail("page_token", "page_token is not one this service issued.")
        return None
    return int(page_token)


def _require_readable(caller: Caller, owner: Owner) -> None:
    """A user token limits the call to that user's own account, even when a
    service (the gateway) forwards it; a service alone may read any account.
    Someone else's account is reported missing rather than forbidden, so its
    existence is not revealed."""
    if caller.token_error is not None:
        raise caller.token_error
    if caller.user is not None:
        if owner.type != "user" or owner.id != _subject_id(caller.user.subject):
            raise NotFound("No such account.")
        return
    if caller.service is None:
        raise Unauthenticated()


def _subject_id(subject: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(subject)
    except ValueError:
        return None
