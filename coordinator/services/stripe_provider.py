"""Stripe behind the PaymentProvider interface (services.payments), through the
``stripe`` library: Checkout Sessions, the Customer Portal, and webhooks.

Webhook bodies are verified with the library's own signature check (HMAC-SHA256
of ``timestamp.body`` with the endpoint's secret, five minutes' tolerance) and
then read as plain JSON: only the fields listed in ``_map`` are used. Both the
older payload shapes (``invoice.subscription``, ``subscription.current_period_end``)
and the newer ones (``invoice.parent.subscription_details``, per-item periods)
are understood.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import stripe
from stripe._base_address import BaseAddresses

from coordinator.services.payments import (
    CHECKOUT_COMPLETED,
    IGNORED,
    INVOICE_PAID,
    PAYMENT_FAILED,
    PROVIDER_ACTIVE,
    PROVIDER_ENDED,
    PROVIDER_PAST_DUE,
    SUBSCRIPTION_DELETED,
    SUBSCRIPTION_UPDATED,
    BillingEvent,
    PaymentError,
    WebhookError,
)

log = logging.getLogger(__name__)

TOLERANCE_S = 300
TIMEOUT_S = 20.0
_KINDS = {
    "checkout.session.completed": CHECKOUT_COMPLETED,
    "invoice.paid": INVOICE_PAID,
    "invoice.payment_failed": PAYMENT_FAILED,
    "customer.subscription.updated": SUBSCRIPTION_UPDATED,
    "customer.subscription.deleted": SUBSCRIPTION_DELETED,
}
_STATUSES = {
    "active": PROVIDER_ACTIVE,
    "trialing": PROVIDER_ACTIVE,
    "past_due": PROVIDER_PAST_DUE,
    "unpaid": PROVIDER_PAST_DUE,
    "incomplete": PROVIDER_PAST_DUE,
    "paused": PROVIDER_PAST_DUE,
    "canceled": PROVIDER_ENDED,
    "incomplete_expired": PROVIDER_ENDED,
}


def _get(obj: Any, *path: str | int) -> Any:
    """``obj[path[0]][path[1]]...``, or None where anything is missing."""
    for key in path:
        if isinstance(key, int):
            if not isinstance(obj, list) or len(obj) <= key:
                return None
        elif not isinstance(obj, dict):
            return None
        obj = obj[key] if isinstance(key, int) else obj.get(key)
    return obj


def _id(value: Any) -> str | None:
    """A Stripe reference: an id string, or an expanded object with an ``id``."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and 0 < len(value) <= 255 else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _amount(minor: Any, currency: Any) -> str:
    if not isinstance(minor, int) or not isinstance(currency, str):
        return ""
    return f"{Decimal(minor) / 100:.2f} {currency.upper()}"


def _invoice(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    lines = _get(obj, "lines", "data") or []
    ends = [e for e in (_number(_get(line, "period", "end")) for line in lines) if e is not None]
    prices = [
        _id(_get(line, "price")) or _id(_get(line, "pricing", "price_details", "price"))
        for line in lines
    ]
    sub = _id(obj.get("subscription")) or _id(
        _get(obj, "parent", "subscription_details", "subscription")
    )
    minor = obj.get("amount_paid") if kind == INVOICE_PAID else obj.get("amount_due")
    return {
        "customer_id": _id(obj.get("customer")),
        "subscription_id": sub,
        "period_end": max(ends) if ends else None,
        "price_id": next((p for p in prices if p), None),
        "amount": _amount(minor, obj.get("currency")),
    }


def _subscription(obj: dict[str, Any]) -> dict[str, Any]:
    items = _get(obj, "items", "data") or []
    end = _number(obj.get("current_period_end"))
    if end is None:
        ends = [e for e in (_number(_get(i, "current_period_end")) for i in items) if e]
        end = max(ends) if ends else None
    status = obj.get("status")
    return {
        "customer_id": _id(obj.get("customer")),
        "subscription_id": _id(obj.get("id")),
        "period_end": end,
        "price_id": _id(_get(items, 0, "price")),
        "status": _STATUSES.get(status, PROVIDER_PAST_DUE) if isinstance(status, str) else None,
        "cancel_at_period_end": bool(obj.get("cancel_at_period_end"))
        or obj.get("cancel_at") is not None,
    }


def _checkout(obj: dict[str, Any]) -> dict[str, Any]:
    raw_user = obj.get("client_reference_id") or _get(obj, "metadata", "user_id")
    user_id = int(raw_user) if isinstance(raw_user, str) and raw_user.isdigit() else None
    return {
        "customer_id": _id(obj.get("customer")),
        "subscription_id": _id(obj.get("subscription")),
        "user_id": user_id,
        "price_id": _id(_get(obj, "metadata", "price_id")),
    }


def _map(event: dict[str, Any]) -> BillingEvent:
    event_id, created = event.get("id"), _number(event.get("created"))
    obj = _get(event, "data", "object")
    if (
        not isinstance(event_id, str)
        or not event_id
        or created is None
        or not isinstance(obj, dict)
    ):
        raise WebhookError("not a Stripe event")
    kind = _KINDS.get(str(event.get("type")), IGNORED)
    fields: dict[str, Any] = {}
    if kind == CHECKOUT_COMPLETED:
        fields = _checkout(obj)
    elif kind in (INVOICE_PAID, PAYMENT_FAILED):
        fields = _invoice(kind, obj)
    elif kind in (SUBSCRIPTION_UPDATED, SUBSCRIPTION_DELETED):
        fields = _subscription(obj)
    return BillingEvent(id=event_id[:200], kind=kind, created=created, **fields)


class StripeProvider:
    name = "stripe"

    def __init__(self, secret_key: str, webhook_secret: str, api_base: str = "") -> None:
        self._webhook_secret = webhook_secret
        bases: BaseAddresses = {"api": api_base.rstrip("/")} if api_base else {}
        self._client = stripe.StripeClient(
            secret_key,
            base_addresses=bases,
            max_network_retries=1,
            # The library's synchronous client, run in a thread: its httpx client
            # passes raw bodies in a way httpx deprecates.
            http_client=stripe.new_default_http_client(timeout=TIMEOUT_S),
        )

    async def checkout_url(
        self,
        *,
        user_id: int,
        email: str | None,
        customer_id: str | None,
        price_id: str,
        success_url: str,
        cancel_url: str,
    ) -> str:
        params: dict[str, Any] = {
            "mode": "subscription",
            "line_items": [{"price": price_id, "quantity": 1}],
            "client_reference_id": str(user_id),
            "metadata": {"user_id": str(user_id), "price_id": price_id},
            "subscription_data": {"metadata": {"user_id": str(user_id)}},
            "success_url": success_url,
            "cancel_url": cancel_url,
        }
        if customer_id:
            params["customer"] = customer_id
        elif email:
            params["customer_email"] = email
        try:
            session = await asyncio.to_thread(
                self._client.v1.checkout.sessions.create,
                params,  # type: ignore[arg-type]
            )
        except stripe.StripeError as exc:
            log.warning("Stripe refused a checkout session: %s", exc)
            raise PaymentError("The payment service is not available right now.") from exc
        if not session.url:
            raise PaymentError("The payment service gave no checkout page.")
        return str(session.url)

    async def portal_url(self, *, customer_id: str, return_url: str) -> str:
        try:
            session = await asyncio.to_thread(
                self._client.v1.billing_portal.sessions.create,
                {"customer": customer_id, "return_url": return_url},
            )
        except stripe.StripeError as exc:
            log.warning("Stripe refused a portal session: %s", exc)
            raise PaymentError("The payment service is not available right now.") from exc
        return str(session.url)

    async def cancel(self, subscription_id: str, *, at_period_end: bool) -> None:
        try:
            if at_period_end:
                await asyncio.to_thread(
                    self._client.v1.subscriptions.update,
                    subscription_id,
                    {"cancel_at_period_end": True},
                )
            else:
                await asyncio.to_thread(self._client.v1.subscriptions.cancel, subscription_id)
        except stripe.StripeError as exc:
            log.warning("Stripe refused to cancel %s: %s", subscription_id, exc)
            raise PaymentError("The payment service is not available right now.") from exc

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> BillingEvent:
        signature = headers.get("stripe-signature")
        if not signature:
            raise WebhookError("missing Stripe-Signature header")
        try:
            text = body.decode("utf-8")
            stripe.WebhookSignature.verify_header(
                text, signature, self._webhook_secret, TOLERANCE_S
            )
            event = json.loads(text)
        except (UnicodeDecodeError, ValueError, stripe.SignatureVerificationError) as exc:
            raise WebhookError(f"bad signature or body: {exc}") from None
        if not isinstance(event, dict):
            raise WebhookError("not a Stripe event")
        return _map(event)
