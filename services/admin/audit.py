"""The audit trail: one entry per operator action, written in the transaction
that makes the change (or that queues it as an admin task)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from libs.grpc.identity import current_caller
from services.admin.models import AuditEntry

# Keys whose values never reach the trail, whatever object they sit in.
SECRET_KEYS = frozenset(
    {"password", "password_hash", "secret", "api_key", "token", "key_secret"}
)
MASK = "********"


@dataclass(frozen=True)
class Actor:
    """The operator making a change, as their token says, and from where."""

    id: str
    name: str
    role: str
    client_address: str | None = None
    request_id: str | None = None

    @classmethod
    def current(
        cls, client_address: str = "", request_id: str = "", name: str = ""
    ) -> Actor:
        claims = current_caller().admin
        assert claims is not None, "admin methods are ADMIN-only"
        return cls(
            id=claims.subject,
            name=name,
            role=claims.role or "",
            client_address=_address(client_address),
            request_id=request_id or None,
        )


def masked(value: Any) -> Any:
    """`value` with every secret-looking field replaced by a mask."""
    if isinstance(value, dict):
        return {
            k: MASK if _is_secret(k) and v not in (None, "") else masked(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [masked(item) for item in value]
    return value


def _is_secret(key: str) -> bool:
    lowered = key.lower()
    return lowered in SECRET_KEYS or lowered.endswith(("_secret", "secret", "apikey"))


def _address(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value)) if value else None
    except ValueError:
        return None


async def record(
    db: AsyncSession,
    actor: Actor,
    action: str,
    target_type: str,
    target_id: str,
    *,
    before: Any = None,
    after: Any = None,
    pending: bool = False,
) -> int:
    """Add an entry; `pending` for a change another service still has to
    make (an admin task settles it)."""
    entry = AuditEntry(
        actor_id=actor.id,
        actor_name=actor.name,
        actor_role=actor.role,
        action=action,
        target_type=target_type,
        target_id=target_id,
        before=masked(before),
        after=masked(after),
        client_address=actor.client_address,
        request_id=actor.request_id,
        status="pending" if pending else "applied",
    )
    db.add(entry)
    await db.flush()
    return entry.id


async def settle(
    db: AsyncSession,
    audit_id: int,
    *,
    after: Any = None,
    error: str | None = None,
) -> None:
    """Record how a pending entry ended."""
    values: dict[str, Any] = {"status": "failed" if error else "applied"}
    if error:
        values["error"] = error[:1000]
    if after is not None:
        values["after"] = masked(after)
    await db.execute(
        update(AuditEntry)
        .where(AuditEntry.id == audit_id, AuditEntry.status == "pending")
        .values(**values)
    )
