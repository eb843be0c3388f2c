"""The results table, printed and written to bench-results/ as Markdown and
JSON, with the issue's targets beside the figures."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.bench.cpu import CpuSplit
from tests.bench.ledger import LedgerResult, LedgerRun
from tests.bench.profile import Cost, Profile
from tests.bench.wrk import Report
from tests.services.billing.ledger_bench import Timings

# The targets: GET /api/models at least 0.3 of its ceiling,
# GET /api/auth/me at least 0.08 of its ceiling and p99 under 50 ms, and a
# balance read costing the same whatever the ledger's length.
MODELS_RATIO_TARGET = 0.3
ME_RATIO_TARGET = 0.08
ME_P99_TARGET_MS = 50.0
# "The same": the long ledger's median read at most this much slower.
BALANCE_RATIO_TARGET = 1.2


@dataclass
class Result:
    key: str
    target: str
    # The result whose requests/s the "x ceiling" column divides by.
    ceiling_key: str | None = None
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
    ledger: LedgerResult | None = None

    def result(self, key: str | None) -> Result | None:
        return next((r for r in self.results if r.key == key), None)

    def ratio(self, result: Result) -> float | None:
        return result.ratio_to(self.result(result.ceiling_key))

    def rows(self) -> list[list[str]]:
        rows = []
        for result in self.results:
            report, ratio = result.report, self.ratio(result)
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

    def ledger_rows(self) -> list[list[str]]:
        if self.ledger is None:
            return []
        return [
            [
                timings.label,
                f"{timings.per_second:,.1f}",
                f"{timings.median_ms:.2f}",
                f"{timings.p99_ms:.2f}",
                f"{timings.count:,}",
                f"{timings.errors:,}",
            ]
            for run in self.ledger.runs
            for timings in run.timings
        ]

    def target_lines(self) -> list[str]:
        return [
            "Issue targets:",
            *self._ratio_target("models", MODELS_RATIO_TARGET),
            *self._ratio_target("me", ME_RATIO_TARGET),
            *self._me_p99_target(),
            *self._balance_target(),
        ]

    def _ratio_target(self, key: str, target: float) -> list[str]:
        result = self.result(key)
        label = f"{_TARGET_NAMES[key]} >= {target} x {_TARGET_CEILINGS[key]}"
        if result is None or result.report is None:
            return [f"  {label}: not measured"]
        ratio = self.ratio(result)
        if ratio is None:
            return [f"  {label}: not measured (no {_TARGET_CEILINGS[key]} run)"]
        return [f"  {label}: {ratio:.3f} -> {_verdict(ratio >= target)}"]

    def _me_p99_target(self) -> list[str]:
        me = self.result("me")
        label = f"GET /api/auth/me p99 < {ME_P99_TARGET_MS:.0f} ms"
        if me is None or me.report is None:
            return [f"  {label}: not measured"]
        p99 = me.report.p99_ms
        return [f"  {label}: {p99:.2f} ms -> {_verdict(p99 < ME_P99_TARGET_MS)}"]

    def _balance_target(self) -> list[str]:
        rows = f"{self.ledger.load.rows:,}" if self.ledger else "a long ledger's"
        label = (
            f"GetBalance, {rows} entries ~ 10 entries "
            f"(median at most {BALANCE_RATIO_TARGET} x)"
        )
        reads = self.ledger.balance_reads() if self.ledger else None
        if reads is None:
            return [f"  {label}: not measured"]
        median, p99 = _balance_ratios(*reads)
        return [
            f"  {label}: median {median:.3f} x, p99 {p99:.3f} x -> "
            f"{_verdict(median <= BALANCE_RATIO_TARGET)}"
        ]

    def note_lines(self) -> list[str]:
        lines = [
            f"{result.target}: {note}"
            for result in self.results
            for note in result.notes
        ]
        if self.ledger is not None:
            lines += [f"ledger: {note}" for note in self.ledger.notes]
            lines += [
                f"ledger, {_run_name(run)}: {note}"
                for run in self.ledger.runs
                for note in run.notes
            ]
        return lines

    def cpu_lines(self) -> list[str]:
        lines = [
            f"  {result.target}: {result.cpu.describe()}"
            for result in self.results
            if result.cpu is not None
        ]
        if self.ledger is not None:
            lines += [
                f"  ledger, {_run_name(run)}: {run.cpu.describe()}"
                for run in self.ledger.runs
                if run.cpu is not None
            ]
        return lines

    def profiled(self) -> list[tuple[str, Profile]]:
        """Every profile, with what was running while it was taken."""
        found = [(r.target, p) for r in self.results for p in r.profiles]
        if self.ledger is not None:
            found += [
                (f"ledger, {_run_name(run)}", p)
                for run in self.ledger.runs
                for p in run.profiles
            ]
        return found

    def to_json(self) -> dict[str, Any]:
        me, models = self.result("me"), self.result("models")
        reads = self.ledger.balance_reads() if self.ledger else None
        ratios = _balance_ratios(*reads) if reads else None
        return {
            "settings": self.settings,
            "results": [_result_json(r, self.ratio(r)) for r in self.results],
            "ledger": _ledger_json(self.ledger) if self.ledger else None,
            "targets": {
                "models_ratio_min": MODELS_RATIO_TARGET,
                "models_ratio": self.ratio(models) if models else None,
                "me_ratio_min": ME_RATIO_TARGET,
                "me_p99_ms_max": ME_P99_TARGET_MS,
                "me_ratio": self.ratio(me) if me else None,
                "me_p99_ms": me.report.p99_ms if me and me.report else None,
                "balance_median_ratio_max": BALANCE_RATIO_TARGET,
                "balance_median_ratio": ratios[0] if ratios else None,
                "balance_p99_ratio": ratios[1] if ratios else None,
            },
        }


_TARGET_NAMES = {"models": "GET /api/models", "me": "GET /api/auth/me"}
_TARGET_CEILINGS = {"models": "models-ceiling", "me": "ceiling"}


def _balance_ratios(long: Timings, short: Timings) -> tuple[float, float]:
    """(median, p99) of the long ledger's reads over the short one's."""
    return (
        long.median_ms / short.median_ms if short.median_ms else float("inf"),
        long.p99_ms / short.p99_ms if short.p99_ms else float("inf"),
    )


def _run_name(run: LedgerRun) -> str:
    return " and ".join(timings.label for timings in run.timings) or run.key


HEADER = [
    "target",
    "requests/s",
    "p50 ms",
    "p99 ms",
    "non-2xx",
    "socket errors",
    "x ceiling",
]


LEDGER_HEADER = ["billing (gRPC)", "per second", "p50 ms", "p99 ms", "calls", "errors"]


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
        "ceiling": result.ceiling_key,
        "ratio_to_ceiling": ratio,
        "cpu_cores": _cpu_json(result.cpu),
        "notes": result.notes,
        "profiles": [_profile_json(p) for p in result.profiles],
    }


def _cpu_json(cpu: CpuSplit | None) -> dict[str, float] | None:
    if cpu is None:
        return None
    return {**cpu.cores, "other": cpu.other, "machine": cpu.machine}


def _profile_json(profile: Profile) -> dict[str, Any]:
    return {
        "process": profile.process,
        "raw": str(profile.raw_path),
        "seconds": profile.seconds,
        "samples": profile.samples,
        "gil_busy": profile.gil_busy,
        "self": [asdict(c) for c in profile.self_costs],
        "self_by_package": [asdict(c) for c in profile.package_costs],
        "omnihub_inclusive": [asdict(c) for c in profile.omnihub_costs],
    }


def _timings_json(timings: Timings) -> dict[str, Any]:
    return {
        "label": timings.label,
        "calls": timings.count,
        "per_second": timings.per_second,
        "p50_ms": timings.median_ms,
        "p99_ms": timings.p99_ms,
        "errors": timings.errors,
        "seconds": timings.elapsed,
    }


def _ledger_json(ledger: LedgerResult) -> dict[str, Any]:
    return {
        "rows": ledger.load.rows,
        "written_seconds": ledger.written_seconds,
        "notes": ledger.notes,
        "runs": [
            {
                "key": run.key,
                "series": [_timings_json(t) for t in run.timings],
                "cpu_cores": _cpu_json(run.cpu),
                "notes": run.notes,
                "profiles": [_profile_json(p) for p in run.profiles],
            }
            for run in ledger.runs
        ],
    }


def text_table(rows: list[list[str]], header: list[str] = HEADER) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [
            cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)
        ]
        return "  ".join([first, *rest])

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def markdown_table(rows: list[list[str]], header: list[str] = HEADER) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "| --- | " + " | ".join("---:" for _ in header[1:]) + " |",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def profile_lines(summary: Summary) -> list[str]:
    lines: list[str] = []
    for during, profile in summary.profiled():
        if not profile.samples:
            lines += ["", f"{profile.process} was idle during {during}."]
            continue
        lines += [
            "",
            f"Profile of {profile.process} during {during}: GIL held "
            f"{profile.gil_busy:.0%} of the time ({profile.samples} samples "
            f"over {profile.seconds:.1f}s; stacks in {profile.raw_path})",
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


def _ledger_lines(summary: Summary, table: Callable[..., str]) -> list[str]:
    rows = summary.ledger_rows()
    if not rows:
        return []
    return ["", table(rows, LEDGER_HEADER)]


def as_text(summary: Summary) -> str:
    notes = summary.note_lines()
    return "\n".join(
        [
            "Settings:",
            *settings_lines(summary.settings),
            "",
            text_table(summary.rows()),
            *_ledger_lines(summary, text_table),
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
            *_ledger_lines(summary, markdown_table),
            "",
            *(f"    {line}" for line in summary.target_lines()),
            *(f"    {line}" for line in _cpu_section(summary)),
            *(["", "Notes:", "", *(f"- {n}" for n in notes)] if notes else []),
            *(
                ["", "```", *profile_lines(summary), "```"]
                if summary.profiled()
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
