"""The customer's side of Razorpay Checkout, when Razorpay is the local
simulator (deploy/simulators/razorpay.py).

Real Checkout is a page in the customer's browser; nothing on the server
can pay an order. The simulator has a control that does, so that someone
running the suite without Razorpay keys can buy credits end to end: it pays
the order, sends the signed webhooks, and answers what Checkout would hand
the browser. Billing uses it only for the caller's own order and only when
its Razorpay base URL is not Razorpay's (`payments.is_simulated`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from libs.errors import FailedPrecondition, NotFound, PaymentFailed, Unavailable
from libs.logs import get_logger

log = get_logger(__name__)

# The simulator sends the webhooks before it answers, one at a time.
TIMEOUT_SECONDS = 15.0
_UNAVAILABLE = "The Razorpay simulator is not reachable right now. Try again."


@dataclass(frozen=True)
class CheckoutResult:
    """What Checkout hands the browser after a successful payment."""

    order_id: str
    payment_id: str
    signature: str


class CheckoutSimulator:
    def __init__(self, base_url: str, http: httpx.AsyncClient | None = None) -> None:
        self._base_url = base_url.rstrip("/")
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=TIMEOUT_SECONDS)

    async def pay(self, order_id: str, outcome: str) -> CheckoutResult:
        """Pay `order_id` with the given outcome; a declined payment raises
        PaymentFailed with the bank's reason."""
        url = f"{self._base_url}/simulator/checkout/{order_id}/pay"
        try:
            response = await self._http.post(url, json={"outcome": outcome})
            answer = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("checkout_simulator.unreachable", error=type(exc).__name__)
            raise Unavailable(_UNAVAILABLE) from exc
        if not isinstance(answer, dict):
            raise Unavailable(_UNAVAILABLE)
        if response.status_code == 404:
            raise NotFound("The Razorpay simulator does not know this order.")
        error = answer.get("error")
        if response.status_code == 400:
            raise FailedPrecondition(_description(error, "The order cannot be paid."))
        if response.is_error:
            raise Unavailable(_UNAVAILABLE)
        if error is not None:
            raise PaymentFailed(_description(error, "The payment was declined."))
        return _result(answer)

    async def close(self) -> None:
        if self._owns_http:
            await self._http.aclose()


def _description(error: Any, fallback: str) -> str:
    if isinstance(error, dict) and isinstance(error.get("description"), str):
        return str(error["description"])
    return fallback


def _result(answer: dict[str, Any]) -> CheckoutResult:
    try:
        return CheckoutResult(
            order_id=str(answer["razorpay_order_id"]),
            payment_id=str(answer["razorpay_payment_id"]),
            signature=str(answer["razorpay_signature"]),
        )
    except KeyError as exc:
        raise Unavailable(_UNAVAILABLE) from exc
