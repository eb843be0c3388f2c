"""`make bench`: throughput and latency of the suite through the gateway.

The suite runs as real OS processes (auth service, gateway) and is loaded by
wrk; a bare Starlette app served the same way gives the ceiling that one
Python process can reach on this machine. See tests/bench/README.md.
"""
