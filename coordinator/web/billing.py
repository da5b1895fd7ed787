"""The plans page and buying: checkout, the billing portal, cancelling, and the
payment provider's webhook endpoint. The life cycle is in services.subscriptions
and services.webhooks; these views only parse, call and answer."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

import scheduler
from coordinator.i18n import gettext as _
from coordinator.request_context import farm_of
from coordinator.services import auth, entitlement, payments, subscriptions, webhooks
from coordinator.services.payments import PaymentProvider
from coordinator.store import models
from coordinator.web.base import current_user, redirect, render, require_user

log = logging.getLogger(__name__)

# Tiers an admin grants to staff, not plans anyone can choose.
HIDDEN_TIERS = frozenset({"admin"})
MAX_WEBHOOK_BYTES = 64 * 1024


def payments_of(request: Request) -> PaymentProvider | None:
    """The configured payment provider; None without keys (paid plans: not available)."""
    provider: PaymentProvider | None = getattr(request.app.state, "payments", None)
    return provider


@dataclass(frozen=True, slots=True)
class PlanCard:
    """One plan on the plans page and what its button does for this visitor.

    ``action``: "current", "upgrade", "change" (checkout), "portal" (change a
    running paid subscription at the provider), "unavailable" (for sale, but no
    provider or price id), or "" (nothing to buy: free, or not logged in)."""

    tier: scheduler.Tier
    action: str


def visible_tiers(tiers: dict[str, scheduler.Tier], own: str | None) -> list[scheduler.Tier]:
    """The tiers to show, low to high rank; a hidden tier shows only to its members."""
    shown = [t for t in tiers.values() if t.name not in HIDDEN_TIERS or t.name == own]
    return sorted(shown, key=lambda t: t.rank)


def paid_subscription(user: models.User | None) -> models.Subscription | None:
    """The user's provider subscription while it runs (not a voucher's or an admin's)."""
    sub = user.subscription if user is not None else None
    if sub is None or sub.provider in entitlement.NOT_RENEWING:
        return None
    return sub if sub.status in (entitlement.ACTIVE, entitlement.PAST_DUE) else None


def plan_cards(
    tiers: dict[str, scheduler.Tier],
    user: models.User | None,
    own: str | None,
    provider: PaymentProvider | None,
) -> list[PlanCard]:
    paid = paid_subscription(user)
    own_rank = tiers[own].rank if own in tiers else 0
    cards = []
    for tier in visible_tiers(tiers, own):
        if user is None or tier.price is None:
            action = "current" if tier.name == own else ""
        elif tier.name == own:
            action = "current"
        elif provider is None or not tier.price.price_id:
            action = "unavailable"
        elif paid is not None:
            action = "portal"
        else:
            action = "upgrade" if tier.rank > own_rank else "change"
        cards.append(PlanCard(tier, action))
    return cards


async def plans_page(request: Request) -> Response:
    farm = farm_of(request)
    async with farm.sessions() as db:
        user = await current_user(request, db)
    own = farm.refresh_user(user).tier if user is not None else None
    granted = (
        entitlement.entitlement(user, farm.tiers, farm.clock(), farm.settings.subscription_grace_s)
        if user is not None
        else None
    )
    provider = payments_of(request)
    return render(
        request,
        "plans.html",
        user,
        cards=plan_cards(farm.tiers, user, own, provider),
        own=own,
        granted=granted,
        paid=paid_subscription(user),
        checkout=request.query_params.get("checkout", "")[:20],
        error=request.query_params.get("error", "")[:20],
    )


def _back(request: Request, outcome: str) -> str:
    base = farm_of(request).settings.public_url.rstrip("/") or str(request.base_url).rstrip("/")
    return f"{base}/plans?checkout={outcome}"


async def checkout(request: Request) -> Response:
    """Start paying for a plan: off to the provider's hosted checkout page."""
    await auth.check_csrf(request)
    form = await request.form()
    farm = farm_of(request)
    provider = payments_of(request)
    async with farm.sessions() as db:
        user = await require_user(request, db)
    tier = farm.tiers.get(str(form.get("tier") or ""))
    if tier is None or tier.price is None:
        raise HTTPException(400, _("This plan is not for sale."))
    if provider is None or not tier.price.price_id:
        raise HTTPException(409, _("Paid plans are not available right now."))
    paid = paid_subscription(user)
    if paid is not None:  # one subscription at a time: changes go through the portal
        return await _portal(request, provider, paid)
    sub = user.subscription
    customer = (
        sub.provider_customer_id if sub is not None and sub.provider == provider.name else None
    )
    try:
        url = await provider.checkout_url(
            user_id=user.id,
            email=user.email,
            customer_id=customer,
            price_id=tier.price.price_id,
            success_url=_back(request, "done"),
            cancel_url=_back(request, "cancelled"),
        )
    except payments.PaymentError:
        return redirect(request, "/plans?error=provider")
    return RedirectResponse(url, status_code=303)


async def _portal(
    request: Request, provider: PaymentProvider, sub: models.Subscription
) -> Response:
    if not sub.provider_customer_id or sub.provider != provider.name:
        return redirect(request, "/plans?error=provider")
    try:
        url = await provider.portal_url(
            customer_id=sub.provider_customer_id, return_url=_back(request, "portal")
        )
    except payments.PaymentError:
        return redirect(request, "/plans?error=provider")
    return RedirectResponse(url, status_code=303)


async def portal(request: Request) -> Response:
    """Manage the card, change the plan or cancel at the provider."""
    await auth.check_csrf(request)
    provider = payments_of(request)
    async with farm_of(request).sessions() as db:
        user = await require_user(request, db)
    sub = user.subscription
    if provider is None or sub is None or not sub.provider_customer_id:
        raise HTTPException(409, _("There is no paid subscription to manage."))
    return await _portal(request, provider, sub)


async def cancel(request: Request) -> Response:
    """Cancel at the end of the paid period."""
    await auth.check_csrf(request)
    farm = farm_of(request)
    async with farm.sessions() as db:
        user = await require_user(request, db)
        sub = await subscriptions.of_user(db, user.id)
        if sub is None:
            raise HTTPException(409, _("There is no paid subscription to cancel."))
        try:
            await subscriptions.cancel_at_period_end(farm, db, sub, payments_of(request))
        except subscriptions.SubscriptionError as exc:
            raise HTTPException(409, str(exc)) from None
        except payments.PaymentError:
            return redirect(request, "/plans?error=provider")
    return redirect(request, "/plans?checkout=cancelling")


async def webhook(request: Request) -> Response:
    """The provider's webhook: 400 for anything not signed by it, 200 once handled
    (duplicates and unknown customers included, so the provider stops retrying)."""
    provider = payments_of(request)
    if provider is None or provider.name != request.path_params["provider"]:
        return JSONResponse({"error": "payments are not configured"}, status_code=404)
    body = await request.body()
    if len(body) > MAX_WEBHOOK_BYTES:
        return JSONResponse({"error": "body too large"}, status_code=413)
    try:
        event = provider.parse_webhook(body, request.headers)
    except payments.WebhookError as exc:
        log.warning("refused a %s webhook: %s", provider.name, exc)
        return JSONResponse({"error": "bad signature or payload"}, status_code=400)
    outcome = await webhooks.apply_event(farm_of(request), provider.name, event)
    return JSONResponse({"ok": True, "applied": outcome.applied, "outcome": outcome.note})


ROUTES = [
    Route("/plans", plans_page),
    Route("/plans/checkout", checkout, methods=["POST"]),
    Route("/plans/portal", portal, methods=["POST"]),
    Route("/plans/cancel", cancel, methods=["POST"]),
    Route("/billing/webhook/{provider}", webhook, methods=["POST"]),
]
