"""The billing service process: `python -m services.billing.main serve`."""

from __future__ import annotations

import sys

from sqlalchemy.ext.asyncio import AsyncEngine

from libs.grpc.server import ServiceDefinition
from libs.process import ServiceProcess, main
from libs.runtime import Runtime
from services.billing import rpc


class BillingProcess(ServiceProcess):
    name = "billing"

    async def build(
        self, runtime: Runtime, engine: AsyncEngine | None
    ) -> list[ServiceDefinition]:
        return [rpc.definition(rpc.BillingServicer())]


if __name__ == "__main__":
    main(BillingProcess(), sys.argv[1:])
