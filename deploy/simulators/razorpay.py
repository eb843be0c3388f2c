"""A local Razorpay: the Orders API subset OmniHub uses, a simulated
Checkout and signed webhooks.

    RAZORPAY_KEY_ID=rzp_test_local RAZORPAY_KEY_SECRET=... \\
    RAZORPAY_WEBHOOK_SECRET=... RAZORPAY_WEBHOOK_URL=http://127.0.0.1:3001/... \\
    python -m deploy.simulators.razorpay --port 9010

Razorpay API, HTTP Basic auth `key_id:key_secret`, Razorpay's error shape:
    POST /v1/orders              create an order (amount >= 100, receipt <= 40)
    GET  /v1/orders/{id}         the order entity
    GET  /v1/payments/{id}       the payment entity

Simulator controls (no auth: bind to loopback only):
    POST /simulator/checkout/{order_id}/pay  {"outcome": "success"|"failure"}
        stands in for the customer paying in Razorpay Checkout. Answers what
        Checkout hands the browser: on success {razorpay_order_id,
        razorpay_payment_id, razorpay_signature}, on failure Checkout's
        {"error": {..., "metadata": {order_id, payment_id}}}. Then sends the
        webhooks (payment.captured and order.paid, or payment.failed) before
        answering, so a caller sees them delivered when the call returns.
    POST /simulator/faults  {"orders": mode, "payments": mode, "times": n,
        "redeliver_webhooks": n, "hold_webhooks": bool}
        mode is ok, error_500, timeout (hold the request until the client
        gives up) or malformed (a 200 with a cut-off JSON body); `times`
        limits the modes set in the same call to the next n requests;
        `redeliver_webhooks` sends every new event n more times with the same
        event id; `hold_webhooks` records events without sending them.
    GET  /simulator/webhooks           every event: raw body, delivery results
    POST /simulator/webhooks/deliver   {"event_id": optional}: send that event
        again, or every event not yet answered with a 2xx
    GET  /simulator/requests           Razorpay API requests seen, by route

A failed delivery is not retried on a timer as Razorpay does for 24 hours;
/simulator/webhooks/deliver plays the retry. Every response carries
`X-Simulated: true`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import string
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from libs.logs import get_logger

log = get_logger(__name__)

FAULT_MODES = frozenset({"ok", "error_500", "timeout", "malformed"})
FAULT_TARGETS = ("orders", "payments")
CURRENCIES = frozenset({"INR", "USD", "EUR", "GBP", "SGD", "MYR", "AED"})
ORDER_FIELDS = frozenset({"amount", "currency", "receipt", "notes", "partial_payment"})
MIN_AMOUNT = 100
MAX_RECEIPT_LENGTH = 40
MAX_NOTES = 15
MAX_NOTE_LENGTH = 256
MAX_HANG_SECONDS = 60.0
WEBHOOK_TIMEOUT_SECONDS = 5.0
ENVIRONMENT = (
    "RAZORPAY_KEY_ID",
    "RAZORPAY_KEY_SECRET",
    "RAZORPAY_WEBHOOK_SECRET",
)

_ID_ALPHABET = string.ascii_letters + string.digits


def razorpay_id(prefix: str) -> str:
    """An id shaped like Razorpay's: a prefix and 14 letters or digits."""
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(14))


def hex_hmac(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def razorpay_error(
    status: int,
    description: str,
    *,
    field: str | None = None,
    code: str = "BAD_REQUEST_ERROR",
) -> JSONResponse:
    """Razorpay's error body; input errors name the field that caused them."""
    source, step, reason = (
        ("business", "payment_initiation", "input_validation_failed")
        if field
        else ("NA", "NA", "NA")
    )
    error: dict[str, object] = {
        "code": code,
        "description": description,
        "source": source,
        "step": step,
        "reason": reason,
        "metadata": {},
        "field": field,
    }
    return JSONResponse({"error": error}, status_code=status)


@dataclass
class Fault:
    mode: str = "ok"
    remaining: int | None = None

    def take(self) -> str:
        """The mode for this request; a counted fault wears off after use."""
        mode = self.mode
        if self.remaining is not None:
            self.remaining -= 1
            if self.remaining <= 0:
                self.mode, self.remaining = "ok", None
        return mode


@dataclass
class SimulatedEvent:
    id: str
    name: str
    body: bytes
    deliveries: list[str] = field(default_factory=list)
    delivered: bool = False

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "event": self.name,
            "body": self.body.decode(),
            "deliveries": self.deliveries,
            "delivered": self.delivered,
        }


class RazorpaySimulator:
    def __init__(
        self,
        key_id: str,
        key_secret: str,
        webhook_secret: str,
        webhook_url: str | None,
    ) -> None:
        self.key_id = key_id
        self._key_secret = key_secret
        self._webhook_secret = webhook_secret
        self.webhook_url = webhook_url
        self.account_id = razorpay_id("acc_")
        self.orders: dict[str, dict[str, Any]] = {}
        self.payments: dict[str, dict[str, Any]] = {}
        self.events: list[SimulatedEvent] = []
        self.requests: Counter[str] = Counter()
        self.faults = {target: Fault() for target in FAULT_TARGETS}
        self.redeliveries = 0
        self.hold_webhooks = False
        self._http = httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT_SECONDS)

    def routes(self) -> list[Route]:
        return [
            Route("/v1/orders", self.create_order, methods=["POST"]),
            Route("/v1/orders/{order_id}", self.fetch_order, methods=["GET"]),
            Route("/v1/payments/{payment_id}", self.fetch_payment, methods=["GET"]),
            Route(
                "/simulator/checkout/{order_id}/pay", self.checkout, methods=["POST"]
            ),
            Route("/simulator/faults", self.set_faults, methods=["POST"]),
            Route("/simulator/webhooks", self.list_events, methods=["GET"]),
            Route("/simulator/webhooks/deliver", self.deliver, methods=["POST"]),
            Route("/simulator/requests", self.list_requests, methods=["GET"]),
        ]

    async def close(self) -> None:
        await self._http.aclose()

    # Razorpay API

    async def create_order(self, request: Request) -> Response:
        refusal = await self._admit(request, "orders", "POST /v1/orders")
        if refusal is not None:
            return refusal
        try:
            body = json.loads(await request.body())
        except ValueError:
            return razorpay_error(400, "The request body is not valid JSON.")
        problem = order_problem(body)
        if problem is not None:
            return razorpay_error(400, problem[1], field=problem[0])
        order = new_order(body)
        self.orders[order["id"]] = order
        log.info(
            "razorpay_simulator.order_created",
            order_id=order["id"],
            amount=order["amount"],
        )
        return JSONResponse(order)

    async def fetch_order(self, request: Request) -> Response:
        refusal = await self._admit(request, "orders", "GET /v1/orders/{id}")
        if refusal is not None:
            return refusal
        order = self.orders.get(request.path_params["order_id"])
        if order is None:
            return razorpay_error(400, "The id provided does not exist")
        return JSONResponse(order)

    async def fetch_payment(self, request: Request) -> Response:
        refusal = await self._admit(request, "payments", "GET /v1/payments/{id}")
        if refusal is not None:
            return refusal
        payment = self.payments.get(request.path_params["payment_id"])
        if payment is None:
            return razorpay_error(400, "The id provided does not exist")
        return JSONResponse(payment)

    async def _admit(
        self, request: Request, target: str, route: str
    ) -> Response | None:
        """Count the request, check its keys and apply any injected fault;
        None lets the request through."""
        self.requests[route] += 1
        if not self._authorised(request.headers.get("authorization", "")):
            return razorpay_error(401, "Authentication failed")
        mode = self.faults[target].take()
        if mode == "error_500":
            return razorpay_error(
                500, "The simulator was told to fail this request.", code="SERVER_ERROR"
            )
        if mode == "malformed":
            return Response(b'{"id": "order_', media_type="application/json")
        if mode == "timeout":
            await hold_until_client_leaves(request)
            return razorpay_error(504, "Gateway timeout", code="SERVER_ERROR")
        return None

    def _authorised(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        expected = f"{self.key_id}:{self._key_secret}".encode()
        return hmac.compare_digest(decoded.encode(), expected)

    # Checkout

    async def checkout(self, request: Request) -> Response:
        order = self.orders.get(request.path_params["order_id"])
        if order is None:
            return razorpay_error(404, "The id provided does not exist")
        outcome = (await _json_object(request)).get("outcome", "success")
        if outcome not in ("success", "failure"):
            return razorpay_error(400, "outcome must be success or failure")
        if order["status"] == "paid":
            return razorpay_error(400, "This order has already been paid.")
        succeeded = outcome == "success"
        payment = new_payment(order, succeeded=succeeded)
        self.payments[payment["id"]] = payment
        events = self._settle(order, payment)
        log.info(
            "razorpay_simulator.checkout",
            order_id=order["id"],
            payment_id=payment["id"],
            outcome=outcome,
        )
        await self._send_new(events)
        if not succeeded:
            return JSONResponse({"error": checkout_failure(payment)})
        message = f"{order['id']}|{payment['id']}".encode()
        return JSONResponse(
            {
                "razorpay_order_id": order["id"],
                "razorpay_payment_id": payment["id"],
                "razorpay_signature": hex_hmac(self._key_secret, message),
            }
        )

    def _settle(
        self, order: dict[str, Any], payment: dict[str, Any]
    ) -> list[SimulatedEvent]:
        """Move the order on and record the events Razorpay would send."""
        order["attempts"] += 1
        if payment["status"] != "captured":
            order["status"] = "attempted"
            return [self._record("payment.failed", {"payment": payment})]
        order.update(status="paid", amount_paid=order["amount"], amount_due=0)
        return [
            self._record("payment.captured", {"payment": payment}),
            self._record("order.paid", {"payment": payment, "order": order}),
        ]

    def _record(self, name: str, entities: Mapping[str, Any]) -> SimulatedEvent:
        document = {
            "entity": "event",
            "account_id": self.account_id,
            "event": name,
            "contains": list(entities),
            "payload": {kind: {"entity": entity} for kind, entity in entities.items()},
            "created_at": int(time.time()),
        }
        # The body is fixed now, so every redelivery sends the same bytes.
        body = json.dumps(document, separators=(",", ":")).encode()
        event = SimulatedEvent(id=razorpay_id(""), name=name, body=body)
        self.events.append(event)
        return event

    # Webhooks

    async def _send_new(self, events: list[SimulatedEvent]) -> None:
        if self.webhook_url is None or self.hold_webhooks:
            return
        for _ in range(1 + self.redeliveries):
            for event in events:
                await self._send(event, self.webhook_url)

    async def _send(self, event: SimulatedEvent, url: str) -> None:
        headers = {
            "Content-Type": "application/json",
            "X-Razorpay-Signature": hex_hmac(self._webhook_secret, event.body),
            "X-Razorpay-Event-Id": event.id,
        }
        try:
            response = await self._http.post(url, content=event.body, headers=headers)
        except httpx.HTTPError as exc:
            event.deliveries.append(type(exc).__name__)
            log.warning(
                "razorpay_simulator.webhook_failed",
                event_id=event.id,
                error=type(exc).__name__,
            )
            return
        event.deliveries.append(str(response.status_code))
        event.delivered = event.delivered or response.is_success

    async def deliver(self, request: Request) -> Response:
        if self.webhook_url is None:
            return razorpay_error(409, "The simulator has no webhook URL.")
        event_id = (await _json_object(request)).get("event_id")
        if event_id is None:
            chosen = [event for event in self.events if not event.delivered]
        else:
            chosen = [event for event in self.events if event.id == event_id]
            if not chosen:
                return razorpay_error(404, "No event has that id.")
        for event in chosen:
            await self._send(event, self.webhook_url)
        return JSONResponse({"items": [event.summary() for event in chosen]})

    async def list_events(self, request: Request) -> Response:
        return JSONResponse({"items": [event.summary() for event in self.events]})

    # Controls

    async def set_faults(self, request: Request) -> Response:
        body = await _json_object(request)
        times = body.get("times")
        if times is not None and (not isinstance(times, int) or times < 1):
            return razorpay_error(
                400, "times must be a positive integer", field="times"
            )
        for target in FAULT_TARGETS:
            mode = body.get(target)
            if mode is None:
                continue
            if mode not in FAULT_MODES:
                return razorpay_error(400, f"unknown fault {mode!r}", field=target)
            self.faults[target] = Fault(mode, None if mode == "ok" else times)
        redeliveries = body.get("redeliver_webhooks", self.redeliveries)
        if not isinstance(redeliveries, int) or redeliveries < 0:
            return razorpay_error(
                400, "redeliver_webhooks must be 0 or more", field="redeliver_webhooks"
            )
        self.redeliveries = redeliveries
        self.hold_webhooks = bool(body.get("hold_webhooks", self.hold_webhooks))
        return JSONResponse(self._fault_summary())

    def _fault_summary(self) -> dict[str, Any]:
        return {
            **{target: fault.mode for target, fault in self.faults.items()},
            "redeliver_webhooks": self.redeliveries,
            "hold_webhooks": self.hold_webhooks,
        }

    async def list_requests(self, request: Request) -> Response:
        return JSONResponse(dict(self.requests))


def order_problem(body: object) -> tuple[str | None, str] | None:
    """The field at fault and Razorpay's kind of message, or None if valid."""
    if not isinstance(body, dict):
        return None, "The request body must be a JSON object."
    extra = sorted(set(body) - ORDER_FIELDS)
    if extra:
        return extra[
            0
        ], f"{', '.join(extra)} is/are not required and should not be sent"
    amount, currency = body.get("amount"), body.get("currency")
    if not isinstance(amount, int) or isinstance(amount, bool):
        return "amount", "The amount must be an integer."
    if currency not in CURRENCIES:
        return "currency", "Currency is not supported"
    if amount < MIN_AMOUNT:
        return "amount", f"The amount must be at least {currency} 1.00"
    receipt = body.get("receipt")
    if receipt is not None and not isinstance(receipt, str):
        return "receipt", "The receipt must be a string."
    if receipt is not None and len(receipt) > MAX_RECEIPT_LENGTH:
        return "receipt", "The receipt may not be greater than 40 characters."
    return notes_problem(body.get("notes"))


def notes_problem(notes: object) -> tuple[str | None, str] | None:
    if notes is None or notes == []:
        return None
    if not isinstance(notes, dict):
        return "notes", "The notes must be an object."
    if len(notes) > MAX_NOTES:
        return "notes", "The notes may not have more than 15 items."
    for value in notes.values():
        if (
            not isinstance(value, str | int | float)
            or len(str(value)) > MAX_NOTE_LENGTH
        ):
            return "notes", "Each note must be text of at most 256 characters."
    return None


def new_order(body: Mapping[str, Any]) -> dict[str, Any]:
    amount = body["amount"]
    return {
        "id": razorpay_id("order_"),
        "entity": "order",
        "amount": amount,
        "amount_paid": 0,
        "amount_due": amount,
        "currency": body["currency"],
        "receipt": body.get("receipt"),
        "offer_id": None,
        "status": "created",
        "attempts": 0,
        # Razorpay answers an empty list, not an object, when there are none.
        "notes": body.get("notes") or [],
        "created_at": int(time.time()),
    }


def new_payment(order: Mapping[str, Any], *, succeeded: bool) -> dict[str, Any]:
    """A UPI payment on Razorpay's test handles success@ / failure@razorpay."""
    amount = order["amount"]
    # Gateway fee of 2% plus 18% GST on it, as whole paise.
    fee = amount * 236 // 10_000 if succeeded else None
    failure = {
        "error_code": "BAD_REQUEST_ERROR",
        "error_description": "The simulated payment was declined by the bank.",
        "error_source": "bank",
        "error_step": "payment_authorization",
        "error_reason": "payment_failed",
    }
    return {
        "id": razorpay_id("pay_"),
        "entity": "payment",
        "amount": amount,
        "currency": order["currency"],
        "status": "captured" if succeeded else "failed",
        "order_id": order["id"],
        "invoice_id": None,
        "international": False,
        "method": "upi",
        "amount_refunded": 0,
        "refund_status": None,
        "captured": succeeded,
        "description": None,
        "card_id": None,
        "bank": None,
        "wallet": None,
        "vpa": "success@razorpay" if succeeded else "failure@razorpay",
        "email": "customer@example.com",
        "contact": "+919000090000",
        "notes": [],
        "fee": fee,
        "tax": fee * 18 // 118 if fee is not None else None,
        **({key: None for key in failure} if succeeded else failure),
        "acquirer_data": {"rrn": str(secrets.randbelow(10**12))} if succeeded else {},
        "created_at": int(time.time()),
    }


def checkout_failure(payment: Mapping[str, Any]) -> dict[str, Any]:
    """The error Checkout passes to the page's payment.failed handler."""
    return {
        "code": payment["error_code"],
        "description": payment["error_description"],
        "source": payment["error_source"],
        "step": payment["error_step"],
        "reason": payment["error_reason"],
        "metadata": {"order_id": payment["order_id"], "payment_id": payment["id"]},
    }


async def hold_until_client_leaves(request: Request) -> None:
    """Answer nothing until the client disconnects (or a minute passes), so
    a client's timeout is what ends the request, and the server can still
    shut down promptly afterwards."""
    await request.body()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(MAX_HANG_SECONDS):
            # With the body read, the next message is the disconnect.
            while (await request.receive())["type"] != "http.disconnect":
                pass


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


class MarkSimulated:
    """Adds `X-Simulated: true` to every response, errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"x-simulated", b"true")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_marked)


def create_app(
    key_id: str,
    key_secret: str,
    webhook_secret: str,
    webhook_url: str | None,
) -> Starlette:
    simulator = RazorpaySimulator(key_id, key_secret, webhook_secret, webhook_url)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await simulator.close()

    app = Starlette(routes=simulator.routes(), lifespan=lifespan)
    app.add_middleware(MarkSimulated)
    app.state.simulator = simulator
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.simulators.razorpay",
        description="Serve a local Razorpay simulator. Reads "
        + ", ".join(ENVIRONMENT)
        + " and optionally RAZORPAY_WEBHOOK_URL from the environment.",
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    missing = [name for name in ENVIRONMENT if not os.environ.get(name)]
    if missing:
        parser.error("set " + ", ".join(missing))
    app = create_app(
        key_id=os.environ["RAZORPAY_KEY_ID"],
        key_secret=os.environ["RAZORPAY_KEY_SECRET"],
        webhook_secret=os.environ["RAZORPAY_WEBHOOK_SECRET"],
        webhook_url=os.environ.get("RAZORPAY_WEBHOOK_URL") or None,
    )
    log.info("razorpay_simulator.starting", host=args.host, port=args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
