"""Small conversions every servicer needs between Python values and messages."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import unknown_fields
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
