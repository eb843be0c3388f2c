"""Hypothesis strategies for any protobuf request, built from its descriptor.

Every field may be left unset or get a value that stresses the server (huge
and negative numbers, empty, huge, NUL-laden or exotic text, random bytes,
enum numbers the contract does not name, deep nesting, long lists, a
Timestamp or Struct out of range). Text fields lean towards values that exist
(`Known`: ids of real users, workspaces, conversations, the catalog's model
ids, ...) so that some calls get past validation and reach the service's
deeper code.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

MAX_DEPTH = 3
MAX_REPEATED = 4
HUGE_TEXT = 70_000
KNOWN_LIMIT = 3_000

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32 = (0, 2**32 - 1)
UINT64 = (0, 2**64 - 1)

_T = FieldDescriptor
_RANGES = {
    _T.TYPE_INT32: INT32,
    _T.TYPE_SINT32: INT32,
    _T.TYPE_SFIXED32: INT32,
    _T.TYPE_INT64: INT64,
    _T.TYPE_SINT64: INT64,
    _T.TYPE_SFIXED64: INT64,
    _T.TYPE_UINT32: UINT32,
    _T.TYPE_FIXED32: UINT32,
    _T.TYPE_UINT64: UINT64,
    _T.TYPE_FIXED64: UINT64,
}
_SIZE_NAME = re.compile(r"(size|limit)$")
_TOKEN_NAME = re.compile(r"(token|cursor)$")
_ID_NAME = re.compile(r"(^|_)(id|ids|key|token|slug|code|model|models)$")


@dataclass
class Known:
    """Values that exist on the servers under test, by kind. `ids` holds every
    id worth guessing; `words` other plausible text (e-mail addresses, model
    ids, setting names, roles, statuses)."""

    ids: list[str] = field(default_factory=list)
    words: list[str] = field(default_factory=list)
    # Text seen in reply fields, by field name ("next_page_token").
    by_field: dict[str, list[str]] = field(default_factory=dict)
    # Draw only well-formed values: a request a real client could send.
    gentle: bool = False

    def add_id(self, value: str) -> None:
        if value and value not in self.ids and len(self.ids) < KNOWN_LIMIT:
            self.ids.append(value)

    def add_word(self, value: str) -> None:
        if value and value not in self.words and len(self.words) < KNOWN_LIMIT:
            self.words.append(value)

    def snapshot(self) -> Known:
        """A copy that stays as it is while this one learns more: a strategy
        must draw from the same values for every example of one test."""
        by_field = {name: list(values) for name, values in self.by_field.items()}
        return Known(list(self.ids), list(self.words), by_field)

    def seen_in(self, name: str) -> list[str]:
        """Values replies carried in a field named like `name` ("page_token"
        finds "next_page_token")."""
        return [
            value
            for seen, values in self.by_field.items()
            if seen.endswith(name) or name.endswith(seen)
            for value in values
        ]

    def remember(self, message: Message) -> None:
        """Keep the ids and short texts of a reply, to send back later."""
        for fd, value in message.ListFields():
            for item in value if fd.is_repeated else [value]:
                if isinstance(item, Message):
                    self._remember_message(fd, item)
                elif isinstance(item, str) and _ID_NAME.search(fd.name):
                    self.add_id(item)
                    self._add_seen(fd.name, item)
                elif isinstance(item, str) and len(item) < 80:
                    self.add_word(item)

    def _add_seen(self, name: str, value: str) -> None:
        values = self.by_field.setdefault(name, [])
        if value and value not in values and len(values) < KNOWN_LIMIT:
            values.append(value)

    def _remember_message(self, fd: FieldDescriptor, item: Message) -> None:
        if fd.message_type.full_name == "google.protobuf.Struct":
            for key in item.fields:  # type: ignore[attr-defined]
                self.add_word(key)
        else:
            self.remember(item)


def edge_text() -> st.SearchStrategy[str]:
    return st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "a\x00b",
            "null",
            "-1",
            "0",
            "9" * 40,
            "NaN",
            "../../etc/passwd",
            "' OR 1=1 --",
            "%s%n",
            "\u202e\U0001f600\u0301",
            "\ufeff",
            "00000000-0000-0000-0000-000000000000",
            "not-a-uuid",
        ]
    ) | st.sampled_from(["x", "\u00e9", "\U0001f600", "\x00"]).map(
        lambda piece: piece * HUGE_TEXT
    )


def text_for(name: str, known: Known) -> st.SearchStrategy[str]:
    """Text for a field called `name`: often a value that exists, or one
    that exists slightly altered (a page token with a huge number in it)."""
    plausible = known.ids if _ID_NAME.search(name) else known.words
    plausible = known.seen_in(name) or plausible
    pool = [*plausible, *known.ids, *known.words]
    choices: list[st.SearchStrategy[str]] = [
        st.uuids().map(str),
        st.text(max_size=40),
        edge_text(),
    ]
    if plausible:
        choices.insert(0, st.sampled_from(plausible))
        choices.insert(1, altered(plausible))
    if _TOKEN_NAME.search(name) and plausible:
        # A tampered page token is the likeliest way in for a bad cursor.
        choices.insert(0, altered(plausible))
    if pool:
        choices.insert(2, st.sampled_from(pool))
    return st.one_of(*choices)


_DIGITS = re.compile(r"\d+")
_ODD_NUMBERS = ["9" * 30, "0", "00", "-1", "\u0661\u0662", "\u00b2", "1e400", ""]


@st.composite
def altered(draw: st.DrawFn, values: list[str]) -> str:
    """One of `values` altered the way a tampering client would: a number in
    it swapped for a huge or odd one, cut short, or, for base64 JSON (the
    shape of many page tokens), one of its values replaced."""
    value = draw(st.sampled_from(values))
    decoded = _json_token(value)
    if decoded is not None and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(decoded) or ["_"]))
        decoded[key] = draw(
            st.sampled_from([10**30, -(10**30), 1e308, -1, None, "x", [], {}])
            | json_value(Known())
        )
        raw = json.dumps(decoded, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")
    # The longest number first: in "<micros>.<uuid>" that is the moment.
    numbers = sorted(_DIGITS.finditer(value), key=lambda m: -len(m.group()))
    if numbers and draw(st.booleans()):
        number = draw(st.sampled_from(numbers))
        odd = draw(st.sampled_from(_ODD_NUMBERS) | st.integers().map(str))
        return value[: number.start()] + odd + value[number.end() :]
    return value[: draw(st.integers(0, len(value)))] + draw(st.text(max_size=3))


def _json_token(value: str) -> dict[str, Any] | None:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        decoded = json.loads(raw)
    except (binascii.Error, ValueError):
        return None
    return decoded if isinstance(decoded, dict) else None


def integer(bounds: tuple[int, int]) -> st.SearchStrategy[int]:
    low, high = bounds
    edges = [v for v in (low, high, -1, 0, 1, 2, 10, 100, 1000) if low <= v <= high]
    return st.one_of(
        st.integers(0, 100),
        st.sampled_from(edges),
        st.integers(low, high),
    )


def real(width: int) -> st.SearchStrategy[float]:
    return st.one_of(
        st.floats(0, 1000, width=width),
        st.sampled_from(
            [math.nan, math.inf, -math.inf, -0.0, 1e308 if width == 64 else 3e38]
        ),
        st.floats(width=width),
    )


def scalar(fd: FieldDescriptor, known: Known) -> st.SearchStrategy[Any]:
    if known.gentle:
        return well_formed(fd, known)
    if fd.type in _RANGES and _SIZE_NAME.search(fd.name):
        # Pages of one or two rows, so that the replies carry page tokens.
        return st.integers(1, 2) | integer(_RANGES[fd.type])
    if fd.type in _RANGES:
        return integer(_RANGES[fd.type])
    if fd.type == _T.TYPE_BOOL:
        return st.booleans()
    if fd.type == _T.TYPE_DOUBLE:
        return real(64)
    if fd.type == _T.TYPE_FLOAT:
        return real(32)
    if fd.type == _T.TYPE_STRING:
        return text_for(fd.name, known)
    if fd.type == _T.TYPE_BYTES:
        return st.binary(max_size=64) | st.just(b"\x00" * HUGE_TEXT)
    if fd.type == _T.TYPE_ENUM:
        named = [value.number for value in fd.enum_type.values]
        return st.sampled_from(named) | st.integers(-3, 1000) | st.just(INT32[1])
    raise AssertionError(f"no strategy for field {fd.full_name} (type {fd.type})")


def well_formed(fd: FieldDescriptor, known: Known) -> st.SearchStrategy[Any]:
    """A value a real client might send: a small number, a named enum value,
    text that exists (or a short word)."""
    if fd.type in _RANGES:
        return st.integers(1, 10)
    if fd.type in (_T.TYPE_DOUBLE, _T.TYPE_FLOAT):
        return st.floats(0, 100)
    if fd.type == _T.TYPE_STRING:
        plausible = known.seen_in(fd.name) or (
            known.ids if _ID_NAME.search(fd.name) else known.words
        )
        word = st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=12)
        return st.sampled_from(plausible) | word if plausible else word
    if fd.type == _T.TYPE_ENUM:
        named = [value.number for value in fd.enum_type.values if value.number]
        return st.sampled_from(named or [0])
    if fd.type == _T.TYPE_BYTES:
        return st.binary(min_size=1, max_size=16)
    return st.booleans()


def json_value(known: Known) -> st.SearchStrategy[Any]:
    leaves = (
        st.none()
        | st.booleans()
        | st.floats()
        | st.integers(-(2**60), 2**60)
        | text_for("value", known)
    )
    return st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(text_for("key", known), inner, max_size=3)
        ),
        max_leaves=8,
    )


@st.composite
def _timestamp(draw: st.DrawFn, message: Message, known: Known) -> None:
    seconds = draw(st.integers(0, 4_000_000_000) | integer(INT64))
    nanos = draw(st.integers(0, 999_999_999) | integer(INT32))
    if known.gentle:
        seconds, nanos = draw(st.integers(1_700_000_000, 1_900_000_000)), 0
    message.seconds = seconds  # type: ignore[attr-defined]
    message.nanos = nanos  # type: ignore[attr-defined]


@st.composite
def _struct(draw: st.DrawFn, message: Message, known: Known) -> None:
    keys = text_for("setting", known)
    values = draw(st.dictionaries(keys, json_value(known), max_size=4))
    message.update(values)  # type: ignore[attr-defined]


@st.composite
def _fill(draw: st.DrawFn, message: Message, known: Known, depth: int) -> None:
    """Set a random selection of `message`'s fields, in place."""
    descriptor = message.DESCRIPTOR
    if descriptor.full_name == "google.protobuf.Timestamp":
        draw(_timestamp(message, known))
        return
    if descriptor.full_name == "google.protobuf.Struct":
        draw(_struct(message, known))
        return
    chosen_oneof_members = {
        draw(st.sampled_from([None, *oneof.fields])) for oneof in descriptor.oneofs
    }
    for fd in descriptor.fields:
        in_oneof = fd.containing_oneof is not None
        if in_oneof and fd not in chosen_oneof_members:
            continue
        # Each field is left unset more often than not, so that requests
        # with only a bad field or two (or none) come up often enough.
        # A gentle request sets most fields instead.
        if not in_oneof and (draw(st.integers(0, 2)) == 0) == known.gentle:
            continue
        draw(_field(message, fd, known, depth))


def _is_map(fd: FieldDescriptor) -> bool:
    return fd.message_type is not None and fd.message_type.GetOptions().map_entry


@st.composite
def _field(
    draw: st.DrawFn, message: Message, fd: FieldDescriptor, known: Known, depth: int
) -> None:
    target = getattr(message, fd.name)
    if _is_map(fd):
        key_fd = fd.message_type.fields_by_name["key"]
        value_fd = fd.message_type.fields_by_name["value"]
        count = draw(st.integers(0, MAX_REPEATED))
        for _ in range(count):
            key = draw(scalar(key_fd, known))
            if value_fd.message_type is None:
                target[key] = draw(scalar(value_fd, known))
            elif depth < MAX_DEPTH:
                draw(_fill(target[key], known, depth + 1))
        return
    if fd.is_repeated:
        count = draw(
            st.integers(1, 2)
            if known.gentle
            else st.integers(0, MAX_REPEATED) | st.just(200)
        )
        if fd.message_type is None:
            element = scalar(fd, known)
            target.extend(draw(st.lists(element, min_size=count, max_size=count)))
        elif depth < MAX_DEPTH:
            for _ in range(min(count, MAX_REPEATED)):
                draw(_fill(target.add(), known, depth + 1))
        return
    if fd.message_type is None:
        setattr(message, fd.name, draw(scalar(fd, known)))
    elif depth < MAX_DEPTH:
        target.SetInParent()
        draw(_fill(target, known, depth + 1))


@st.composite
def request(draw: st.DrawFn, descriptor: Descriptor, known: Known) -> Message:
    """A request of type `descriptor`, any mix of its fields set; one in
    four well-formed throughout, to reach the code behind validation."""
    message = GetMessageClass(descriptor)()
    if draw(st.integers(0, 3)) == 0:
        known = dataclasses.replace(known, gentle=True)
    draw(_fill(message, known, 0))
    return message


def unknown_field() -> st.SearchStrategy[bytes]:
    """Wire bytes of a field no request declares (number 9999, a varint):
    what a client built from a newer contract would send."""
    return st.integers(0, 2**32).map(lambda value: b"\xf8\xf0\x04" + _varint(value))


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)
