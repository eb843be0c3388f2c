"""The billing service process.

python -m services.billing.main migrate
python -m services.billing.main serve
python -m services.billing.main reconcile   # exits 1 if the books disagree
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from libs.config import Settings, get_settings
from libs.db import create_engine, read_session_factory, session_factory
from libs.errors import format_credits
from libs.grpc.server import ServiceDefinition
from libs.logs import configure_logging, get_logger
from libs.process import ServiceProcess, main
from libs.runtime import Runtime
from services.billing import rpc
from services.billing.checkout_simulator import CheckoutSimulator
from services.billing.models import SCHEMA
from services.billing.payments import PaymentService, is_simulated
from services.billing.razorpay import RazorpayClient
from services.billing.repository import Unbalanced
from services.billing.service import BillingService
from services.billing.totals import publish_totals_forever

log = get_logger(__name__)

RECONCILE_INTERVAL_SECONDS = 3600


class BillingProcess(ServiceProcess):
    name = "billing"
    schema = SCHEMA
    migrations_dir = Path(__file__).parent / "migrations"

    def __init__(self) -> None:
        self.service = BillingService()
        self._engine: AsyncEngine | None = None
        self._razorpay: RazorpayClient | None = None
        self._simulator: CheckoutSimulator | None = None

    async def build(
        self, runtime: Runtime, engine: AsyncEngine | None
    ) -> list[ServiceDefinition]:
        assert engine is not None
        self._engine = engine
        sessions = session_factory(engine)
        settings = runtime.settings
        self._razorpay = razorpay_client(settings)
        if self._razorpay is not None and is_simulated(settings.razorpay_base_url):
            self._simulator = CheckoutSimulator(settings.razorpay_base_url)
        payments = PaymentService(
            self.service,
            sessions,
            self._razorpay,
            webhook_secret=_secret(settings.razorpay_webhook_secret),
            simulator=self._simulator,
        )
        _log_payments(settings, payments)
        servicer = rpc.BillingServicer(
            self.service, payments, sessions, read_session_factory(engine)
        )
        return [rpc.definition(servicer)]

    async def close(self) -> None:
        if self._razorpay is not None:
            await self._razorpay.close()
        if self._simulator is not None:
            await self._simulator.close()

    async def run_background(self) -> None:
        """Publish the ledger totals every 30 s (services/billing/totals.py)
        and check the books every hour."""
        assert self._engine is not None
        sessions = session_factory(self._engine)
        await asyncio.gather(
            publish_totals_forever(sessions), self._reconcile_forever(sessions)
        )

    async def _reconcile_forever(
        self, sessions: async_sessionmaker[AsyncSession]
    ) -> None:
        """A mismatch is a bug worth waking up for."""
        while True:
            await asyncio.sleep(RECONCILE_INTERVAL_SECONDS)
            try:
                async with sessions() as db:
                    unbalanced = await self.service.unbalanced_accounts(db)
            except Exception:
                log.exception("ledger.reconcile_failed")
                continue
            for account in unbalanced:
                log.error("ledger.unbalanced", **_fields(account))


def razorpay_client(settings: Settings) -> RazorpayClient | None:
    """Razorpay with this process's keys; None without both the key id and
    the key secret, which leaves payments off (NOT_CONFIGURED)."""
    key_secret = _secret(settings.razorpay_key_secret)
    if not settings.razorpay_key_id or not key_secret:
        return None
    return RazorpayClient(
        settings.razorpay_base_url,
        settings.razorpay_key_id,
        key_secret,
        _secret(settings.razorpay_webhook_secret),
    )


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value() if value is not None else ""


def _log_payments(settings: Settings, payments: PaymentService) -> None:
    config = payments.checkout_config()
    if not config.key_id:
        log.warning(
            "payments.not_configured",
            hint="Set RAZORPAY_KEY_ID and RAZORPAY_KEY_SECRET to take payments.",
        )
        return
    log.info(
        "payments.configured",
        razorpay_base_url=settings.razorpay_base_url,
        simulated=config.simulated,
        webhooks=settings.razorpay_webhook_secret is not None,
    )


def _fields(account: Unbalanced) -> dict[str, object]:
    return {
        "account_id": str(account.account_id),
        "owner": str(account.owner),
        "balance_micros": account.balance,
        "ledger_total_micros": account.ledger_total,
        "held_micros": account.held,
        "open_holds_micros": account.open_holds,
    }


def describe(account: Unbalanced) -> str:
    return (
        f"{account.account_id} {account.owner}: "
        f"balance {format_credits(account.balance)} vs ledger "
        f"{format_credits(account.ledger_total)}, "
        f"held {format_credits(account.held)} vs open holds "
        f"{format_credits(account.open_holds)}"
    )


async def reconcile(settings: Settings) -> int:
    """Print every account whose totals disagree with its ledger or holds;
    return the process exit status (1 if there is any)."""
    engine = create_engine(settings, SCHEMA)
    try:
        async with session_factory(engine)() as db:
            unbalanced = await BillingService().unbalanced_accounts(db)
    finally:
        await engine.dispose()
    for account in unbalanced:
        print(describe(account))
    if unbalanced:
        print(f"{len(unbalanced)} account(s) do not reconcile.")
        return 1
    print("Every account reconciles with its ledger and open holds.")
    return 0


def cli(argv: list[str]) -> None:
    if argv[:1] == ["reconcile"]:
        settings = get_settings()
        configure_logging(settings, "billing")
        sys.exit(asyncio.run(reconcile(settings)))
    main(BillingProcess(), argv)


if __name__ == "__main__":
    cli(sys.argv[1:])
