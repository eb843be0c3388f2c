"""The span of time an aggregate RPC reports on (auth SummarizeUsers,
generation SummarizeGenerations, billing SummarizeRevenue), and the SQL
expression that puts a row in its hour or day.

Buckets are hours or days in UTC, whatever the database session's time
zone, so every service cuts the same range at the same moments.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import ColumnElement, func, literal_column

from libs.errors import FieldViolation, InvalidArgument

BUCKETS = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
DEFAULT_BUCKET = "day"
# Enough for 90 days of hours or years of days; a report is a chart, not a
# dump, so a range that would need more points is refused.
MAX_POINTS = 2_400


@dataclass(frozen=True)
class Period:
    """From `start` (inclusive) to `end` (exclusive), counted per `bucket`."""

    start: datetime
    end: datetime
    bucket: str

    @classmethod
    def from_request(cls, start: Timestamp, end: Timestamp, bucket: str) -> Period:
        """The period a request names, or InvalidArgument saying what is wrong
        with it."""
        violations: list[FieldViolation] = []
        bucket = bucket or DEFAULT_BUCKET
        if bucket not in BUCKETS:
            violations.append(FieldViolation("bucket", 'bucket is "hour" or "day".'))
        if not start.seconds and not start.nanos:
            violations.append(FieldViolation("start", "start is required."))
        if not end.seconds and not end.nanos:
            violations.append(FieldViolation("end", "end is required."))
        if violations:
            raise InvalidArgument(violations[0].message, violations=tuple(violations))
        period = cls(start.ToDatetime(tzinfo=UTC), end.ToDatetime(tzinfo=UTC), bucket)
        period.check()
        return period

    def check(self) -> None:
        if self.end <= self.start:
            raise InvalidArgument.for_field("end", "end must be after start.")
        if (self.end - self.start) / BUCKETS[self.bucket] > MAX_POINTS:
            raise InvalidArgument.for_field(
                "start",
                f"A report covers at most {MAX_POINTS} {self.bucket}s; "
                "choose a shorter range or a longer bucket.",
            )

    def bucket_of(self, column: Any) -> ColumnElement[datetime]:
        """SQL: the first moment of the UTC hour or day `column` falls in.

        date_bin with an origin at a UTC midnight is plain arithmetic on the
        timestamp, several times cheaper per row than date_trunc in a named
        time zone. The interval is written into the statement rather than
        bound, so that the same expression in SELECT and GROUP BY reads as
        one to PostgreSQL; it is one of BUCKETS' keys, never the caller's.
        """
        step: ColumnElement[str] = literal_column(f"INTERVAL '1 {self.bucket}'")
        return func.date_bin(step, column, literal_column(_ORIGIN))


# A UTC midnight: days and hours are counted from it.
_ORIGIN = "TIMESTAMPTZ '2000-01-01 00:00:00+00'"
