"""The payment provider interface: what the subscription life cycle needs from a
payment service, and nothing else.

A provider is one module with one class that has the methods of
:class:`PaymentProvider` (see ``stripe_provider.py``) and a line in
:func:`make_provider`. It turns its own webhooks into provider-neutral
:class:`BillingEvent` values; services.subscriptions applies them, so the life
cycle (grace period, downgrade at the period end, out-of-order events,
idempotency) is written once for every provider. docs/operations.md, "Adding a
payment provider", walks through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from coordinator.settings import Settings

# BillingEvent kinds
CHECKOUT_COMPLETED = "checkout_completed"  # a checkout for a user finished: customer, subscription
INVOICE_PAID = "invoice_paid"  # a period was paid (first or renewal): period end, amount
PAYMENT_FAILED = "payment_failed"  # a renewal payment failed: past due, the grace period runs
SUBSCRIPTION_UPDATED = "subscription_updated"  # status, price, period end, cancel flag changed
SUBSCRIPTION_DELETED = "subscription_deleted"  # it ended (at the period end, or at once)
IGNORED = "ignored"  # a well-signed event this service does not act on
KINDS = (
    CHECKOUT_COMPLETED,
    INVOICE_PAID,
    PAYMENT_FAILED,
    SUBSCRIPTION_UPDATED,
    SUBSCRIPTION_DELETED,
    IGNORED,
)

# Provider-neutral subscription statuses a provider maps its own to.
PROVIDER_ACTIVE, PROVIDER_PAST_DUE, PROVIDER_ENDED = "active", "past_due", "ended"


class PaymentError(Exception):
    """The provider refused or could not be reached; the message is safe to show."""


class WebhookError(Exception):
    """A webhook that is not the provider's (bad or missing signature, bad body): 400."""


@dataclass(frozen=True, slots=True)
class BillingEvent:
    """One verified webhook event, in the provider's terms mapped to ours.

    ``id`` is the provider's event id (idempotency); ``created`` the provider's
    time of the event (ordering). ``user_id`` comes from the checkout's
    reference (only checkout events have it). ``price_id`` names the tier via
    the tiers file; ``status`` is one of the PROVIDER_* statuses.
    """

    id: str
    kind: str
    created: float
    customer_id: str | None = None
    subscription_id: str | None = None
    user_id: int | None = None
    price_id: str | None = None
    status: str | None = None
    period_end: float | None = None
    cancel_at_period_end: bool | None = None
    amount: str = ""  # for invoices: "4.90 EUR"


class PaymentProvider(Protocol):
    """What a payment provider does for shapefarm. Every call may raise PaymentError."""

    name: str  # stored with subscriptions and events: "stripe"

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
        """Where to send the browser to pay for ``price_id`` (a hosted checkout page).
        The checkout must come back as a CHECKOUT_COMPLETED event naming ``user_id``."""
        ...

    async def portal_url(self, *, customer_id: str, return_url: str) -> str:
        """Where the customer manages their card, plan and cancellation."""
        ...

    async def cancel(self, subscription_id: str, *, at_period_end: bool) -> None:
        """Stop the subscription: at the end of the paid period, or at once."""
        ...

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> BillingEvent:
        """Verify a webhook's signature and map it; WebhookError when it is not genuine."""
        ...


def make_provider(settings: Settings) -> PaymentProvider | None:
    """The configured provider, or None when it has no keys (paid plans: not available)."""
    if settings.payment_provider == "stripe":
        if not str(settings.stripe_secret_key) or not str(settings.stripe_webhook_secret):
            return None
        from coordinator.services.stripe_provider import StripeProvider

        return StripeProvider(
            str(settings.stripe_secret_key),
            str(settings.stripe_webhook_secret),
            settings.stripe_api_base,
        )
    return None
