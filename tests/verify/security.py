"""The security stage of `make verify`: runs tests/security (also part of
`make test`) and reports each file's and each class's results.

    PYTHONPATH=.:protos .venv/bin/python -m tests.verify.security --out f.json

The tests themselves create their own database (tests/conftest.py), on
TEST_DATABASE_URL's server or an embedded one. --short changes nothing:
they are already within the CI budget.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from xml.etree import ElementTree

from tests.database import ROOT

TEST_DIR = "tests/security"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.verify.security")
    parser.add_argument("--short", action="store_true")
    parser.add_argument("--out", type=Path, required=True)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        junit = Path(work) / "junit.xml"
        argv = [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:randomly",
            "-q",
            f"--junitxml={junit}",
            TEST_DIR,
        ]
        started = time.monotonic()
        code = subprocess.run(argv, cwd=ROOT, check=False).returncode  # noqa: S603
        seconds = time.monotonic() - started
        cases = _cases(junit) if junit.exists() else []
    result = _result(cases, code, seconds)
    options.out.write_text(json.dumps(result, indent=2))
    sys.exit(0 if result["ok"] else 1)


def _cases(junit: Path) -> list[tuple[str, str, str]]:
    """(group, test name, outcome) for every test case in the JUnit file."""
    found = []
    for case in ElementTree.parse(junit).getroot().iter("testcase"):  # noqa: S314
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped":
                outcome = "skipped"
        group = case.get("classname", "").removeprefix("tests.security.")
        found.append((group, case.get("name", ""), outcome))
    return found


def _result(
    cases: list[tuple[str, str, str]], code: int, seconds: float
) -> dict[str, object]:
    outcomes = Counter(outcome for _, _, outcome in cases)
    by_group: dict[str, Counter[str]] = {}
    for group, _, outcome in cases:
        by_group.setdefault(group, Counter())[outcome] += 1
    failed = [f"{group}::{name}" for group, name, o in cases if o == "failed"]
    ok = code == 0 and outcomes["failed"] == 0 and outcomes["passed"] > 0
    lines = [
        f"{outcomes['passed']} passed, {outcomes['failed']} failed, "
        f"{outcomes['skipped']} skipped in {seconds:.0f} s (pytest exit {code}).",
        "",
        "| group | passed | failed | skipped |",
        "| --- | --- | --- | --- |",
    ]
    for group, counts in sorted(by_group.items()):
        lines.append(
            f"| {group} | {counts['passed']} | {counts['failed']} "
            f"| {counts['skipped']} |"
        )
    if failed:
        lines += ["", "Failed:", "", *(f"- `{name}`" for name in failed)]
    return {
        "stage": "security",
        "ok": ok,
        "command": f"PYTHONPATH=.:protos .venv/bin/python -m pytest -q {TEST_DIR}",
        "summary": f"{outcomes['passed']} security tests passed, "
        f"{outcomes['failed']} failed",
        "figures": {
            "tests_passed": outcomes["passed"],
            "tests_failed": outcomes["failed"],
            "tests_skipped": outcomes["skipped"],
            "seconds": round(seconds, 1),
        },
        "markdown": "\n".join(lines),
    }


if __name__ == "__main__":
    main()
