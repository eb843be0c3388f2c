"""The results table, printed and written to bench-results/ as Markdown and
JSON, with the issue's targets beside the figures."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.bench.cpu import CpuSplit
from tests.bench.profile import Cost, Profile
from tests.bench.wrk import Report

# The targets for GET /api/auth/me.
ME_RATIO_TARGET = 0.08
ME_P99_TARGET_MS = 50.0


@dataclass
class Result:
    key: str
    target: str
    report: Report | None = None
    # Why the figures need reading with care (errors, an empty token pool),
    # or why the target was not run.
    notes: list[str] = field(default_factory=list)
    profiles: list[Profile] = field(default_factory=list)
    cpu: CpuSplit | None = None

    def ratio_to(self, ceiling: Result | None) -> float | None:
        if self.report is None or ceiling is None or ceiling.report is None:
            return None
        if not ceiling.report.requests_per_second:
            return None
        return self.report.requests_per_second / ceiling.report.requests_per_second


@dataclass
class Summary:
    settings: dict[str, Any]
    results: list[Result]

    def result(self, key: str) -> Result | None:
        return next((r for r in self.results if r.key == key), None)

    def rows(self) -> list[list[str]]:
        ceiling = self.result("ceiling")
        rows = []
        for result in self.results:
            report, ratio = result.report, result.ratio_to(ceiling)
            if report is None:
                rows.append([result.target, *["-"] * 6])
                continue
            rows.append(
                [
                    result.target,
                    f"{report.requests_per_second:,.0f}",
                    f"{report.p50_ms:.2f}",
                    f"{report.p99_ms:.2f}",
                    f"{report.non_2xx:,}",
                    f"{report.socket_error_count:,}",
                    "-" if ratio is None else f"{ratio:.3f}",
                ]
            )
        return rows

    def target_lines(self) -> list[str]:
        me, ceiling = self.result("me"), self.result("ceiling")
        if me is None or me.report is None:
            return ["Issue targets: GET /api/auth/me was not measured."]
        ratio = me.ratio_to(ceiling)
        p99 = me.report.p99_ms
        ratio_text = (
            "not measured (no ceiling run)"
            if ratio is None
            else f"{ratio:.3f} -> {_verdict(ratio >= ME_RATIO_TARGET)}"
        )
        return [
            "Issue targets for GET /api/auth/me:",
            f"  requests/s >= {ME_RATIO_TARGET} x ceiling: {ratio_text}",
            f"  p99 < {ME_P99_TARGET_MS:.0f} ms: {p99:.2f} ms -> "
            f"{_verdict(p99 < ME_P99_TARGET_MS)}",
        ]

    def note_lines(self) -> list[str]:
        return [
            f"{result.target}: {note}"
            for result in self.results
            for note in result.notes
        ]

    def cpu_lines(self) -> list[str]:
        return [
            f"  {result.target}: {result.cpu.describe()}"
            for result in self.results
            if result.cpu is not None
        ]

    def to_json(self) -> dict[str, Any]:
        ceiling = self.result("ceiling")
        me = self.result("me")
        return {
            "settings": self.settings,
            "results": [_result_json(r, r.ratio_to(ceiling)) for r in self.results],
            "targets": {
                "me_ratio_min": ME_RATIO_TARGET,
                "me_p99_ms_max": ME_P99_TARGET_MS,
                "me_ratio": me.ratio_to(ceiling) if me else None,
                "me_p99_ms": me.report.p99_ms if me and me.report else None,
            },
        }


HEADER = [
    "target",
    "requests/s",
    "p50 ms",
    "p99 ms",
    "non-2xx",
    "socket errors",
    "x ceiling",
]


def _verdict(met: bool) -> str:
    return "met" if met else "NOT MET"


def _result_json(result: Result, ratio: float | None) -> dict[str, Any]:
    report = result.report
    return {
        "key": result.key,
        "target": result.target,
        "requests_per_second": report.requests_per_second if report else None,
        "p50_ms": report.p50_ms if report else None,
        "p99_ms": report.p99_ms if report else None,
        "percentiles_ms": report.percentiles_ms if report else None,
        "requests": report.requests if report else None,
        "seconds": report.seconds if report else None,
        "non_2xx": report.non_2xx if report else None,
        "socket_errors": report.socket_errors if report else None,
        "ratio_to_ceiling": ratio,
        "cpu_cores": (
            {
                **result.cpu.cores,
                "other": result.cpu.other,
                "machine": result.cpu.machine,
            }
            if result.cpu
            else None
        ),
        "notes": result.notes,
        "profiles": [
            {
                "process": p.process,
                "raw": str(p.raw_path),
                "samples": p.samples,
                "gil_busy": p.gil_busy,
                "self": [asdict(c) for c in p.self_costs],
                "self_by_package": [asdict(c) for c in p.package_costs],
                "omnihub_inclusive": [asdict(c) for c in p.omnihub_costs],
            }
            for p in result.profiles
        ],
    }


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [HEADER, *rows]) for i in range(len(HEADER))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [
            cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)
        ]
        return "  ".join([first, *rest])

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(HEADER), rule, *(line(row) for row in rows)])


def markdown_table(rows: list[list[str]]) -> str:
    lines = [
        "| " + " | ".join(HEADER) + " |",
        "| --- | " + " | ".join("---:" for _ in HEADER[1:]) + " |",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def profile_lines(summary: Summary) -> list[str]:
    lines: list[str] = []
    for result in summary.results:
        for profile in result.profiles:
            lines += [
                "",
                f"Profile of {profile.process} during {result.target}: GIL held "
                f"{profile.gil_busy:.0%} of the time ({profile.samples} samples; "
                f"stacks in {profile.raw_path})",
                "  by function (self):",
                *_cost_lines(profile.self_costs),
                "  by package (self):",
                *_cost_lines(profile.package_costs),
                "  OmniHub functions (inclusive):",
                *_cost_lines(profile.omnihub_costs),
            ]
    return lines


def _cost_lines(costs: list[Cost]) -> list[str]:
    return [f"    {cost.share:6.1%}  {cost.frame}" for cost in costs]


def settings_lines(settings: dict[str, Any]) -> list[str]:
    return [f"  {name}: {value}" for name, value in settings.items()]


def _cpu_section(summary: Summary) -> list[str]:
    lines = summary.cpu_lines()
    if not lines:
        return []
    return ["", "CPU during each run (cores kept busy on average):", *lines]


def as_text(summary: Summary) -> str:
    notes = summary.note_lines()
    return "\n".join(
        [
            "Settings:",
            *settings_lines(summary.settings),
            "",
            text_table(summary.rows()),
            "",
            *summary.target_lines(),
            *_cpu_section(summary),
            *(["", "Notes:", *(f"  {n}" for n in notes)] if notes else []),
            *profile_lines(summary),
        ]
    )


def as_markdown(summary: Summary) -> str:
    notes = summary.note_lines()
    return "\n".join(
        [
            "# OmniHub benchmark",
            "",
            *(f"- {name}: {value}" for name, value in summary.settings.items()),
            "",
            markdown_table(summary.rows()),
            "",
            *(f"    {line}" for line in summary.target_lines()),
            *(f"    {line}" for line in _cpu_section(summary)),
            *(["", "Notes:", "", *(f"- {n}" for n in notes)] if notes else []),
            *(
                ["", "```", *profile_lines(summary), "```"]
                if any(r.profiles for r in summary.results)
                else []
            ),
            "",
        ]
    )


def write(summary: Summary, directory: Path, stem: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    markdown = directory / f"{stem}.md"
    data = directory / f"{stem}.json"
    markdown.write_text(as_markdown(summary))
    data.write_text(json.dumps(summary.to_json(), indent=2) + "\n")
    return markdown, data
