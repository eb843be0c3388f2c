"""What each operator role may do.

viewer      reads everything an operator can read, changes nothing
support     also handles users (status, notes, credits), moderates the
            community and resolves errors
superadmin  everything: settings, flags, announcements, models, plans,
            rate limits, operator accounts and user deletion
"""

from __future__ import annotations

from libs.errors import PermissionDenied
from libs.grpc.identity import current_caller

SUPERADMIN = "superadmin"
SUPPORT = "support"
VIEWER = "viewer"
ROLES = (SUPERADMIN, SUPPORT, VIEWER)
SUPPORT_OR_ABOVE = (SUPERADMIN, SUPPORT)


def current_role() -> str:
    claims = current_caller().admin
    return (claims.role if claims else None) or VIEWER


def require(*allowed: str) -> None:
    """Refuse the call unless the operator's role is one of `allowed`."""
    role = current_role()
    if role not in allowed:
        raise PermissionDenied(f"An operator with the {role} role may not do this.")
