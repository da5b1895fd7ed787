"""The Stripe provider's outbound calls, against a local HTTP server on 127.0.0.1
that records what the ``stripe`` library sends (its API base pointed there)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest

from coordinator.services import payments
from coordinator.services.stripe_provider import StripeProvider
from tests.support.billing import SECRET_KEY, WEBHOOK_SECRET


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, list[str]]


@dataclass
class FakeStripe:
    url: str
    requests: list[Recorded] = field(default_factory=list)
    status: int = 200


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    state = FakeStripe("")

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            state.requests.append(
                Recorded(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    parse_qs(body),
                )
            )
            reply: dict[str, Any]
            if state.status != 200:
                reply = {"error": {"type": "api_error", "message": "down for a test"}}
            elif self.path.startswith("/v1/checkout/sessions"):
                reply = {
                    "id": "cs_test_1",
                    "object": "checkout.session",
                    "url": "https://checkout.stripe.com/c/pay/cs_test_1",
                }
            elif self.path.startswith("/v1/billing_portal/sessions"):
                reply = {
                    "id": "bps_1",
                    "object": "billing_portal.session",
                    "url": "https://billing.stripe.com/p/session/bps_1",
                }
            else:
                reply = {"id": "sub_1", "object": "subscription", "status": "active"}
            data = json.dumps(reply).encode()
            self.send_response(state.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_POST = do_DELETE = do_GET = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def provider(fake: FakeStripe) -> StripeProvider:
    return StripeProvider(SECRET_KEY, WEBHOOK_SECRET, fake.url)


async def test_stripe_checkout_sends_price_customer_and_return_urls(
    fake_stripe: FakeStripe,
) -> None:
    url = await provider(fake_stripe).checkout_url(
        user_id=7,
        email="a@example.org",
        customer_id="cus_9",
        price_id="price_plus_monthly",
        success_url="https://farm.example/plans?checkout=done",
        cancel_url="https://farm.example/plans?checkout=cancelled",
    )
    assert url == "https://checkout.stripe.com/c/pay/cs_test_1"
    (sent,) = fake_stripe.requests
    assert (sent.method, sent.path) == ("POST", "/v1/checkout/sessions")
    assert sent.headers["authorization"] == f"Bearer {SECRET_KEY}"
    assert sent.form["mode"] == ["subscription"]
    assert sent.form["line_items[0][price]"] == ["price_plus_monthly"]
    assert sent.form["line_items[0][quantity]"] == ["1"]
    assert sent.form["customer"] == ["cus_9"]
    assert "customer_email" not in sent.form  # the known customer, not a new one
    assert sent.form["client_reference_id"] == ["7"]
    assert sent.form["metadata[price_id]"] == ["price_plus_monthly"]
    assert sent.form["success_url"] == ["https://farm.example/plans?checkout=done"]
    assert sent.form["cancel_url"] == ["https://farm.example/plans?checkout=cancelled"]


async def test_stripe_checkout_for_a_new_customer_sends_the_email(
    fake_stripe: FakeStripe,
) -> None:
    await provider(fake_stripe).checkout_url(
        user_id=7,
        email="a@example.org",
        customer_id=None,
        price_id="price_pro_monthly",
        success_url="https://x/s",
        cancel_url="https://x/c",
    )
    (sent,) = fake_stripe.requests
    assert sent.form["customer_email"] == ["a@example.org"] and "customer" not in sent.form


async def test_stripe_portal_sends_customer_and_return_url(fake_stripe: FakeStripe) -> None:
    url = await provider(fake_stripe).portal_url(
        customer_id="cus_9", return_url="https://farm.example/plans?checkout=portal"
    )
    assert url == "https://billing.stripe.com/p/session/bps_1"
    (sent,) = fake_stripe.requests
    assert (sent.method, sent.path) == ("POST", "/v1/billing_portal/sessions")
    assert sent.form == {
        "customer": ["cus_9"],
        "return_url": ["https://farm.example/plans?checkout=portal"],
    }


async def test_stripe_cancel_at_period_end_and_at_once(fake_stripe: FakeStripe) -> None:
    stripe_provider = provider(fake_stripe)
    await stripe_provider.cancel("sub_1", at_period_end=True)
    await stripe_provider.cancel("sub_1", at_period_end=False)
    first, second = fake_stripe.requests
    assert (first.method, first.path) == ("POST", "/v1/subscriptions/sub_1")
    assert first.form["cancel_at_period_end"] == ["true"]
    assert (second.method, second.path) == ("DELETE", "/v1/subscriptions/sub_1")


async def test_stripe_errors_become_payment_errors(fake_stripe: FakeStripe) -> None:
    fake_stripe.status = 500
    with pytest.raises(payments.PaymentError, match="not available"):
        await provider(fake_stripe).portal_url(customer_id="cus_9", return_url="https://x/")
