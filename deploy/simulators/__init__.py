"""Local stand-ins for outside services, speaking their real protocols.

`make run` and the tests point OmniHub's provider clients at these when no
real credentials are configured; every answer carries `X-Simulated: true`.
"""
