"""Every RPC of every OmniHub service, called with generated requests, valid
and not, by every kind of caller, must answer OK or a deliberate gRPC status:
never UNKNOWN or INTERNAL (an exception escaped the service's error mapping),
never a hang past the call's deadline, and the serving process stays up.

The RPCs come from the generated descriptors, so a new RPC is fuzzed without
anyone listing it. GRPC_FUZZ_EXAMPLES sets the examples per RPC (a request
each, sent by every caller); `python -m tests.verify.grpc_fuzz` raises it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from google.protobuf import text_format
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.fuzz.conftest import Fleet
from tests.fuzz.messages import request, unknown_field
from tests.fuzz.surface import BROKEN_CODES, TALLY, Rpc, all_rpcs, call
from tests.suite import SERVICES

EXAMPLES_ENV = "GRPC_FUZZ_EXAMPLES"
RPCS = all_rpcs()

settings.register_profile(
    "grpc-fuzz",
    max_examples=int(os.environ.get(EXAMPLES_ENV, "2")),
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
    # A failure is reported with its request; shrinking would cost minutes.
    phases=[Phase.explicit, Phase.generate],
)


@pytest.fixture(scope="module", autouse=True)
def tally() -> Iterator[None]:
    yield
    TALLY.write()


def test_every_service_of_the_protos_is_fuzzed() -> None:
    services = {rpc.service for rpc in RPCS}
    processes = {rpc.process for rpc in RPCS}

    assert processes == set(SERVICES)
    assert {
        "omnihub.generation.v1.CommunityService",
        "omnihub.admin.v1.AdminUsersService",
        "omnihub.admin.v1.AdminInsightsService",
    } <= services
    assert len(RPCS) == len({rpc.path for rpc in RPCS})


@pytest.mark.parametrize("rpc", RPCS, ids=[rpc.id for rpc in RPCS])
@settings(settings.get_profile("grpc-fuzz"))
@given(data=st.data())
async def test_rpc_answers_every_request_with_a_deliberate_status(
    fleet: Fleet, rpc: Rpc, data: st.DataObject
) -> None:
    message = data.draw(request(rpc.input, fleet.drawn_from), label="request")
    payload = message.SerializeToString()
    if data.draw(st.integers(0, 9), label="unknown field?") == 0:
        payload += data.draw(unknown_field(), label="unknown field")
    failures = []
    for caller, metadata in fleet.callers.items():
        outcome = await call(fleet.channel(rpc.process), rpc, payload, metadata)
        TALLY.saw(rpc, outcome)
        if outcome.reply is not None:
            # What the call made or found (a new id) may be asked for next.
            fleet.known.remember(GetMessageClass(rpc.output).FromString(outcome.reply))
        if outcome.code in BROKEN_CODES or outcome.hung:
            shown = text_format.MessageToString(message, as_one_line=True)
            TALLY.failed(rpc, caller, outcome, shown)
            failures.append(f"{caller}: {outcome.code.name} {outcome.details}")

    assert not failures, "\n".join(failures)
    assert await fleet.healthy(rpc.process), f"{rpc.process} stopped serving"
