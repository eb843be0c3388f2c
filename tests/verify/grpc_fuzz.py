"""Stage: fuzz every RPC of every OmniHub service over gRPC.

    python -m tests.verify.grpc_fuzz [--short] --out grpc_fuzz.json

Runs tests/fuzz/test_grpc_fuzz.py under pytest with a larger example budget
(GRPC_FUZZ_EXAMPLES requests per RPC, each sent by five callers) and reads
the tally the module writes (GRPC_FUZZ_TALLY): calls made per RPC, status
codes seen per service, and every call answered UNKNOWN, INTERNAL or not at
all. The module starts its own suite on a database of its own and drops it.
The stage passes when pytest passes and every RPC was called.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.database import ROOT

STAGE = "grpc_fuzz"
MODULE = "tests/fuzz/test_grpc_fuzz.py"
EXAMPLES = {"short": 3, "full": 25}
# pytest-timeout's per-test limit; one RPC's examples must fit in it.
TEST_TIMEOUT = {"short": 120, "full": 900}
STOP_SECONDS = 60
HEADLINE = [
    "RPCs",
    "called",
    "answered OK",
    "calls",
    "examples per RPC",
    "failures",
    "seconds",
]


def run_pytest(budget: str, tally: Path) -> tuple[int, float, str]:
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}:{ROOT / 'protos'}",
        "GRPC_FUZZ_EXAMPLES": str(EXAMPLES[budget]),
        "GRPC_FUZZ_TALLY": str(tally),
    }
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:randomly",
        "-q",
        "-rf",
        f"--timeout={TEST_TIMEOUT[budget]}",
        MODULE,
    ]
    started = time.monotonic()
    with subprocess.Popen(  # noqa: S603 - our own interpreter and module
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as pytest:
        try:
            output, _ = pytest.communicate()
        except BaseException:
            # Interrupted: pytest stops on SIGINT after tearing down its
            # fixtures, so the suite it started stops and its database goes.
            pytest.send_signal(signal.SIGINT)
            pytest.communicate(timeout=STOP_SECONDS)
            raise
    return pytest.returncode, time.monotonic() - started, output


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def summarise(
    tally: dict[str, Any], returncode: int, seconds: float, budget: str
) -> dict[str, Any]:
    rpcs: list[str] = tally.get("rpcs", [])
    calls: dict[str, int] = tally.get("calls", {})
    codes: dict[str, dict[str, int]] = tally.get("codes", {})
    failures: list[dict[str, str]] = tally.get("failures", [])
    uncovered = sorted(rpc for rpc in rpcs if not calls.get(rpc))
    never_ok = sorted(set(rpcs) - set(tally.get("answered_ok", [])))
    ok = returncode == 0 and bool(rpcs) and not uncovered and not failures
    figures: dict[str, Any] = {
        "rpcs": len(rpcs),
        "rpcs_called": len(rpcs) - len(uncovered),
        "calls": sum(calls.values()),
        "rpcs_answering_ok": len(rpcs) - len(never_ok),
        "examples_per_rpc": EXAMPLES[budget],
        "failures": len(failures),
        "seconds": round(seconds, 1),
        "pytest_exit": returncode,
    }
    for service, seen in codes.items():
        for code, count in seen.items():
            figures[f"{service.rsplit('.', 1)[1]}.{code}"] = count
    return {
        "ok": ok,
        "figures": figures,
        "summary": (
            f"{figures['rpcs_called']}/{len(rpcs)} RPCs, {figures['calls']} calls, "
            f"{len(failures)} failures in {figures['seconds']} s"
        ),
        "markdown": render(figures, codes, failures, uncovered, never_ok),
    }


def render(
    figures: dict[str, Any],
    codes: dict[str, dict[str, int]],
    failures: list[dict[str, str]],
    uncovered: list[str],
    never_ok: list[str],
) -> str:
    all_codes = sorted({code for seen in codes.values() for code in seen})
    sections = [
        table(
            HEADLINE,
            [
                [
                    figures["rpcs"],
                    figures["rpcs_called"],
                    figures["rpcs_answering_ok"],
                    figures["calls"],
                    figures["examples_per_rpc"],
                    figures["failures"],
                    figures["seconds"],
                ]
            ],
        ),
        "Status codes per service:\n\n"
        + table(
            ["service", *all_codes],
            [
                [service, *(seen.get(code, 0) for code in all_codes)]
                for service, seen in sorted(codes.items())
            ],
        ),
    ]
    if uncovered:
        sections.append("RPCs never called: " + ", ".join(uncovered))
    if never_ok:
        # Not a failure: every answer was a deliberate refusal, but the fuzz
        # never got past validation there, so deeper code went untested.
        sections.append("RPCs never answered OK: " + ", ".join(never_ok))
    if failures:
        sections.append(
            "Failures:\n\n"
            + table(
                ["rpc", "caller", "code", "details", "request"],
                [
                    [f[k].replace("|", "\\|") for k in ("rpc", "caller", "code")]
                    + [
                        f["details"].replace("|", "\\|"),
                        f"`{f['request'][:120].replace('|', '/')}`",
                    ]
                    for f in failures
                ],
            )
        )
    return "\n\n".join(sections)


def main() -> int:
    parser = argparse.ArgumentParser(prog=f"python -m tests.verify.{STAGE}")
    parser.add_argument("--short", action="store_true", help="the CI budget")
    parser.add_argument("--out", type=Path, required=True, help="the stage's JSON")
    args = parser.parse_args()
    budget = "short" if args.short else "full"
    signal.signal(signal.SIGTERM, _interrupt)
    with tempfile.TemporaryDirectory() as scratch:
        tally_path = Path(scratch) / "tally.json"
        returncode, seconds, output = run_pytest(budget, tally_path)
        tally = json.loads(tally_path.read_text()) if tally_path.exists() else {}
    result = summarise(tally, returncode, seconds, budget)
    if returncode != 0 and not result["figures"]["failures"]:
        tail = "\n".join(output.strip().splitlines()[-30:])
        result["markdown"] += f"\n\npytest output (last lines):\n\n```\n{tail}\n```"
    command = f"python -m tests.verify.{STAGE}" + (" --short" if args.short else "")
    args.out.write_text(
        json.dumps({"stage": STAGE, "command": f"{command} --out {args.out}", **result})
    )
    print(result["summary"])
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
