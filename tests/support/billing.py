"""Helpers for subscription tests: Stripe-signed webhook events built locally, a
provider whose outbound calls are recorded instead of sent, tiers with price ids."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from coordinator.services import payments, vouchers
from coordinator.services.stripe_provider import StripeProvider
from tests.support.coordinators import RunningCoordinator
from tests.support.sockclient import Browser
from tests.support.webclient import app_client

ROOT = Path(__file__).resolve().parents[2]
WEBHOOK_SECRET = "whsec_test_secret_for_local_signing"
SECRET_KEY = "sk_test_local_only"
PRICE = {"plus": "price_plus_monthly", "pro": "price_pro_monthly"}
WEBHOOK = "/billing/webhook/stripe"
DAY = 86400.0


def paid_tiers(tmp: Path) -> Path:
    """The shipped tiers file with Stripe price ids on plus and pro."""
    text = (ROOT / "coordinator" / "tiers.toml").read_text()
    text = text.replace('price_id = ""', f'price_id = "{PRICE["plus"]}"', 1)
    text = text.replace('price_id = ""', f'price_id = "{PRICE["pro"]}"', 1)
    path = tmp / "paid-tiers.toml"
    path.write_text(text)
    return path


def sign(payload: str, secret: str = WEBHOOK_SECRET, at: int | None = None) -> str:
    """A ``Stripe-Signature`` header by Stripe's scheme: v1 = HMAC-SHA256(secret, "t.body")."""
    t = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{t}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def event(kind: str, obj: Mapping[str, Any], created: float, event_id: str) -> str:
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": kind,
            "created": int(created),
            "livemode": False,
            "api_version": "2025-01-27",
            "data": {"object": dict(obj)},
        }
    )


def checkout_completed(user_id: int, tier: str, created: float, n: str = "1") -> str:
    obj = {
        "id": f"cs_test_{n}",
        "object": "checkout.session",
        "mode": "subscription",
        "customer": "cus_1",
        "subscription": "sub_1",
        "client_reference_id": str(user_id),
        "metadata": {"user_id": str(user_id), "price_id": PRICE[tier]},
    }
    return event("checkout.session.completed", obj, created, f"evt_checkout_{n}")


def invoice(kind: str, tier: str, period_end: float, created: float, n: str) -> str:
    obj = {
        "id": f"in_{n}",
        "object": "invoice",
        "customer": "cus_1",
        "subscription": "sub_1",
        "amount_paid": 490 if kind == "invoice.paid" else 0,
        "amount_due": 490,
        "currency": "eur",
        "lines": {
            "data": [
                {
                    "period": {"start": int(period_end - 30 * DAY), "end": int(period_end)},
                    "price": {"id": PRICE[tier]},
                }
            ]
        },
    }
    return event(kind, obj, created, f"evt_invoice_{n}")


def subscription(
    kind: str,
    tier: str,
    status: str,
    period_end: float,
    created: float,
    n: str,
    *,
    cancel_at_period_end: bool = False,
    customer: str = "cus_1",
) -> str:
    obj = {
        "id": "sub_1",
        "object": "subscription",
        "customer": customer,
        "status": status,
        "cancel_at_period_end": cancel_at_period_end,
        "items": {"data": [{"price": {"id": PRICE[tier]}, "current_period_end": int(period_end)}]},
    }
    return event(kind, obj, created, f"evt_sub_{n}")


@dataclass
class RecordingProvider:
    """The Stripe provider with its outbound calls recorded, not sent: webhooks are
    verified by the real one (the library's signature check)."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    fail: bool = False
    name: str = "stripe"

    def __post_init__(self) -> None:
        self._real = StripeProvider(SECRET_KEY, WEBHOOK_SECRET)

    def _record(self, what: str, **params: Any) -> None:
        if self.fail:
            raise payments.PaymentError("The payment service is not available right now.")
        self.calls.append((what, params))

    async def checkout_url(self, **params: Any) -> str:
        self._record("checkout", **params)
        return "https://checkout.stripe.test/c/pay/cs_test_1"

    async def portal_url(self, **params: Any) -> str:
        self._record("portal", **params)
        return "https://billing.stripe.test/p/session/1"

    async def cancel(self, subscription_id: str, *, at_period_end: bool) -> None:
        self._record("cancel", subscription_id=subscription_id, at_period_end=at_period_end)

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> payments.BillingEvent:
        return self._real.parse_webhook(body, headers)


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@contextmanager
def billing_client(
    tmp: Path, *, provider: bool = True, **overrides: Any
) -> Iterator[tuple[TestClient, Clock, RecordingProvider]]:
    """An app with priced tiers, Stripe keys, a fake clock and a recording provider."""
    # The fake clock jumps months: login sessions must outlive it.
    settings: dict[str, Any] = {
        "tiers_file": paid_tiers(tmp),
        "session_idle_s": 3650 * DAY,
        "session_max_age_s": 3650 * DAY,
        **overrides,
    }
    if provider:
        settings.update(stripe_secret_key=SECRET_KEY, stripe_webhook_secret=WEBHOOK_SECRET)
    with app_client(tmp, **settings) as client:
        clock = Clock()
        client.app.state.farm.clock = clock  # type: ignore[attr-defined]
        recorder = RecordingProvider()
        if provider:
            client.app.state.payments = recorder  # type: ignore[attr-defined]
        yield client, clock, recorder


def post_event(client: TestClient, payload: str, signature: str | None = "sign") -> Any:
    headers = {"content-type": "application/json"}
    if signature == "sign":
        headers["stripe-signature"] = sign(payload)
    elif signature is not None:
        headers["stripe-signature"] = signature
    return client.post(WEBHOOK, content=payload.encode(), headers=headers)


async def redeem_at_once(coordinator: RunningCoordinator, code: str, users: int) -> list[Any]:
    """``users`` new users, each in their own browser, redeem ``code`` at the same moment
    over real sockets; their answers."""
    browsers = [Browser(coordinator) for _ in range(users)]
    try:
        await asyncio.gather(*(b.register(f"user{i}") for i, b in enumerate(browsers)))
        tokens = await asyncio.gather(*(b.csrf("/profile") for b in browsers))
        return list(
            await asyncio.gather(
                *(
                    b.http.post("/profile/voucher", data={"csrf_token": t, "code": code})
                    for b, t in zip(browsers, tokens, strict=True)
                )
            )
        )
    finally:
        for browser in browsers:
            await browser.http.aclose()


async def new_voucher(coordinator: RunningCoordinator, tier: str, uses: int = 1) -> str:
    """A code for 30 days of ``tier`` created straight through the service."""
    farm = coordinator.farm
    async with farm.sessions() as db:
        _, code = await vouchers.create(
            db, farm.tiers, vouchers.NewVoucher(tier, 30.0, uses), None, farm.clock()
        )
    return str(code)
