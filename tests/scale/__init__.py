"""`make scale-test`: the suite with two replicas of everything, one of each
killed under load (issue 8, "The proof on this machine").

Two replicas of every service (the same port on 127.0.0.1 and 127.0.0.2,
every client balancing over both with `round_robin`), two generation workers
and two gateways run as OS processes from this checkout. Simulated users go
through both gateways at once; a third of the way in, one replica of each
service, one worker and one gateway are killed with SIGKILL. The run passes
when every request succeeded or failed with a retryable error, both
replicas of each service served calls before the kill, every generation
ended, no finished generation still holds credits and the ledger
reconciles. See tests/scale/__main__.py.
"""
