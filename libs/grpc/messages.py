"""Small conversions every servicer needs between Python values and messages."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import unknown_fields
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from libs.errors import FieldViolation, InvalidArgument


def timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def refuse_unknown_fields(request: Message) -> None:
    """Refuse fields this build does not know instead of dropping them: a
    caller built from a newer contract must not believe a change was made."""
    unknown = unknown_fields.UnknownFieldSet(request)
    numbers = sorted({unknown[i].field_number for i in range(len(unknown))})
    if numbers:
        raise InvalidArgument(
            f"This service does not know field {numbers[0]} of the request.",
            violations=tuple(
                FieldViolation(str(number), "Unknown field.") for number in numbers
            ),
        )


# What google.protobuf.Timestamp can express: 0001-01-01 to 9999-12-31 (UTC).
_TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)
_TIMESTAMP_NANOS = (0, 999_999_999)


def refuse_invalid_timestamps(request: object) -> None:
    """Refuse a Timestamp anywhere in the request that names no instant
    (nanos out of range, a year past 9999): converting it would raise deep
    inside the service, an INTERNAL error for what is the caller's mistake.
    A request served without a deserializer (raw bytes) has none."""
    if not isinstance(request, Message):
        return
    violations = tuple(_timestamp_violations(request, ""))
    if violations:
        raise InvalidArgument(
            f"{violations[0].field} is not a valid timestamp.", violations=violations
        )


def _timestamp_violations(message: Message, prefix: str) -> list[FieldViolation]:
    if message.DESCRIPTOR.full_name == "google.protobuf.Timestamp":
        seconds, nanos = message.seconds, message.nanos  # type: ignore[attr-defined]
        low, high = _TIMESTAMP_SECONDS
        if (
            low <= seconds <= high
            and _TIMESTAMP_NANOS[0] <= nanos <= _TIMESTAMP_NANOS[1]
        ):
            return []
        return [FieldViolation(prefix, "Not a valid timestamp.")]
    found: list[FieldViolation] = []
    for field, value in message.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        path = f"{prefix}.{field.name}" if prefix else field.name
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            items = list(value.values())
        else:
            items = list(value) if field.is_repeated else [value]
        for item in items:
            if isinstance(item, Message):
                found.extend(_timestamp_violations(item, path))
    return found
