"""Razorpay: orders, payment look-ups and the two signatures it uses.

The billing service creates an order here before the browser opens Razorpay
Checkout, and trusts a payment only after one of two checks: the Checkout
callback's signature (HMAC of "<stored order id>|<payment id>" with the API key
secret) or a webhook whose signature (HMAC of the raw body with the webhook
secret, a different secret) verifies. Both HMACs are hex SHA-256.

Calls have a 3 s connect and a 10 s overall limit. Payment look-ups are read
only and are retried on 5xx, 429 and network failures; order creation is sent
once, because a retried request can leave a second order behind and only the
caller knows whether to try again with a new receipt. Local runs and tests
point `base_url` at deploy/simulators/razorpay.py; the code path is the same.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from libs.errors import (
    DomainError,
    InvalidArgument,
    NotConfigured,
    PaymentFailed,
    Unavailable,
)
from libs.logs import get_logger

log = get_logger(__name__)

CONNECT_TIMEOUT_SECONDS = 3.0
TOTAL_TIMEOUT_SECONDS = 10.0
FETCH_ATTEMPTS = 3
RETRY_BACKOFF_SECONDS = 0.2

# Razorpay ids are a prefix and 14 letters or digits; a little slack is kept
# for longer ids, but nothing that could change the request path.
_PAYMENT_ID = re.compile(r"^pay_[A-Za-z0-9]{1,40}$")
_RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
_UNAVAILABLE_MESSAGE = "The payment provider is not reachable right now. Try again."


@dataclass(frozen=True)
class Order:
    id: str
    amount: int
    currency: str
    status: str
    receipt: str | None


@dataclass(frozen=True)
class PaymentInfo:
    id: str
    order_id: str | None
    status: str
    amount: int
    currency: str


@dataclass(frozen=True)
class WebhookEvent:
    """The facts billing needs from a webhook body.

    `status` and `amount` come from the payment entity when the event carries
    one (payment.*, order.paid) and from the order entity otherwise; an event
    with neither has only its name.
    """

    event: str
    payment_id: str | None
    order_id: str | None
    amount: int | None
    status: str | None


class _Malformed(ValueError):
    """A Razorpay document lacks a field or has one of the wrong type."""


class RazorpayClient:
    def __init__(
        self,
        base_url: str,
        key_id: str,
        key_secret: str,
        webhook_secret: str,
        http: httpx.AsyncClient | None = None,
        *,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
        total_timeout: float = TOTAL_TIMEOUT_SECONDS,
        retry_backoff: float = RETRY_BACKOFF_SECONDS,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._key_id = key_id
        self._key_secret = key_secret
        self._webhook_secret = webhook_secret
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient()
        self._timeout = httpx.Timeout(total_timeout, connect=connect_timeout)
        self._total_timeout = total_timeout
        self._retry_backoff = retry_backoff

    def __repr__(self) -> str:
        return f"RazorpayClient(base_url={self._base_url!r}, key_id={self._key_id!r})"

    @property
    def key_id(self) -> str:
        """The public key id Checkout is opened with."""
        return self._key_id

    async def create_order(
        self,
        amount_paise: int,
        currency: str,
        receipt: str,
        notes: Mapping[str, str],
    ) -> Order:
        body = {
            "amount": amount_paise,
            "currency": currency,
            "receipt": receipt,
            "notes": dict(notes),
        }
        response = await self._call("POST", "/v1/orders", body=body, attempts=1)
        entity = _entity_from(response, refused=InvalidArgument)
        try:
            order = _order_from(entity)
        except _Malformed as exc:
            raise _malformed_response("/v1/orders", exc) from exc
        log.info(
            "razorpay.order_created",
            order_id=order.id,
            amount=order.amount,
            currency=order.currency,
            receipt=receipt,
        )
        return order

    async def fetch_payment(self, payment_id: str) -> PaymentInfo:
        """Razorpay's current view of a payment, e.g. to confirm a capture."""
        if not _PAYMENT_ID.match(payment_id):
            raise PaymentFailed("The payment id is not a Razorpay payment id.")
        path = f"/v1/payments/{payment_id}"
        response = await self._call("GET", path, attempts=FETCH_ATTEMPTS)
        entity = _entity_from(response, refused=PaymentFailed)
        try:
            return _payment_from(entity)
        except _Malformed as exc:
            raise _malformed_response("/v1/payments", exc) from exc

    def verify_checkout(self, order_id: str, payment_id: str, signature: str) -> bool:
        return verify_checkout_signature(
            order_id, payment_id, signature, self._key_secret
        )

    def verify_webhook(self, raw_body: bytes, signature: str) -> bool:
        return verify_webhook_signature(raw_body, signature, self._webhook_secret)

    async def close(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        attempts: int,
    ) -> httpx.Response:
        """Send under the overall time limit; no answer in time is Unavailable."""
        try:
            async with asyncio.timeout(self._total_timeout):
                return await self._send(method, path, body, attempts)
        except TimeoutError as exc:
            log.warning("razorpay.timed_out", method=method, path=path)
            raise Unavailable(_UNAVAILABLE_MESSAGE) from exc

    async def _send(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        attempts: int,
    ) -> httpx.Response:
        attempt = 1
        while True:
            try:
                response = await self._http.request(
                    method,
                    self._base_url + path,
                    json=body,
                    auth=(self._key_id, self._key_secret),
                    timeout=self._timeout,
                )
            except httpx.TransportError as exc:
                log.warning(
                    "razorpay.transport_error",
                    method=method,
                    path=path,
                    attempt=attempt,
                    error=type(exc).__name__,
                )
                if attempt >= attempts:
                    raise Unavailable(_UNAVAILABLE_MESSAGE) from exc
            else:
                retryable = response.status_code in _RETRYABLE_STATUSES
                if attempt >= attempts or not retryable:
                    return response
                log.warning(
                    "razorpay.retrying",
                    method=method,
                    path=path,
                    attempt=attempt,
                    status=response.status_code,
                )
            await asyncio.sleep(self._retry_backoff * 2 ** (attempt - 1))
            attempt += 1


def _entity_from(
    response: httpx.Response, *, refused: type[DomainError]
) -> dict[str, Any]:
    """The JSON object of a successful answer, or the error it stands for.

    `refused` is the error for Razorpay turning the request down (4xx): an
    invalid order is the caller's mistake, an unknown payment id a payment
    that cannot be trusted.
    """
    status = response.status_code
    path = response.request.url.path
    if status in (401, 403):
        log.error("razorpay.keys_refused", path=path, status=status)
        raise NotConfigured("The payment provider refused this server's API keys.")
    if status in _RETRYABLE_STATUSES or not (200 <= status < 500):
        log.warning("razorpay.server_error", path=path, status=status)
        raise Unavailable(_UNAVAILABLE_MESSAGE)
    if status >= 400:
        raise _refusal(response, refused)
    try:
        entity = response.json()
    except ValueError as exc:
        raise _malformed_response(path, exc) from exc
    if not isinstance(entity, dict):
        raise _malformed_response(path, _Malformed("not a JSON object"))
    return entity


def _refusal(response: httpx.Response, refused: type[DomainError]) -> DomainError:
    description, field = _error_details(response)
    log.info(
        "razorpay.request_refused",
        path=response.request.url.path,
        status=response.status_code,
        description=description,
        field=field,
    )
    if field and refused is InvalidArgument:
        return InvalidArgument.for_field(field, description)
    return refused(description)


def _error_details(response: httpx.Response) -> tuple[str, str | None]:
    """Razorpay's `error.description` and `error.field`, when it sent them."""
    fallback = (
        f"The payment provider refused the request (HTTP {response.status_code})."
    )
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return fallback, None
    if not isinstance(error, dict):
        return fallback, None
    description = error.get("description")
    field = error.get("field")
    return (
        description if isinstance(description, str) and description else fallback,
        field if isinstance(field, str) and field else None,
    )


def _malformed_response(path: str, exc: Exception) -> Unavailable:
    log.warning("razorpay.malformed_response", path=path, error=str(exc)[:200])
    return Unavailable(_UNAVAILABLE_MESSAGE)


def _order_from(entity: Mapping[str, Any]) -> Order:
    return Order(
        id=_text(entity, "id"),
        amount=_integer(entity, "amount"),
        currency=_text(entity, "currency"),
        status=_text(entity, "status"),
        receipt=_optional_text(entity, "receipt"),
    )


def _payment_from(entity: Mapping[str, Any]) -> PaymentInfo:
    return PaymentInfo(
        id=_text(entity, "id"),
        order_id=_optional_text(entity, "order_id"),
        status=_text(entity, "status"),
        amount=_integer(entity, "amount"),
        currency=_text(entity, "currency"),
    )


def _text(entity: Mapping[str, Any], name: str) -> str:
    value = entity.get(name)
    if not isinstance(value, str) or not value:
        raise _Malformed(f"{name} is not a non-empty string")
    return value


def _optional_text(entity: Mapping[str, Any], name: str) -> str | None:
    if entity.get(name) is None:
        return None
    return _text(entity, name)


def _integer(entity: Mapping[str, Any], name: str) -> int:
    value = entity.get(name)
    # bool is an int to Python, never to Razorpay.
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Malformed(f"{name} is not an integer")
    return value


def _optional_integer(entity: Mapping[str, Any], name: str) -> int | None:
    if entity.get(name) is None:
        return None
    return _integer(entity, name)


def _hex_hmac(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _same_signature(expected: str, given: str) -> bool:
    # Compared as bytes: compare_digest refuses non-ASCII text, and a header
    # can carry anything.
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


def checkout_signature(order_id: str, payment_id: str, key_secret: str) -> str:
    """What Checkout hands the browser as `razorpay_signature`."""
    return _hex_hmac(key_secret, f"{order_id}|{payment_id}".encode())


def verify_checkout_signature(
    order_id: str, payment_id: str, signature: str, key_secret: str
) -> bool:
    """Check a Checkout callback; `order_id` must be the one stored for the
    user, never the one the browser sent back."""
    if not key_secret:
        return False
    expected = checkout_signature(order_id, payment_id, key_secret)
    return _same_signature(expected, signature)


def webhook_signature(raw_body: bytes, webhook_secret: str) -> str:
    """The `X-Razorpay-Signature` Razorpay sends with this exact body."""
    return _hex_hmac(webhook_secret, raw_body)


def verify_webhook_signature(
    raw_body: bytes, signature: str, webhook_secret: str
) -> bool:
    """Check a webhook over the bytes received, before any JSON parsing: the
    same document serialised differently has a different signature."""
    if not webhook_secret:
        return False
    return _same_signature(webhook_signature(raw_body, webhook_secret), signature)


def parse_webhook(raw_body: bytes) -> WebhookEvent:
    """Read a webhook body whose signature has been verified.

    Events billing does not handle still parse, so the caller can acknowledge
    them; a body that is not a Razorpay event is InvalidArgument.
    """
    try:
        document = json.loads(raw_body)
    except ValueError as exc:
        raise InvalidArgument("The webhook body is not JSON.") from exc
    if not isinstance(document, dict):
        raise InvalidArgument("The webhook body is not a JSON object.")
    try:
        return _event_from(document)
    except _Malformed as exc:
        raise InvalidArgument(
            f"The webhook body is not a Razorpay event: {exc}."
        ) from exc


def _event_from(document: Mapping[str, Any]) -> WebhookEvent:
    event = _text(document, "event")
    payload = document.get("payload", {})
    if not isinstance(payload, dict):
        raise _Malformed("payload is not an object")
    payment = _payload_entity(payload, "payment")
    order = _payload_entity(payload, "order")
    if payment is not None:
        return WebhookEvent(
            event=event,
            payment_id=_text(payment, "id"),
            order_id=_optional_text(payment, "order_id")
            or (_optional_text(order, "id") if order is not None else None),
            amount=_optional_integer(payment, "amount"),
            status=_optional_text(payment, "status"),
        )
    if order is not None:
        return WebhookEvent(
            event=event,
            payment_id=None,
            order_id=_text(order, "id"),
            amount=_optional_integer(order, "amount"),
            status=_optional_text(order, "status"),
        )
    return WebhookEvent(event, None, None, None, None)


def _payload_entity(payload: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """`payload.<name>.entity`, the shape every Razorpay event uses."""
    wrapper = payload.get(name)
    if wrapper is None:
        return None
    entity = wrapper.get("entity") if isinstance(wrapper, dict) else None
    if not isinstance(entity, dict):
        raise _Malformed(f"payload.{name}.entity is not an object")
    return entity
