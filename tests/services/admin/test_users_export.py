"""The users CSV: escaping by the csv module, and cells a spreadsheet would
run as a formula made plain text."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest

from services.admin.users.export import HEADER, csv_lines, inert, user_row


def read_back(body: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body.decode())))


class TestEscaping:
    @pytest.mark.parametrize(
        "value",
        ['Ann "the Bold"', "Smith, Ann", "two\nlines", "carriage\r\nreturn", "ü, ß"],
    )
    def test_a_value_comes_back_whole(self, value: str) -> None:
        body = csv_lines([("id", value, "last")])

        assert read_back(body) == [["id", value, "last"]]

    def test_quotes_are_doubled_inside_a_quoted_cell(self) -> None:
        assert csv_lines([('say "hi", then go',)]) == b'"say ""hi"", then go"\r\n'

    def test_rows_end_with_crlf(self) -> None:
        assert csv_lines([("a", "b"), ("c", "d")]) == b"a,b\r\nc,d\r\n"


class TestFormulas:
    @pytest.mark.parametrize(
        "value", ["=1+2", "+1", "-1", "@SUM(A1)", "\tcmd", "\r=cmd", '=HYPERLINK("x")']
    )
    def test_a_formula_is_made_text(self, value: str) -> None:
        (row,) = read_back(csv_lines([(value,)]))

        assert row == ["'" + value]

    @pytest.mark.parametrize("value", ["Ann", "a=b", "1-2", "x@example.com", ""])
    def test_other_values_are_left_alone(self, value: str) -> None:
        assert inert(value) == value


class TestUserRow:
    def test_credits_are_decimal_and_times_utc(self) -> None:
        row = user_row(
            "u1",
            "ann@example.com",
            "Ann",
            "CosmicFox1",
            "active",
            "",
            "email",
            1_500_000,
            0,
            datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        )

        assert len(row) == len(HEADER)
        assert row[7:] == ("1.5", "0", "2026-01-02T03:04:05+00:00")
