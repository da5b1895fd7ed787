"""The plans page, buying and cancelling, over HTTP, with the provider's outbound
calls recorded (see tests/coordinator/test_stripe_provider.py for the real ones)."""

from __future__ import annotations

import re
from pathlib import Path

from starlette.testclient import TestClient

from coordinator.services import subscriptions
from tests.support.billing import (
    DAY,
    PRICE,
    billing_client,
    checkout_completed,
    invoice,
    post_event,
)
from tests.support.ui import farm, run, user_id
from tests.support.webclient import csrf, register


def card(page: str, tier: str) -> str:
    """The HTML of one plan's card."""
    match = re.search(rf'data-plan="{tier}">(.*?)</article>', page, re.S)
    assert match, f"no card for {tier}"
    return match.group(1)


def subscribe(client: TestClient, username: str, tier: str = "plus") -> int:
    uid = user_id(client, username)
    now = farm(client).clock()
    post_event(client, checkout_completed(uid, tier, now))
    post_event(client, invoice("invoice.paid", tier, now + 30 * DAY, now + 1, "1"))
    return uid


def test_plans_anonymous_see_prices_and_register(tmp_path: Path) -> None:
    with billing_client(tmp_path) as (client, _, _):
        page = client.get("/plans").text
        assert "€4.90 a month" in page and "€14.90 a month" in page
        assert 'href="/register"' in card(page, "plus")
        assert "/plans/checkout" not in page


def test_plans_without_provider_keys_show_not_available(tmp_path: Path) -> None:
    with billing_client(tmp_path, provider=False) as (client, _, _):
        register(client, "alice")
        page = client.get("/plans").text
        assert "Not available" in card(page, "plus") and "Not available" in card(page, "pro")
        assert "/plans/checkout" not in page
        refused = client.post(
            "/plans/checkout", data={"csrf_token": csrf(client, "/plans"), "tier": "plus"}
        )
        assert refused.status_code == 409 and "not available" in refused.text


def test_plans_upgrade_goes_to_checkout_with_the_price(tmp_path: Path) -> None:
    with billing_client(tmp_path, public_url="https://farm.example") as (client, _, recorder):
        register(client, "alice")
        page = client.get("/plans").text
        assert "Your plan" in card(page, "free")
        assert ">Upgrade<" in card(page, "plus") and ">Upgrade<" in card(page, "pro")
        response = client.post(
            "/plans/checkout", data={"csrf_token": csrf(client, "/plans"), "tier": "pro"}
        )
        assert response.status_code == 303
        assert response.headers["location"].startswith("https://checkout.stripe.test/")
        ((what, params),) = recorder.calls
        assert what == "checkout" and params["price_id"] == PRICE["pro"]
        assert params["user_id"] == user_id(client, "alice") and params["customer_id"] is None
        assert params["success_url"] == "https://farm.example/plans?checkout=done"
        assert params["cancel_url"] == "https://farm.example/plans?checkout=cancelled"


def test_plans_checkout_refuses_bad_input(tmp_path: Path) -> None:
    with billing_client(tmp_path) as (client, _, recorder):
        assert client.post("/plans/checkout", data={"tier": "plus"}).status_code == 403  # no CSRF
        register(client, "alice")
        token = csrf(client, "/plans")
        for tier in ("free", "admin", "gold", ""):
            response = client.post("/plans/checkout", data={"csrf_token": token, "tier": tier})
            assert response.status_code == 400, tier
        assert recorder.calls == []


def test_plans_provider_down_shows_a_clear_message(tmp_path: Path) -> None:
    with billing_client(tmp_path) as (client, _, recorder):
        register(client, "alice")
        recorder.fail = True
        response = client.post(
            "/plans/checkout", data={"csrf_token": csrf(client, "/plans"), "tier": "plus"}
        )
        assert (
            response.status_code == 303 and response.headers["location"] == "/plans?error=provider"
        )
        assert "not available right now" in client.get("/plans?error=provider").text


def test_plans_subscriber_sees_change_and_cancel(tmp_path: Path) -> None:
    with billing_client(tmp_path) as (client, _, recorder):
        register(client, "alice")
        uid = subscribe(client, "alice")
        page = client.get("/plans").text
        assert "Your plan" in card(page, "plus") and ">Cancel<" in card(page, "plus")
        assert ">Change<" in card(page, "pro") and "/plans/portal" in card(page, "pro")
        assert "renews on" in page
        # A second checkout is not started while one subscription runs: the portal is.
        response = client.post(
            "/plans/checkout", data={"csrf_token": csrf(client, "/plans"), "tier": "pro"}
        )
        assert response.headers["location"].startswith("https://billing.stripe.test/")
        assert recorder.calls[-1][0] == "portal"
        assert recorder.calls[-1][1]["customer_id"] == "cus_1"
        # Cancel: at the period end, at the provider and here.
        response = client.post("/plans/cancel", data={"csrf_token": csrf(client, "/plans")})
        assert response.status_code == 303
        assert recorder.calls[-1] == ("cancel", {"subscription_id": "sub_1", "at_period_end": True})

        async def flag() -> bool:
            async with farm(client).sessions() as db:
                sub = await subscriptions.of_user(db, uid)
                assert sub is not None
                return sub.cancel_at_period_end

        assert run(client, flag) is True
        page = client.get("/plans").text
        assert "ends on" in page and ">Cancel<" not in page
        again = client.post("/plans/cancel", data={"csrf_token": csrf(client, "/plans")})
        assert again.status_code == 409
        assert farm(client).users[str(uid)].tier == "plus"  # until the period end


def test_plans_cancel_without_subscription_is_refused(tmp_path: Path) -> None:
    with billing_client(tmp_path) as (client, _, recorder):
        register(client, "alice")
        response = client.post("/plans/cancel", data={"csrf_token": csrf(client, "/plans")})
        assert response.status_code == 409 and recorder.calls == []
        portal = client.post("/plans/portal", data={"csrf_token": csrf(client, "/plans")})
        assert portal.status_code == 409


def test_plans_deleting_the_account_cancels_the_paid_subscription(tmp_path: Path) -> None:
    from tests.support.coordinators import PASSWORD

    with billing_client(tmp_path) as (client, _, recorder):
        register(client, "alice")
        subscribe(client, "alice")
        response = client.post(
            "/profile/delete", data={"csrf_token": csrf(client, "/profile"), "password": PASSWORD}
        )
        assert response.status_code == 303
        assert recorder.calls[-1] == (
            "cancel",
            {"subscription_id": "sub_1", "at_period_end": False},
        )


def test_plans_page_in_russian(tmp_path: Path) -> None:
    with billing_client(tmp_path) as (client, _, _):
        register(client, "alice")
        page = client.get("/plans", headers={"accept-language": "ru"}).text
        assert "4,90\xa0€ в месяц" in page and ">Перейти<" in card(page, "plus")
        profile = client.get("/profile", headers={"accept-language": "ru"}).text
        assert "Активировать ваучер" in profile
