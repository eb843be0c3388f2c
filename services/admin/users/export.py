"""Users as CSV (RFC 4180, UTF-8), written by Python's csv module so that
quotes, commas and line breaks inside a value are escaped.

A cell that starts with `=`, `+`, `-` or `@` (or a tab or carriage return)
is read as a formula by spreadsheet programs, which can run commands or
leak other cells; such cells get a leading single quote, which makes them
plain text (OWASP's advice on CSV injection).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from libs.errors import format_credits

HEADER = (
    "ID",
    "Email",
    "Name",
    "Nickname",
    "Status",
    "Status reason",
    "Sign-in",
    "Credits",
    "Held credits",
    "Created at",
)
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def inert(value: str) -> str:
    """`value` as a spreadsheet shows it as text, never runs it."""
    return "'" + value if value.startswith(FORMULA_PREFIXES) else value


def csv_lines(rows: Iterable[Sequence[str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    for row in rows:
        writer.writerow([inert(value) for value in row])
    return buffer.getvalue().encode()


def user_row(
    user_id: str,
    email: str,
    name: str,
    nickname: str,
    status: str,
    status_reason: str,
    auth_provider: str,
    balance_micros: int,
    held_micros: int,
    created_at: datetime,
) -> tuple[str, ...]:
    return (
        user_id,
        email,
        name,
        nickname,
        status,
        status_reason,
        auth_provider,
        format_credits(balance_micros),
        format_credits(held_micros),
        created_at.astimezone(UTC).isoformat(timespec="seconds"),
    )
