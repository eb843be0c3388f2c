"""`make bench`: throughput and latency of the suite through the gateway,
and of billing's ledger RPCs.

The suite runs as real OS processes (auth, billing and catalog services, the
gateway) and is loaded by wrk; bare Starlette apps served the same way give
the ceilings that one Python process can reach on this machine. The ledger
figures come from gRPC calls this harness makes itself. See
tests/bench/README.md.
"""
