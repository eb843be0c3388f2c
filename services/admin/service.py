"""The rules of the admin service's core area: who may change what, what a
valid value is, and the audit entry every change writes.

Each service class takes a session and never commits (the servicer owns the
transaction), except where a change crosses into another service: settings
owned by the catalog or billing are staged as admin tasks with a pending
audit entry in the caller's transaction, and `SettingsService.apply` runs
them once it has committed.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from libs.config import Settings
from libs.errors import (
    DeadlineExceeded,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from libs.flags import DEFAULTS, MAINTENANCE_MODE
from libs.logs import get_logger
from services.admin import audit, repository
from services.admin import settings as catalogue
from services.admin.audit import Actor
from services.admin.models import (
    AUDIENCES,
    SEVERITIES,
    Announcement,
    AuditEntry,
    ErrorEntry,
    FeatureFlag,
    RateLimitRule,
)
from services.admin.owners import SettingOwners
from services.admin.repository import AuditFilter, ErrorFilter, Position, Spent
from services.admin.roles import SUPERADMIN, SUPPORT_OR_ABOVE, require
from services.admin.settings import BY_KEY, DEFINITIONS, Definition, SettingRefused
from services.admin.tasks import AdminTasks, TaskFailed

log = get_logger(__name__)

MAX_PAGE = 1000
DEFAULT_PAGE = 100
MEGABYTE = 1024 * 1024
CATALOG_TASK = "settings.catalog"
BILLING_TASK = "settings.billing"
_TASK_OF_SOURCE = {catalogue.CATALOG: CATALOG_TASK, catalogue.BILLING: BILLING_TASK}


def page_size(
    requested: int, default: int = DEFAULT_PAGE, maximum: int = MAX_PAGE
) -> int:
    return default if requested <= 0 else min(requested, maximum)


# Cursors name times in whole microseconds since this (floats would round).
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def encode_position(created_at: datetime, row_id: object) -> str:
    return f"{(created_at - EPOCH) // MICROSECOND}_{row_id}"


def decode_position(
    token: str, id_type: type[int] | type[uuid.UUID]
) -> Position | None:
    if not token:
        return None
    micros, _, raw_id = token.partition("_")
    try:
        moment = EPOCH + int(micros) * MICROSECOND
        row_id = id_type(raw_id)
    except (ValueError, OverflowError, OSError):
        raise InvalidArgument.for_field(
            "page_token", "The page cursor is not valid."
        ) from None
    return Position(moment, row_id)


def _next_token(rows: list[Any], limit: int) -> str:
    if len(rows) < limit:
        return ""
    last = rows[-1]
    return encode_position(last.created_at, last.id)


def _uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"{what} not found.") from None


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


# Settings


@dataclass(frozen=True)
class SettingView:
    definition: Definition
    # Parsed (Decimal or str); for a secret, the stored secret itself.
    value: Any


@dataclass(frozen=True)
class StagedChange:
    """Settings changed in the caller's transaction, and the admin tasks
    that carry the rest to their owning services once it commits."""

    changed: tuple[str, ...] = ()
    tasks: tuple[tuple[uuid.UUID, str], ...] = ()


class SettingsService:
    def __init__(
        self,
        owners: SettingOwners,
        environment: Settings,
        tasks: AdminTasks,
        sessions: async_sessionmaker[AsyncSession],
    ) -> None:
        self._owners = owners
        self._environment = environment
        self._tasks = tasks
        self._sessions = sessions
        tasks.register(CATALOG_TASK, self._apply_pricing)
        tasks.register(BILLING_TASK, self._apply_billing)

    async def describe(self, db: AsyncSession) -> list[SettingView]:
        """Every setting and its value, asking the catalog and billing for
        theirs (a GET must not show defaults in place of real prices)."""
        stored = await repository.stored_settings(db)
        pricing, billing = await asyncio.gather(
            self._owners.pricing(), self._owners.billing()
        )
        found = {**self._own_values(stored), **pricing, **billing}
        return [SettingView(d, found.get(d.key)) for d in DEFINITIONS]

    async def public(self, db: AsyncSession) -> dict[str, Any]:
        """The public settings this service knows without asking another,
        and whether maintenance mode is on."""
        values = self._own_values(await repository.stored_settings(db))
        shown = {
            d.key: catalogue.display(d, values[d.key])
            for d in DEFINITIONS
            if d.public and d.key in values
        }
        flags = await repository.flag_states(db)
        shown["maintenanceMode"] = flags.get(
            MAINTENANCE_MODE, DEFAULTS[MAINTENANCE_MODE]
        )
        return shown

    async def maintenance_message(self, db: AsyncSession) -> str:
        stored = await repository.stored_setting(db, catalogue.MAINTENANCE_MESSAGE)
        return str(stored or BY_KEY[catalogue.MAINTENANCE_MESSAGE].default)

    def _own_values(self, stored: dict[str, Any]) -> dict[str, Any]:
        """Values of the admin-owned and environment settings."""
        values = {
            d.key: stored.get(d.key, d.default)
            for d in DEFINITIONS
            if d.source == catalogue.ADMIN
        }
        values["googleClientId"] = self._environment.google_client_id or ""
        values["maxUploadMb"] = Decimal(self._environment.max_body_bytes // MEGABYTE)
        return values

    async def stage(
        self, db: AsyncSession, actor: Actor, requested: dict[str, Any]
    ) -> StagedChange:
        """Validate every requested value, then write the admin-owned ones
        and queue the others, each group with its audit entry."""
        require(SUPERADMIN)
        current = {view.definition.key: view.value for view in await self.describe(db)}
        changes = _changes(requested, current)
        if not changes:
            return StagedChange()
        tasks: list[tuple[uuid.UUID, str]] = []
        for source, group in _by_source(changes).items():
            before = {key: _shown(key, current[key]) for key in group}
            after = {key: _shown(key, value) for key, value in group.items()}
            if source == catalogue.ADMIN:
                await repository.save_settings(db, group, actor.id)
                await audit.record(
                    db,
                    actor,
                    "settings.updated",
                    "settings",
                    source,
                    before=before,
                    after=after,
                )
                continue
            audit_id = await audit.record(
                db,
                actor,
                "settings.updated",
                "settings",
                source,
                before=before,
                after=after,
                pending=True,
            )
            payload = {
                "values": {key: str(value) for key, value in group.items()},
                "actor": actor.id,
            }
            task_id = await self._tasks.enqueue(
                db, _TASK_OF_SOURCE[source], payload, audit_id
            )
            tasks.append((task_id, source))
        log.info("settings.staged", keys=sorted(changes), actor_id=actor.id)
        return StagedChange(tuple(sorted(changes)), tuple(tasks))

    async def apply(self, staged: StagedChange) -> None:
        """Carry out the staged tasks now. A service that refuses fails the
        call; one that cannot be reached gets the change later (the task is
        retried in the background) and the call says so."""
        unreachable: list[str] = []
        for task_id, source in staged.tasks:
            try:
                await self._tasks.run(task_id)
            except TaskFailed as failed:
                raise failed.error from None
            except (Unavailable, DeadlineExceeded):
                unreachable.append(source)
        if unreachable:
            names = " and ".join(unreachable)
            raise Unavailable(
                f"The change is saved; the {names} service will apply it as soon "
                "as it can be reached."
            )

    async def _apply_pricing(self, task_id: str, payload: dict[str, Any]) -> Any:
        values = await self._still_current(CATALOG_TASK, task_id, payload)
        if not values:
            return {"superseded": True}
        applied = await self._owners.change_pricing(values, str(payload["actor"]))
        return {key: _shown(key, applied[key]) for key in values}

    async def _apply_billing(self, task_id: str, payload: dict[str, Any]) -> Any:
        values = await self._still_current(BILLING_TASK, task_id, payload)
        if not values:
            return {"superseded": True}
        applied = await self._owners.change_billing(values)
        return {key: _shown(key, applied[key]) for key in values}

    async def _still_current(
        self, kind: str, task_id: str, payload: dict[str, Any]
    ) -> dict[str, Decimal]:
        """The task's values no later task has already applied."""
        async with self._sessions() as db:
            newer = await repository.keys_set_since(db, kind, uuid.UUID(task_id))
        return {
            key: Decimal(value)
            for key, value in payload["values"].items()
            if key not in newer
        }


def _shown(key: str, value: Any) -> Any:
    return catalogue.display(BY_KEY[key], value)


def _changes(requested: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """The parsed values that differ from the current ones; every refused
    value is reported at once, and then nothing changes."""
    violations: list[FieldViolation] = []
    changes: dict[str, Any] = {}
    for key, raw in requested.items():
        definition = BY_KEY.get(key)
        try:
            if definition is None:
                raise SettingRefused("is not a setting.")
            parsed = _parse(definition, raw, current.get(key))
        except SettingRefused as refused:
            violations.append(FieldViolation(key, f"{key} {refused}"))
            continue
        if parsed is not None and parsed != current.get(key):
            changes[key] = parsed
    if violations:
        raise InvalidArgument(violations[0].message, violations=tuple(violations))
    return changes


def _parse(definition: Definition, raw: Any, current: Any) -> Any:
    """The parsed new value, or None for "unchanged" (a read-only setting
    sent back as shown, a secret sent back masked)."""
    shown = catalogue.display(definition, current)
    if definition.read_only:
        if _same(raw, shown):
            return None
        raise SettingRefused(
            "is set outside the admin panel (see its description) and cannot "
            "be changed here."
        )
    if definition.type == catalogue.SECRET and isinstance(raw, str):
        if raw and raw == shown:
            return None
        if raw.startswith(catalogue.MASK_PREFIX):
            raise SettingRefused(
                "is masked; send the whole new value, or the masked one unchanged."
            )
    return definition.validate(raw)


def _same(raw: Any, shown: Any) -> bool:
    if raw in (None, "") and shown in (None, ""):
        return True
    return raw == shown or str(raw) == str(shown)


def _by_source(changes: dict[str, Any]) -> dict[str, dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    for key, value in changes.items():
        groups.setdefault(BY_KEY[key].source, {})[key] = value
    return groups


# Feature flags

_FLAG_KEY = re.compile(r"^[a-z][a-z0-9_]{1,63}$")
MAX_DESCRIPTION = 500


def _flag_state(flag: FeatureFlag | None) -> dict[str, Any] | None:
    if flag is None:
        return None
    return {"enabled": flag.enabled, "description": flag.description}


class FlagService:
    async def all(self, db: AsyncSession) -> list[FeatureFlag]:
        return await repository.flags(db)

    async def states(self, db: AsyncSession) -> dict[str, bool]:
        return {**DEFAULTS, **await repository.flag_states(db)}

    async def set(
        self,
        db: AsyncSession,
        actor: Actor,
        key: str,
        enabled: bool,
        description: str | None,
    ) -> FeatureFlag:
        require(SUPERADMIN)
        _check_flag(key, description)
        found = await repository.flag(db, key, lock=True)
        if found is not None and _unchanged(found, enabled, description):
            return found
        # Saving refreshes `found` in place: take its state first.
        before = _flag_state(found)
        saved = await repository.save_flag(
            db,
            key,
            enabled,
            description.strip() if description else description,
            actor.id,
        )
        action = "feature_flag.created" if found is None else "feature_flag.updated"
        await audit.record(
            db,
            actor,
            action,
            "feature_flag",
            key,
            before=before,
            after=_flag_state(saved),
        )
        log.info("feature_flag.set", key=key, enabled=enabled, actor_id=actor.id)
        return saved


def _check_flag(key: str, description: str | None) -> None:
    if not _FLAG_KEY.match(key):
        raise InvalidArgument.for_field(
            "key", "A flag key is 2 to 64 lower-case letters, digits or _."
        )
    if description is not None and len(description.strip()) > MAX_DESCRIPTION:
        raise InvalidArgument.for_field(
            "description", f"The description may be {MAX_DESCRIPTION} characters."
        )


def _unchanged(flag: FeatureFlag, enabled: bool, description: str | None) -> bool:
    same_description = description is None or description.strip() == flag.description
    return flag.enabled == enabled and same_description


# Announcements

MAX_TITLE = 200
MAX_BODY = 5000
PUBLIC_ANNOUNCEMENTS = 20
DEFAULT_ANNOUNCEMENTS = 50


@dataclass(frozen=True)
class AnnouncementDraft:
    """Fields of a new announcement, or the changes to one (None: keep)."""

    title: str | None = None
    body: str | None = None
    audience: str | None = None
    severity: str | None = None
    active: bool | None = None
    starts_at: datetime | None = None
    expires_at: datetime | None = None
    clear_expiry: bool = False


def _announcement_state(row: Announcement) -> dict[str, Any]:
    return {
        "title": row.title,
        "body": row.body,
        "audience": row.audience,
        "severity": row.severity,
        "active": row.active,
        "startsAt": _iso(row.starts_at),
        "expiresAt": _iso(row.expires_at),
    }


@dataclass(frozen=True)
class AnnouncementPage:
    announcements: list[Announcement]
    next_page_token: str


class AnnouncementService:
    async def page(
        self, db: AsyncSession, requested_size: int, token: str
    ) -> AnnouncementPage:
        limit = page_size(requested_size, DEFAULT_ANNOUNCEMENTS, 200)
        rows = await repository.announcements(
            db, decode_position(token, uuid.UUID), limit
        )
        return AnnouncementPage(rows, _next_token(rows, limit))

    async def live(self, db: AsyncSession, signed_in: bool) -> list[Announcement]:
        audiences = ("all", "users") if signed_in else ("all",)
        return await repository.live_announcements(db, audiences, PUBLIC_ANNOUNCEMENTS)

    async def create(
        self, db: AsyncSession, actor: Actor, draft: AnnouncementDraft
    ) -> Announcement:
        require(SUPERADMIN)
        values = _announcement_values(draft, creating=True)
        values.setdefault("starts_at", datetime.now(UTC))
        _check_period(values["starts_at"], values.get("expires_at"))
        row = await repository.add_announcement(db, {**values, "created_by": actor.id})
        await audit.record(
            db,
            actor,
            "announcement.created",
            "announcement",
            str(row.id),
            after=_announcement_state(row),
        )
        return row

    async def update(
        self,
        db: AsyncSession,
        actor: Actor,
        announcement_id: str,
        draft: AnnouncementDraft,
    ) -> Announcement:
        require(SUPERADMIN)
        row = await self._locked(db, announcement_id)
        values = _announcement_values(draft, creating=False)
        if draft.clear_expiry and draft.expires_at is None:
            values["expires_at"] = None
        expires = values.get("expires_at", row.expires_at)
        _check_period(values.get("starts_at", row.starts_at), expires)
        return await self._change(db, actor, row, values, "announcement.updated")

    async def deactivate(
        self, db: AsyncSession, actor: Actor, announcement_id: str
    ) -> Announcement:
        require(SUPERADMIN)
        row = await self._locked(db, announcement_id)
        if not row.active:
            return row
        return await self._change(
            db, actor, row, {"active": False}, "announcement.deleted"
        )

    async def _locked(self, db: AsyncSession, announcement_id: str) -> Announcement:
        found = await repository.announcement(
            db, _uuid(announcement_id, "Announcement"), lock=True
        )
        if found is None:
            raise NotFound("Announcement not found.")
        return found

    async def _change(
        self,
        db: AsyncSession,
        actor: Actor,
        row: Announcement,
        values: dict[str, Any],
        action: str,
    ) -> Announcement:
        before = _announcement_state(row)
        changed = await repository.change_announcement(db, row.id, values)
        after = _announcement_state(changed)
        if after != before:
            await audit.record(
                db,
                actor,
                action,
                "announcement",
                str(row.id),
                before=before,
                after=after,
            )
        return changed


def _announcement_values(draft: AnnouncementDraft, *, creating: bool) -> dict[str, Any]:
    violations: list[FieldViolation] = []
    values: dict[str, Any] = {}

    def refuse(field: str, message: str) -> None:
        violations.append(FieldViolation(field, message))

    if draft.title is not None or creating:
        title = (draft.title or "").strip()
        if not 1 <= len(title) <= MAX_TITLE:
            refuse("title", f"The title must be 1 to {MAX_TITLE} characters.")
        values["title"] = title
    if draft.body is not None:
        if len(draft.body) > MAX_BODY:
            refuse("body", f"The message may be at most {MAX_BODY} characters.")
        values["body"] = draft.body.strip()
    for field, given, allowed in (
        ("audience", draft.audience, AUDIENCES),
        ("severity", draft.severity, SEVERITIES),
    ):
        if given is None or (creating and given == ""):
            continue
        if given not in allowed:
            refuse(field, f"{field} must be one of: {', '.join(allowed)}.")
        values[field] = given
    for field in ("active", "starts_at", "expires_at"):
        if (value := getattr(draft, field)) is not None:
            values[field] = value
    if violations:
        raise InvalidArgument(violations[0].message, violations=tuple(violations))
    return values


def _check_period(starts_at: datetime, expires_at: datetime | None) -> None:
    if expires_at is not None and expires_at <= starts_at:
        raise InvalidArgument.for_field(
            "expires_at", "An announcement must expire after it starts."
        )


# Audit trail


@dataclass(frozen=True)
class AuditPage:
    entries: list[AuditEntry]
    next_page_token: str


class AuditService:
    async def page(
        self,
        db: AsyncSession,
        where: AuditFilter,
        requested_size: int,
        token: str,
    ) -> AuditPage:
        limit = page_size(requested_size)
        if where.since and where.until and where.until <= where.since:
            raise InvalidArgument.for_field("until", "until must be after since.")
        rows = await repository.audit_entries(
            db, where, decode_position(token, int), limit
        )
        return AuditPage(rows, _next_token(rows, limit))


# Error log

MAX_ERROR_MESSAGE = 4000
MAX_DETAILS = 50
MAX_DETAIL_VALUE = 2000


@dataclass(frozen=True)
class ErrorReport:
    kind: str
    severity: str
    code: str
    message: str
    user_id: str
    reference_id: str
    details: dict[str, str]


@dataclass(frozen=True)
class ErrorPage:
    entries: list[ErrorEntry]
    next_page_token: str


class ErrorLogService:
    async def record(
        self, db: AsyncSession, service: str, report: ErrorReport
    ) -> uuid.UUID:
        """Keep a failure a service reported. Long texts are cut rather than
        refused: a report must not be lost for its length."""
        severity = report.severity or "error"
        if severity not in SEVERITIES:
            raise InvalidArgument.for_field(
                "severity", f"severity must be one of: {', '.join(SEVERITIES)}."
            )
        if not report.kind or len(report.kind) > 32:
            raise InvalidArgument.for_field("kind", "kind must be 1 to 32 characters.")
        if not report.message.strip():
            raise InvalidArgument.for_field("message", "message is required.")
        details = dict(list(report.details.items())[:MAX_DETAILS])
        error_id = await repository.add_error(
            db,
            {
                "service": service[:32],
                "kind": report.kind,
                "severity": severity,
                "code": report.code[:64],
                "message": report.message[:MAX_ERROR_MESSAGE],
                "user_id": report.user_id or None,
                "reference_id": report.reference_id or None,
                "details": {k[:64]: v[:MAX_DETAIL_VALUE] for k, v in details.items()},
            },
        )
        log.info("error_log.recorded", error_id=str(error_id), service=service)
        return error_id

    async def page(
        self, db: AsyncSession, where: ErrorFilter, requested_size: int, token: str
    ) -> ErrorPage:
        if where.severity and where.severity not in SEVERITIES:
            raise InvalidArgument.for_field(
                "severity", f"severity must be one of: {', '.join(SEVERITIES)}."
            )
        limit = page_size(requested_size)
        rows = await repository.errors(
            db, where, decode_position(token, uuid.UUID), limit
        )
        return ErrorPage(rows, _next_token(rows, limit))

    async def resolve(
        self, db: AsyncSession, actor: Actor, error_id: str
    ) -> ErrorEntry:
        require(*SUPPORT_OR_ABOVE)
        found = await repository.error(db, _uuid(error_id, "Error"), lock=True)
        if found is None:
            raise NotFound("Error not found.")
        if found.resolved_at is not None:
            return found
        resolved = await repository.resolve_error(db, found.id, actor.id)
        await audit.record(
            db,
            actor,
            "error.resolved",
            "error",
            str(found.id),
            before={"resolved": False},
            after={"resolved": True, "resolvedAt": _iso(resolved.resolved_at)},
        )
        return resolved


# Rate limits

_USER_SUBJECT = re.compile(r"^user:(?P<id>.+)$")
_TIER_SUBJECT = re.compile(r"^tier:(?P<plan>[a-z0-9][a-z0-9_-]{0,39})$")
FREE_TIER = "tier:free"
MAX_REQUESTS = 1_000_000
MAX_WINDOW_SECONDS = 86_400
MAX_COST = 1000


def _rule_state(rule: RateLimitRule | None) -> dict[str, Any] | None:
    if rule is None:
        return None
    return {"requests": rule.requests, "windowSeconds": rule.window_seconds}


def check_subject(subject: str) -> str:
    """`tier:free`, `tier:<plan id>` or `user:<uuid>`, normalised."""
    user = _USER_SUBJECT.match(subject)
    if user:
        try:
            return f"user:{uuid.UUID(user['id'])}"
        except ValueError:
            pass
    elif _TIER_SUBJECT.match(subject):
        return subject
    raise InvalidArgument.for_field(
        "subject", "The subject must be tier:free, tier:<plan id> or user:<user id>."
    )


# Counters whose time has passed are deleted once every this many checks.
PURGE_EVERY = 1000


class RateLimitService:
    def __init__(self, plans: SettingOwners) -> None:
        self._plans = plans
        self._checks = 0

    async def all(self, db: AsyncSession) -> list[RateLimitRule]:
        return await repository.rules(db)

    async def set(
        self,
        db: AsyncSession,
        actor: Actor,
        subject: str,
        requests: int,
        window_seconds: int,
    ) -> RateLimitRule:
        require(SUPERADMIN)
        subject = check_subject(subject)
        _check_allowance(requests, window_seconds)
        await self._check_plan(subject)
        # Saving refreshes the row read here in place: take its state first.
        before = _rule_state(await repository.rule(db, subject, lock=True))
        saved = await repository.save_rule(
            db, subject, requests, window_seconds, actor.id
        )
        await repository.reset_counter(db, subject)
        await audit.record(
            db,
            actor,
            "rate_limit.set",
            "rate_limit",
            subject,
            before=before,
            after=_rule_state(saved),
        )
        return saved

    async def delete(self, db: AsyncSession, actor: Actor, subject: str) -> None:
        require(SUPERADMIN)
        before = await repository.rule(db, subject, lock=True)
        if before is None:
            raise NotFound("There is no rate limit for this subject.")
        await repository.delete_rule(db, subject)
        await repository.reset_counter(db, subject)
        await audit.record(
            db,
            actor,
            "rate_limit.deleted",
            "rate_limit",
            subject,
            before=_rule_state(before),
        )

    async def check(self, db: AsyncSession, subject: str, cost: int) -> Spent:
        cost = cost or 1
        if not 1 <= cost <= MAX_COST:
            raise InvalidArgument.for_field(
                "cost", f"cost must be between 1 and {MAX_COST}."
            )
        spent = await repository.take(db, subject, cost)
        self._checks += 1
        if self._checks % PURGE_EVERY == 0:
            purged = await repository.purge_idle_counters(db)
            log.info("rate_limit.counters_purged", count=purged)
        return spent

    async def _check_plan(self, subject: str) -> None:
        if not subject.startswith("tier:") or subject == FREE_TIER:
            return
        plan = subject.removeprefix("tier:")
        if plan not in await self._plans.plan_ids():
            raise InvalidArgument.for_field(
                "subject", f"There is no subscription plan {plan!r}."
            )


def _check_allowance(requests: int, window_seconds: int) -> None:
    violations = []
    if not 1 <= requests <= MAX_REQUESTS:
        violations.append(
            FieldViolation("requests", f"requests must be 1 to {MAX_REQUESTS}.")
        )
    if not 1 <= window_seconds <= MAX_WINDOW_SECONDS:
        violations.append(
            FieldViolation(
                "window_seconds",
                f"window_seconds must be 1 to {MAX_WINDOW_SECONDS} (one day).",
            )
        )
    if violations:
        raise InvalidArgument(violations[0].message, violations=tuple(violations))
