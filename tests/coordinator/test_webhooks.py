"""The Stripe webhook endpoint over HTTP: events signed locally with Stripe's scheme
and a test secret, applied to the subscription life cycle (no network)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from coordinator.services import subscriptions
from coordinator.store import models
from scheduler.lifecycle import JobState
from tests.support.billing import (
    DAY,
    WEBHOOK,
    Clock,
    billing_client,
    checkout_completed,
    invoice,
    post_event,
    sign,
    subscription,
)
from tests.support.ui import farm, make_job, run, user_id
from tests.support.webclient import register


def state(client: TestClient, uid: int) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        async with farm(client).sessions() as db:
            sub = await subscriptions.of_user(db, uid)
            events = await db.scalar(select(func.count()).select_from(models.ProviderEvent))
            history = await subscriptions.recent_history(db, uid)
            return {
                "sub": None
                if sub is None
                else (sub.tier, sub.status, sub.current_period_end, sub.cancel_at_period_end),
                "pending": sub.pending_tier if sub else None,
                "events": events,
                "history": [(h.kind, h.amount) for h in history],
            }

    return run(client, read)


def tier_now(client: TestClient, uid: int) -> str:
    return str(farm(client).users[str(uid)].tier)


def subscribed(client: TestClient, clock: Clock, tier: str = "plus") -> tuple[int, float]:
    """alice subscribes: checkout completed, then the first invoice paid."""
    register(client, "alice")
    uid = user_id(client, "alice")
    make_job(client, "alice", state=JobState.QUEUED)  # queued: the farm tracks her tier
    end = clock.now + 30 * DAY
    assert post_event(client, checkout_completed(uid, tier, clock.now)).status_code == 200
    response = post_event(client, invoice("invoice.paid", tier, end, clock.now + 1, "1"))
    assert response.json()["applied"] is True
    return uid, end


def test_webhooks_subscribe_sets_tier_period_and_history(tmp_path: Path) -> None:
    with billing_client(tmp_path) as (client, clock, _):
        uid, end = subscribed(client, clock)
        now = state(client, uid)
        assert now["sub"] == ("plus", "active", end, False)
        assert ("payment", "4.90 EUR") in now["history"] and ("subscribed", "") in now["history"]
        assert tier_now(client, uid) == "plus"
        page = client.get("/profile").text
        assert "<strong>Plus</strong>" in page and "4.90 EUR" in page


def test_webhooks_renewal_moves_the_period_end(tmp_path: Path) -> None:
    with billing_client(tmp_path) as (client, clock, _):
        uid, end = subscribed(client, clock)
        clock.now = end - 60
        post_event(client, invoice("invoice.paid", "plus", end + 30 * DAY, clock.now, "2"))
        assert state(client, uid)["sub"] == ("plus", "active", end + 30 * DAY, False)
        clock.now = end + DAY * 10  # past the old end, well inside the new one
        run(client, lambda: subscriptions.sweep(farm(client)))
        assert tier_now(client, uid) == "plus"


def test_webhooks_failed_payment_then_recovery_keeps_the_tier(tmp_path: Path) -> None:
    with billing_client(tmp_path) as (client, clock, _):
        uid, end = subscribed(client, clock)
        clock.now = end + 60
        post_event(
            client, invoice("invoice.payment_failed", "plus", end + 30 * DAY, clock.now, "2")
        )
        assert state(client, uid)["sub"][1] == "past_due"
        run(client, lambda: subscriptions.sweep(farm(client)))
        assert tier_now(client, uid) == "plus"  # the grace period runs
        assert "Your last payment failed" in client.get("/plans").text
        clock.now = end + DAY
        post_event(client, invoice("invoice.paid", "plus", end + 30 * DAY, clock.now, "3"))
        assert state(client, uid)["sub"] == ("plus", "active", end + 30 * DAY, False)
        assert tier_now(client, uid) == "plus"


def test_webhooks_failed_payment_expires_after_grace_and_requeues_as_free(
    tmp_path: Path,
) -> None:
    grace = 2 * DAY
    with billing_client(tmp_path, subscription_grace_s=grace) as (client, clock, _):
        uid, end = subscribed(client, clock)
        clock.now = end + 60
        post_event(client, invoice("invoice.payment_failed", "plus", end, clock.now, "2"))
        clock.now = end + grace - 1
        assert run(client, lambda: subscriptions.sweep(farm(client))) == []
        assert tier_now(client, uid) == "plus"
        version = farm(client).version
        clock.now = end + grace
        assert run(client, lambda: subscriptions.sweep(farm(client))) == [uid]
        assert state(client, uid)["sub"][1] == "expired"
        assert ("expired", "") in state(client, uid)["history"]
        # The queued job now waits with the free tier's weight.
        assert tier_now(client, uid) == "free"
        assert farm(client).version > version
        assert "<strong>Free</strong>" in client.get("/profile").text


def test_webhooks_cancel_at_period_end_runs_out_without_grace(tmp_path: Path) -> None:
    with billing_client(tmp_path) as (client, clock, _):
        uid, end = subscribed(client, clock)
        post_event(
            client,
            subscription(
                "customer.subscription.updated",
                "plus",
                "active",
                end,
                clock.now + 10,
                "2",
                cancel_at_period_end=True,
            ),
        )
        assert state(client, uid)["sub"] == ("plus", "active", end, True)
        assert "ends on" in client.get("/plans").text
        clock.now = end - 1
        run(client, lambda: subscriptions.sweep(farm(client)))
        assert tier_now(client, uid) == "plus"
        clock.now = end
        run(client, lambda: subscriptions.sweep(farm(client)))
        assert tier_now(client, uid) == "free"
        post_event(
            client,
            subscription("customer.subscription.deleted", "plus", "canceled", end, end + 5, "3"),
        )
        assert state(client, uid)["sub"][1] == "expired"


def test_webhooks_downgrade_waits_for_the_period_end(tmp_path: Path) -> None:
    with billing_client(tmp_path) as (client, clock, _):
        uid, end = subscribed(client, clock, "pro")
        post_event(
            client,
            subscription(
                "customer.subscription.updated", "plus", "active", end, clock.now + 5, "2"
            ),
        )
        assert state(client, uid)["sub"][0] == "pro" and state(client, uid)["pending"] == "plus"
        assert tier_now(client, uid) == "pro"
        clock.now = end + 60
        post_event(client, invoice("invoice.paid", "plus", end + 30 * DAY, clock.now, "3"))
        assert state(client, uid)["sub"][0] == "plus" and state(client, uid)["pending"] is None
        assert tier_now(client, uid) == "plus"


def test_webhooks_upgrade_applies_at_once(tmp_path: Path) -> None:
    with billing_client(tmp_path) as (client, clock, _):
        uid, end = subscribed(client, clock, "plus")
        post_event(
            client,
            subscription("customer.subscription.updated", "pro", "active", end, clock.now + 5, "2"),
        )
        assert state(client, uid)["sub"][0] == "pro" and tier_now(client, uid) == "pro"


def test_webhooks_duplicate_event_changes_nothing(tmp_path: Path) -> None:
    with billing_client(tmp_path) as (client, clock, _):
        uid, end = subscribed(client, clock)
        before = state(client, uid)
        again = post_event(client, invoice("invoice.paid", "plus", end, clock.now + 1, "1"))
        assert again.status_code == 200 and again.json()["outcome"] == "duplicate"
        assert state(client, uid) == before


def test_webhooks_out_of_order_events_keep_the_newest_state(tmp_path: Path) -> None:
    with billing_client(tmp_path) as (client, clock, _):
        uid, end = subscribed(client, clock)
        clock.now = end + 100
        # Stripe sent "failed" (t=end+10), then "paid" (t=end+50); "paid" arrives first.
        post_event(client, invoice("invoice.paid", "plus", end + 30 * DAY, end + 50, "3"))
        late = post_event(client, invoice("invoice.payment_failed", "plus", end, end + 10, "2"))
        assert late.status_code == 200
        assert state(client, uid)["sub"] == ("plus", "active", end + 30 * DAY, False)
        # An old "updated" saying past_due after a newer one saying active: ignored too.
        post_event(
            client,
            subscription("customer.subscription.updated", "plus", "past_due", end, end + 20, "4"),
        )
        assert state(client, uid)["sub"][1] == "active"
        # A period end never moves back.
        post_event(client, invoice("invoice.paid", "plus", end, end + 200, "5"))
        assert state(client, uid)["sub"][2] == end + 30 * DAY


@pytest.mark.parametrize(
    "signature",
    [None, "", "t=1,v1=deadbeef", "garbage", "wrong-secret", "stale"],
)
def test_webhooks_bad_signature_is_refused_and_changes_nothing(
    tmp_path: Path, signature: str | None
) -> None:
    with billing_client(tmp_path) as (client, clock, _):
        uid, end = subscribed(client, clock)
        before = state(client, uid)
        payload = subscription(
            "customer.subscription.deleted", "plus", "canceled", end, clock.now + 9, "x"
        )
        if signature == "wrong-secret":
            signature = sign(payload, "whsec_someone_else")
        elif signature == "stale":
            signature = sign(payload, at=1_000_000)
        response = post_event(client, payload, signature)
        assert response.status_code == 400
        assert state(client, uid) == before
        tampered = payload.replace("canceled", "active")
        forged = client.post(
            WEBHOOK, content=tampered.encode(), headers={"stripe-signature": sign(payload)}
        )
        assert forged.status_code == 400 and state(client, uid) == before


def test_webhooks_unknown_customer_is_logged_and_acknowledged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with billing_client(tmp_path) as (client, clock, _):
        register(client, "alice")
        payload = subscription(
            "customer.subscription.updated",
            "plus",
            "active",
            clock.now + DAY,
            clock.now,
            "u",
            customer="cus_nobody",
        )
        with caplog.at_level(logging.WARNING):
            response = post_event(client, payload)
        assert response.status_code == 200 and response.json()["outcome"] == "unknown customer"
        assert "cus_nobody" in caplog.text
        assert state(client, user_id(client, "alice"))["sub"] is None


def test_webhooks_not_json_or_not_an_event_is_refused(tmp_path: Path) -> None:
    with billing_client(tmp_path) as (client, _, _):
        for payload in ("not json", "[]", '{"id": 5}'):
            assert post_event(client, payload).status_code == 400


def test_webhooks_without_keys_answer_404_and_nothing_breaks(tmp_path: Path) -> None:
    with billing_client(tmp_path, provider=False) as (client, clock, _):
        payload = checkout_completed(1, "plus", clock.now)
        assert post_event(client, payload).status_code == 404
        assert client.get("/plans").status_code == 200


def test_webhooks_the_same_event_twice_at_once_applies_once(tmp_path: Path) -> None:
    from coordinator.services import webhooks
    from coordinator.services.stripe_provider import StripeProvider
    from tests.support.billing import SECRET_KEY, WEBHOOK_SECRET

    with billing_client(tmp_path) as (client, clock, _):
        uid, end = subscribed(client, clock)
        payload = invoice("invoice.paid", "plus", end + 30 * DAY, clock.now + 5, "2")
        parsed = StripeProvider(SECRET_KEY, WEBHOOK_SECRET).parse_webhook(
            payload.encode(), {"stripe-signature": sign(payload)}
        )

        async def twice() -> list[str]:
            import asyncio

            outcomes = await asyncio.gather(
                *(webhooks.apply_event(farm(client), "stripe", parsed) for _ in range(3))
            )
            return sorted(o.note for o in outcomes)

        assert run(client, twice) == ["duplicate", "duplicate", "paid"]
        payments = [h for h in state(client, uid)["history"] if h[0] == "payment"]
        assert len(payments) == 2  # the first invoice and this one, once


def test_webhooks_a_payment_after_the_grace_period_brings_the_plan_back(
    tmp_path: Path,
) -> None:
    with billing_client(tmp_path, subscription_grace_s=DAY) as (client, clock, _):
        uid, end = subscribed(client, clock)
        post_event(client, invoice("invoice.payment_failed", "plus", end, end + 5, "2"))
        clock.now = end + 2 * DAY
        run(client, lambda: subscriptions.sweep(farm(client)))
        assert state(client, uid)["sub"][1] == "expired" and tier_now(client, uid) == "free"
        # Stripe's retry succeeds a week later: the customer paid for the new period.
        clock.now = end + 7 * DAY
        post_event(client, invoice("invoice.paid", "plus", end + 30 * DAY, clock.now, "3"))
        assert state(client, uid)["sub"] == ("plus", "active", end + 30 * DAY, False)
        assert tier_now(client, uid) == "plus"
