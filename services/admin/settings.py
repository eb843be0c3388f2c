"""The platform settings an operator sees and edits: each with a type, a
validator, where its value lives and what it does.

Values live where they are used. The admin service keeps its own (site
name, support address, the maintenance message, stored secrets) in
`admin.settings`; prices live in the catalog and sign-up credits in billing,
and are changed by asking those services; a few are fixed by the
environment and only shown here.

A parsed value is a Decimal for number settings and a str otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

NUMBER = "number"
INTEGER = "integer"
TEXT = "text"
EMAIL = "email"
SECRET = "secret"  # noqa: S105 - a type name

ADMIN = "admin"
CATALOG = "catalog"
BILLING = "billing"
ENVIRONMENT = "environment"

MASK_PREFIX = "••••"
SECRET_VISIBLE_CHARS = 4
MAX_MARGIN_PERCENT = Decimal(1000)
MAX_CREDITS = Decimal(1_000_000)
MAX_CREDIT_PRICE_USD = Decimal(1000)
MAX_PURCHASE_PRICE_RUPEES = Decimal(100_000)
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class SettingRefused(ValueError):
    """A value the setting's validator refuses; the message says why."""


Validator = Callable[[Any], Any]


@dataclass(frozen=True)
class Definition:
    key: str
    type: str
    source: str
    description: str
    validate: Validator
    public: bool = False
    read_only: bool = False
    default: Any = None


def display(definition: Definition, value: Any) -> Any:
    """A parsed value as JSON shows it: numbers as numbers, secrets masked."""
    if definition.type == SECRET:
        return masked_secret(str(value or ""))
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def masked_secret(value: str) -> str:
    """ "••••" and the last four characters, or "" when nothing is stored."""
    if not value:
        return ""
    return MASK_PREFIX + value[-SECRET_VISIBLE_CHARS:]


# Validators: each returns the parsed value or raises SettingRefused.


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise SettingRefused("must be a number.")
    try:
        number = Decimal(repr(value) if isinstance(value, float) else str(value))
    except InvalidOperation:
        raise SettingRefused("must be a number.") from None
    if not number.is_finite():
        raise SettingRefused("must be a number.")
    return number


def _places(number: Decimal) -> int:
    exponent = number.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def number(
    *,
    minimum: Decimal,
    maximum: Decimal,
    places: int,
    above_minimum: bool = False,
) -> Validator:
    def check(value: Any) -> Decimal:
        parsed = _decimal(value)
        low = parsed > minimum if above_minimum else parsed >= minimum
        if not low or parsed > maximum:
            relation = "above" if above_minimum else "at least"
            raise SettingRefused(f"must be {relation} {minimum} and at most {maximum}.")
        if _places(parsed) > places:
            raise SettingRefused(f"may have at most {places} decimal places.")
        return parsed

    return check


def text(*, min_length: int, max_length: int) -> Validator:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise SettingRefused("must be text.")
        cleaned = value.strip()
        if not min_length <= len(cleaned) <= max_length:
            raise SettingRefused(
                f"must be {min_length} to {max_length} characters long."
            )
        if _CONTROL.search(cleaned):
            raise SettingRefused("must not contain control characters.")
        return cleaned

    return check


def email(value: Any) -> str:
    if not isinstance(value, str):
        raise SettingRefused("must be an e-mail address.")
    cleaned = value.strip()
    if cleaned and (len(cleaned) > 254 or not _EMAIL.match(cleaned)):
        raise SettingRefused("must be an e-mail address (or empty).")
    return cleaned


def secret(value: Any) -> str:
    if not isinstance(value, str):
        raise SettingRefused("must be text.")
    if value and (not 8 <= len(value) <= 512 or any(c.isspace() for c in value)):
        raise SettingRefused(
            "must be 8 to 512 characters without spaces (or empty to remove it)."
        )
    return value


def anything(value: Any) -> Any:
    return value


_MARGIN = number(minimum=Decimal(0), maximum=MAX_MARGIN_PERCENT, places=4)
_MARGIN_NOTE = (
    "Percent added to the provider's cost of {what} before it is turned into "
    "credits (0 to 1000, up to 4 decimals). Applies at once to new prices."
)
_TYPE_MARGIN_NOTE = (
    "Percent margin for {what} models; when 0 the global profitMargin applies instead."
)
_STORED_ONLY_NOTE = (
    "Write-only, shown masked. Kept here for the operators' records only: "
    "the running {service} reads {variable} from its environment, so "
    "changing this value changes nothing at runtime."
)

DEFINITIONS: tuple[Definition, ...] = (
    Definition(
        "siteName",
        TEXT,
        ADMIN,
        "The platform's name as clients show it (public).",
        text(min_length=1, max_length=80),
        public=True,
        default="OmniHub",
    ),
    Definition(
        "supportEmail",
        EMAIL,
        ADMIN,
        "Where users write for help (public); empty when there is none.",
        email,
        public=True,
        default="",
    ),
    Definition(
        "maintenanceMessage",
        TEXT,
        ADMIN,
        "What the gateway answers (503) while the maintenance_mode feature "
        "flag is on (public).",
        text(min_length=1, max_length=500),
        public=True,
        default="OmniHub is down for maintenance. Please try again in a few minutes.",
    ),
    Definition(
        "profitMargin",
        NUMBER,
        CATALOG,
        _MARGIN_NOTE.format(what="every model without a margin of its type"),
        _MARGIN,
    ),
    Definition(
        "profitMarginImage",
        NUMBER,
        CATALOG,
        _TYPE_MARGIN_NOTE.format(what="image"),
        _MARGIN,
    ),
    Definition(
        "profitMarginVideo",
        NUMBER,
        CATALOG,
        _TYPE_MARGIN_NOTE.format(what="video"),
        _MARGIN,
    ),
    Definition(
        "profitMarginChat",
        NUMBER,
        CATALOG,
        _TYPE_MARGIN_NOTE.format(what="chat"),
        _MARGIN,
    ),
    Definition(
        "creditPrice",
        NUMBER,
        CATALOG,
        "US dollars one credit stands for when the catalog turns a provider's "
        "cost into credits (above 0, up to 6 decimals).",
        number(
            minimum=Decimal(0),
            maximum=MAX_CREDIT_PRICE_USD,
            places=6,
            above_minimum=True,
        ),
    ),
    Definition(
        "freeCredits",
        NUMBER,
        BILLING,
        "Credits every new account is given at sign-up (0 or more, up to 6 "
        "decimals). The next sign-up gets the new amount.",
        number(minimum=Decimal(0), maximum=MAX_CREDITS, places=6),
    ),
    Definition(
        "creditPurchasePrice",
        NUMBER,
        BILLING,
        "Rupees one credit costs when bought on its own (above 0, up to 2 "
        "decimals). New orders use the new price.",
        number(
            minimum=Decimal(0),
            maximum=MAX_PURCHASE_PRICE_RUPEES,
            places=2,
            above_minimum=True,
        ),
    ),
    Definition(
        "googleClientId",
        TEXT,
        ENVIRONMENT,
        "The Google OAuth client id of Google sign-in (public). Set by "
        "GOOGLE_CLIENT_ID in the services' environment, which auth verifies "
        "tokens against; read-only here.",
        anything,
        public=True,
        read_only=True,
    ),
    Definition(
        "razorpayKeyId",
        TEXT,
        BILLING,
        "The public Razorpay key id checkout opens with. Set by "
        "RAZORPAY_KEY_ID in billing's environment (it must match billing's "
        "secret); read-only here.",
        anything,
        read_only=True,
    ),
    Definition(
        "maxUploadMb",
        INTEGER,
        ENVIRONMENT,
        "The largest request body the gateway accepts, in MB (public). Set by "
        "MAX_BODY_BYTES in the gateway's environment; read-only here.",
        anything,
        public=True,
        read_only=True,
    ),
    Definition(
        "falApiKey",
        SECRET,
        ADMIN,
        _STORED_ONLY_NOTE.format(service="generation service", variable="FAL_KEY"),
        secret,
        default="",
    ),
    Definition(
        "openrouterApiKey",
        SECRET,
        ADMIN,
        _STORED_ONLY_NOTE.format(service="chat service", variable="OPENROUTER_API_KEY"),
        secret,
        default="",
    ),
    Definition(
        "razorpayKeySecret",
        SECRET,
        ADMIN,
        _STORED_ONLY_NOTE.format(
            service="billing service", variable="RAZORPAY_KEY_SECRET"
        ),
        secret,
        default="",
    ),
)

BY_KEY = {definition.key: definition for definition in DEFINITIONS}
MAINTENANCE_MESSAGE = "maintenanceMessage"
