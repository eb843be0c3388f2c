"""The REST fuzz stage of `make verify`:

    python -m tests.verify.rest_fuzz [--short] --out rest_fuzz.json

Starts the whole suite in this event loop on a fresh database (every gRPC
service, the generation workers, the local fal, OpenRouter, Razorpay and
Google, and the gateway under uvicorn), then runs schemathesis' `st run` over
the gateway's /openapi.json in two passes: as a signed-up user over every
operation, then as a superadmin operator over the admin operations. Every
phase runs (examples, coverage, fuzzing, and stateful sequences that feed one
response's ids into the next request). The checks: no 5xx, only declared
status codes and content types, bodies that match their declared schema.

The gateway is wrapped in a tally of the requests it answered, so the counts
in the report are requests sent, not test cases. Exit status 0 when every
check passed and the run sent at least the goal's number of requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shlex
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from deploy.simulators.fal import create_app as create_fal
from deploy.simulators.openrouter import create_app as create_openrouter
from deploy.simulators.razorpay import create_app as create_razorpay
from gateway.app import create_app as create_gateway
from libs.config import Settings
from libs.logs import configure_logging
from services.admin.main import AdminProcess
from services.auth.main import AuthProcess
from services.billing.main import BillingProcess
from services.catalog.main import CatalogProcess
from services.chat.main import ChatProcess
from services.generation.main import GenerationProcess
from services.workspace.main import WorkspaceProcess
from tests import database
from tests.database import ROOT
from tests.fakes.google import FakeGoogle
from tests.fixtures.generation import Workers
from tests.gateway.factories import PASSWORD, create_operator, unique_email
from tests.suite import ServedApp, free_port, run_service, serve_asgi, suite_settings

STAGE = "rest_fuzz"
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)
RAZORPAY_KEYS = {
    "key_id": "rzp_test_fuzz",
    "key_secret": "fuzz-key-secret",
    "webhook_secret": "fuzz-webhook-secret",
}
READY_WITHIN_SECONDS = 10.0
# Credits the fuzz user starts with, so that paid operations get past billing.
STARTING_CREDITS = 100_000
SEED = 20261203
OPERATION = re.compile(r"^(GET|POST|PUT|PATCH|DELETE) /")
SCENARIOS = re.compile(r"Scenarios:\s+(\d+)")
LINKS = re.compile(r"API Links:\s+(\d+) covered / (\d+) selected")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Budget:
    """How much the passes may generate: examples per operation and phase,
    and the seconds all passes share (schemathesis keeps fuzzing until a
    pass's share is spent); `goal` is the requests the run must send."""

    max_examples: int
    seconds: int
    goal: int


SHORT = Budget(max_examples=3, seconds=110, goal=800)
FULL = Budget(max_examples=30, seconds=480, goal=5000)


@dataclass(frozen=True)
class Pass:
    """One `st run`: who signs in, which operations and phases it covers,
    and its share of the budget's seconds."""

    name: str
    identity: str
    phases: str
    share: float
    include_path_regex: str | None = None
    exclude_operations: tuple[str, ...] = ()

    def seconds(self, budget: Budget) -> int:
        return max(10, round(budget.seconds * self.share))


@dataclass
class PassResult:
    fuzz_pass: Pass
    command: list[str]
    exit_code: int
    seconds: float
    requests: int
    statuses: Counter[int]
    report: dict[str, Any]
    operations: set[str]
    failures: list[dict[str, str]]
    stateful: dict[str, int]


class RequestTally:
    """An ASGI wrapper counting the HTTP requests the gateway answered, by
    status."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.statuses: Counter[int] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counted(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.statuses[int(message["status"])] += 1
            await send(message)

        await self.app(scope, receive, counted)


@dataclass
class Suite:
    settings: Settings
    gateway: ServedApp
    tally: RequestTally
    stack: AsyncExitStack = field(repr=False)


# --- The suite ----------------------------------------------------------------


def stage_settings(
    database_url: str, google: FakeGoogle, media_dir: str, razorpay_url: str
) -> Settings:
    gateway_port = free_port()
    return suite_settings(
        database_url,
        google_client_id=google.client_id,
        google_certs_url=google.certs_url,
        media_dir=media_dir,
        port=gateway_port,
        media_base_url=f"http://127.0.0.1:{gateway_port}/media",
        fal_webhook_url=f"http://127.0.0.1:{gateway_port}/api/webhooks/fal",
        razorpay_base_url=razorpay_url,
        razorpay_key_id=RAZORPAY_KEYS["key_id"],
        razorpay_key_secret=RAZORPAY_KEYS["key_secret"],
        razorpay_webhook_secret=RAZORPAY_KEYS["webhook_secret"],
    )


async def serve(stack: AsyncExitStack, app: Any, port: int | None = None) -> ServedApp:
    served = await serve_asgi(app, port)
    stack.push_async_callback(served.stop)
    return served


async def start_simulators(stack: AsyncExitStack, settings: Settings) -> None:
    assert settings.fal_key is not None
    assert settings.openrouter_api_key is not None
    fal = create_fal(key=settings.fal_key.get_secret_value(), user_id="omnihub-local")
    await serve(stack, fal, urlsplit(settings.fal_queue_url).port)
    openrouter = create_openrouter(
        api_key=settings.openrouter_api_key.get_secret_value()
    )
    await serve(stack, openrouter, urlsplit(settings.openrouter_base_url).port)


async def start_services(stack: AsyncExitStack, settings: Settings) -> None:
    processes = (
        AuthProcess(),
        BillingProcess(),
        CatalogProcess(),
        WorkspaceProcess(),
        GenerationProcess(),
        ChatProcess(),
        AdminProcess(),
    )
    for process in processes:
        running = await run_service(process, settings)
        stack.push_async_callback(running.stop, grace=0)
    workers = Workers(settings)
    await workers.start()
    stack.push_async_callback(workers.stop)


async def wait_for_admin(gateway: ServedApp) -> None:
    """Until the gateway's channel to the admin service carries calls."""
    deadline = time.monotonic() + READY_WITHIN_SECONDS
    async with gateway.client() as http:
        while (await http.get("/api/settings")).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway never reached the admin service")
            await asyncio.sleep(0.1)


@asynccontextmanager
async def running_suite(database_url: str) -> AsyncIterator[Suite]:
    async with AsyncExitStack() as stack:
        google = FakeGoogle(client_id="omnihub-fuzz.apps.googleusercontent.com")
        await google.start()
        stack.push_async_callback(google.stop)
        media_dir = stack.enter_context(tempfile.TemporaryDirectory())
        razorpay_port = free_port()
        settings = stage_settings(
            database_url, google, media_dir, f"http://127.0.0.1:{razorpay_port}"
        )
        configure_logging(settings, STAGE)
        razorpay = create_razorpay(
            **RAZORPAY_KEYS,
            webhook_url=f"http://127.0.0.1:{settings.port}/api/payments/webhook",
        )
        await serve(stack, razorpay, razorpay_port)
        await start_simulators(stack, settings)
        await start_services(stack, settings)
        tally = RequestTally(create_gateway(settings))
        gateway = await serve(stack, tally, settings.port)
        await wait_for_admin(gateway)
        yield Suite(settings, gateway, tally, stack)


# --- The identities -----------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    kind: str
    login: str
    password: str


async def fuzz_identities(suite: Suite) -> dict[str, Identity]:
    """A signed-up user with credits to spend, and a superadmin operator."""
    operator = await create_operator(suite.settings, "superadmin")
    email = unique_email("fuzz")
    async with suite.gateway.client() as http:
        registered = await http.post(
            "/api/auth/register",
            json={"email": email, "password": PASSWORD, "name": "Fuzz User"},
        )
        registered.raise_for_status()
        user_id = registered.json()["user"]["id"]
        signed_in = await http.post(
            "/api/admin/login",
            json={"username": operator.username, "password": operator.password},
        )
        signed_in.raise_for_status()
        granted = await http.put(
            f"/api/admin/users/{user_id}/credits",
            json={"amount": STARTING_CREDITS, "reason": "REST fuzz stage"},
            headers={"Authorization": f"Bearer {signed_in.json()['token']}"},
        )
        granted.raise_for_status()
    return {
        "user": Identity("user", email, PASSWORD),
        "operator": Identity("operator", operator.username, operator.password),
    }


# --- The passes ---------------------------------------------------------------

PASSES = (
    # Every operation as a user: the admin ones must refuse with a declared
    # 401/403, the rest do the real work.
    Pass("user", "user", "examples,coverage,fuzzing", share=0.4),
    # Sequences as a user: an id from one answer (a workspace, project,
    # conversation, generation) feeds the next request (fetch, change,
    # delete), along the links schemathesis infers from the document.
    # The sign-outs are left out of it: schemathesis signs in again only
    # outside sequences, and a revoked token would end every later step at
    # 401 (the user pass covers them).
    Pass(
        "user-stateful",
        "user",
        "stateful",
        share=0.25,
        exclude_operations=(
            "POST /api/auth/logout",
            "POST /api/auth/logout-all",
            "DELETE /api/auth/sessions/{session_id}",
        ),
    ),
    # The admin operations as a superadmin, after the user's: they may ban
    # the fuzz user or switch maintenance mode on.
    Pass(
        "operator",
        "operator",
        "examples,coverage,fuzzing,stateful",
        share=0.35,
        include_path_regex=r"^/api/(admin|settings$|announcements$)",
    ),
)


def st_command(
    fuzz_pass: Pass, base_url: str, budget: Budget, report_dir: Path
) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{base_url}/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(budget.max_examples),
        "--phases",
        fuzz_pass.phases,
        "--max-time",
        str(fuzz_pass.seconds(budget)),
        "--seed",
        str(SEED),
        # One worker: on CPython 3.11, hypothesis reading lambda sources in
        # two threads at once fails now and then with "AST constructor
        # recursion depth mismatch" (cpython#106905), an error of the tool.
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--continue-on-failure",
        "--suppress-health-check",
        "all",
        "--generation-database",
        "none",
        "--no-color",
        "--report",
        "junit,json",
        "--report-junit-path",
        str(report_dir / "junit.xml"),
        "--report-json-path",
        str(report_dir / "report.json"),
    ]
    if fuzz_pass.include_path_regex:
        command += ["--include-path-regex", fuzz_pass.include_path_regex]
    for operation in fuzz_pass.exclude_operations:
        command += ["--exclude-name", operation]
    return command


def junit_cases(path: Path) -> list[ElementTree.Element]:
    """The test cases of a JUnit report: one per operation tested."""
    if not path.exists():
        return []
    # Written by our own `st run`, not by an outsider.
    return list(ElementTree.parse(path).getroot().iter("testcase"))  # noqa: S314


def junit_failures(path: Path) -> list[dict[str, str]]:
    """Each failed test case of the JUnit report: its operation and the
    schemathesis text (the check, the response and a curl reproduction)."""
    found = []
    for case in junit_cases(path):
        for failure in (*case.findall("failure"), *case.findall("error")):
            text = failure.text or failure.get("message") or ""
            found.append({"operation": case.get("name", "?"), "text": text.strip()})
    return found


async def run_pass(
    suite: Suite, fuzz_pass: Pass, identity: Identity, budget: Budget, root: Path
) -> PassResult:
    report_dir = root / fuzz_pass.name
    report_dir.mkdir(parents=True, exist_ok=True)
    command = st_command(fuzz_pass, suite.gateway.url, budget, report_dir)
    env = {**os.environ, **hooks_environment(suite.gateway.url, identity)}
    log_path = root / f"{fuzz_pass.name}.log"
    before = Counter(suite.tally.statuses)
    started = time.monotonic()
    exit_code = await run_st(command, env, log_path)
    seconds = time.monotonic() - started
    statuses = suite.tally.statuses - before
    report_path = report_dir / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    junit = report_dir / "junit.xml"
    return PassResult(
        fuzz_pass,
        command,
        exit_code,
        seconds,
        sum(statuses.values()),
        statuses,
        report,
        {
            name
            for case in junit_cases(junit)
            if OPERATION.match(name := case.get("name", ""))
        },
        junit_failures(junit),
        stateful_figures(log_path.read_text(errors="replace")),
    )


def hooks_environment(base_url: str, identity: Identity) -> dict[str, str]:
    """What tests/verify/rest_fuzz_auth.py reads to sign `identity` in."""
    return {
        "PYTHONPATH": f"{ROOT}:{ROOT / 'protos'}",
        "SCHEMATHESIS_HOOKS": "tests.verify.rest_fuzz_auth",
        "FUZZ_BASE_URL": base_url,
        "FUZZ_IDENTITY": identity.kind,
        "FUZZ_LOGIN": identity.login,
        "FUZZ_PASSWORD": identity.password,
    }


async def run_st(command: list[str], env: dict[str, str], log_path: Path) -> int:
    # A local file opened once, before the run: no event-loop stall to fear.
    with open(log_path, "wb") as log_file:  # noqa: ASYNC230
        process = await asyncio.create_subprocess_exec(
            *command, cwd=ROOT, env=env, stdout=log_file, stderr=log_file
        )
        try:
            return await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


def stateful_figures(log: str) -> dict[str, int]:
    """The stateful phase's scenarios and the links they followed, from the
    `st run` summary (its JSON report does not carry them)."""
    figures = {}
    if found := SCENARIOS.search(log):
        figures["scenarios"] = int(found[1])
    if found := LINKS.search(log):
        figures["links_covered"] = int(found[1])
        figures["links_total"] = int(found[2])
    return figures


# --- The report ---------------------------------------------------------------


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def failed_checks(result: PassResult) -> Counter[str]:
    found: Counter[str] = Counter()
    for group in result.report.get("failures", []):
        found[str(group.get("title", group.get("type", "?")))] += int(group["count"])
    return found


def pass_figures(result: PassResult) -> dict[str, Any]:
    report = result.report
    operations = report.get("operations") or {}
    cases = report.get("test_cases") or {}
    return {
        "requests": result.requests,
        "server_errors": sum(n for s, n in result.statuses.items() if s >= 500),
        "operations_selected": operations.get("selected", 0),
        "operations_tested": operations.get("tested", 0),
        "test_cases": cases.get("generated", 0),
        "failed_test_cases": cases.get("with_failures", 0),
        "unique_failures": cases.get("unique_failures", 0),
        "errors": sum(int(e["count"]) for e in report.get("errors", [])),
        "reauth_count": (report.get("auth") or {}).get("reauth_count", 0),
        "reauth_broke": (report.get("auth") or {}).get("reauth_broke", False),
        "seconds": round(result.seconds, 1),
        "st_exit_code": result.exit_code,
        **result.stateful,
    }


def pass_rows(results: list[PassResult]) -> list[list[object]]:
    rows = []
    for result in results:
        figures = pass_figures(result)
        statuses = ", ".join(
            f"{status}: {count}" for status, count in sorted(result.statuses.items())
        )
        rows.append(
            [
                result.fuzz_pass.name,
                figures["requests"],
                f"{figures['operations_tested']}/{figures['operations_selected']}",
                figures["test_cases"],
                figures["unique_failures"],
                figures["errors"],
                _links(result.stateful),
                figures["seconds"],
                statuses,
            ]
        )
    return rows


def _links(stateful: dict[str, int]) -> str:
    if "links_total" not in stateful:
        return "-"
    return (
        f"{stateful['links_covered']}/{stateful['links_total']} "
        f"({stateful.get('scenarios', 0)} scenarios)"
    )


def failure_sections(results: list[PassResult]) -> list[str]:
    sections = []
    for result in results:
        checks = failed_checks(result)
        if checks:
            sections.append(
                f"\n**{result.fuzz_pass.name} pass, failures by check**\n\n"
                + markdown_table(
                    ["check", "count"], [[c, n] for c, n in checks.most_common()]
                )
            )
        for failure in result.failures:
            sections.append(
                f"\n`{failure['operation']}` ({result.fuzz_pass.name})\n\n"
                f"```\n{failure['text']}\n```"
            )
        for error in result.report.get("errors", []):
            sections.append(
                f"\nError ({result.fuzz_pass.name}): {error['title']} x{error['count']}"
            )
    return sections


def warning_sections(results: list[PassResult]) -> list[str]:
    """schemathesis' hints that are not failures: valid-looking requests the
    gateway refused (its rules are stricter than the document says), and
    operations that never found a row to work on."""
    sections = []
    for result in results:
        warnings = result.report.get("warnings") or {}
        for label in ("validation_mismatch", "missing_test_data"):
            if operations := warnings.get(label):
                listed = ", ".join(f"`{o}`" for o in operations)
                sections.append(
                    f"\nHint ({result.fuzz_pass.name}, {label}, not a failure): "
                    f"{listed}."
                )
    return sections


def render_markdown(
    results: list[PassResult], budget: Budget, figures: dict[str, Any]
) -> str:
    header = [
        "pass",
        "requests",
        "operations tested",
        "test cases",
        "unique failures",
        "errors",
        "stateful links followed",
        "seconds",
        "statuses",
    ]
    lines = [
        f"schemathesis over /openapi.json, checks: {', '.join(CHECKS)}; "
        f"{budget.max_examples} examples per operation and phase, "
        f"{budget.seconds} s shared by the passes, seed {SEED}. A 401 signs "
        "the identity in again and replays the request once (fuzzing signs "
        "it out on purpose).",
        "",
        markdown_table(header, pass_rows(results)),
        "",
        f"Requests answered by the gateway: **{figures['requests']}** "
        f"(goal {budget.goal}) over {figures['operations_covered']} operations; "
        f"5xx answers: **{figures['server_errors']}**; "
        f"failed checks: **{figures['failures']}**.",
    ]
    for result in results:
        if result.fuzz_pass.exclude_operations:
            left_out = ", ".join(f"`{o}`" for o in result.fuzz_pass.exclude_operations)
            lines.append(f"\nLeft out of the {result.fuzz_pass.name} pass: {left_out}.")
    lines += failure_sections(results)
    lines += warning_sections(results)
    lines.append(
        "\nA pass again, against a running suite (`make run`) at $GATEWAY, with "
        "a user's (or operator's) sign-in:"
    )
    for result in results:
        lines.append(f"\n- {result.fuzz_pass.name}: `{reproduction(result)}`")
    return "\n".join(lines)


def reproduction(result: PassResult) -> str:
    gateway = result.command[result.command.index("run") + 1].removesuffix(
        "/openapi.json"
    )
    kind = result.fuzz_pass.identity
    env = (
        "PYTHONPATH=.:protos SCHEMATHESIS_HOOKS=tests.verify.rest_fuzz_auth "
        f"FUZZ_BASE_URL=$GATEWAY FUZZ_IDENTITY={kind} "
        "FUZZ_LOGIN=<login> FUZZ_PASSWORD=<password>"
    )
    arguments = shlex.join(result.command[3:]).replace(gateway, "$GATEWAY")
    return f"{env} .venv/bin/st {arguments}"


def stage_figures(results: list[PassResult]) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "requests": sum(r.requests for r in results),
        "server_errors": sum(
            n for r in results for s, n in r.statuses.items() if s >= 500
        ),
        "failures": sum(sum(failed_checks(r).values()) for r in results),
        "errors": sum(pass_figures(r)["errors"] for r in results),
        "seconds": round(sum(r.seconds for r in results), 1),
        "operations_covered": len(set().union(*(r.operations for r in results))),
    }
    for result in results:
        for name, value in pass_figures(result).items():
            figures[f"{result.fuzz_pass.name}_{name}"] = value
    return figures


def stage_ok(
    results: list[PassResult], figures: dict[str, Any], budget: Budget
) -> bool:
    complete = all(r.report.get("complete") for r in results)
    return (
        complete
        and len(results) == len(PASSES)
        and figures["requests"] >= budget.goal
        and figures["server_errors"] == 0
        and figures["failures"] == 0
        and figures["errors"] == 0
    )


# --- The stage ----------------------------------------------------------------


async def fuzz(database_url: str, budget: Budget, root: Path) -> list[PassResult]:
    async with running_suite(database_url) as suite:
        identities = await fuzz_identities(suite)
        results = []
        for fuzz_pass in PASSES:
            identity = identities[fuzz_pass.identity]
            results.append(await run_pass(suite, fuzz_pass, identity, budget, root))
        return results


async def run_stage(budget: Budget, root: Path) -> list[PassResult]:
    with database.server_url() as server:
        database_url = await database.create_database(server)
        try:
            return await fuzz(database_url, budget, root)
        finally:
            await database.drop_database(server, database_url)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.verify.rest_fuzz")
    parser.add_argument("--short", action="store_true", help="the CI budget")
    parser.add_argument("--out", type=Path, required=True, help="the stage's JSON")
    parser.add_argument(
        "--keep-reports",
        type=Path,
        help="a directory for schemathesis' own reports and logs",
    )
    options = parser.parse_args()
    budget = SHORT if options.short else FULL
    with tempfile.TemporaryDirectory() as scratch:
        root = options.keep_reports or Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        results = asyncio.run(run_stage(budget, root))
    figures = stage_figures(results)
    ok = stage_ok(results, figures, budget)
    summary = (
        f"{figures['requests']} requests over {figures['operations_covered']} "
        f"operations: {figures['server_errors']} 5xx, "
        f"{figures['failures']} failed checks"
    )
    command = "PYTHONPATH=.:protos .venv/bin/python -m tests.verify.rest_fuzz" + (
        " --short" if options.short else ""
    )
    document = {
        "stage": STAGE,
        "ok": ok,
        "command": command + " --out rest_fuzz.json",
        "summary": summary,
        "figures": figures,
        "markdown": render_markdown(results, budget, figures),
    }
    options.out.write_text(json.dumps(document, indent=2) + "\n")
    print(summary, file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
