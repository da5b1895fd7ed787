"""Admin console: the subscriptions list (filter by status), manual extend and cancel,
all audit-logged."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from starlette.testclient import TestClient

from coordinator.services import subscriptions
from coordinator.store import models
from tests.support.billing import DAY, billing_client, checkout_completed, invoice, post_event
from tests.support.ui import farm, make_admin, run, user_id
from tests.support.webclient import csrf, register


def sub_of(client: TestClient, username: str) -> models.Subscription:
    uid = user_id(client, username)

    async def load() -> models.Subscription:
        async with farm(client).sessions() as db:
            found = await subscriptions.of_user(db, uid)
            assert found is not None
            return found

    return run(client, load)


def audit_actions(client: TestClient) -> list[str]:
    async def load() -> list[str]:
        async with farm(client).sessions() as db:
            return list(await db.scalars(select(models.AuditEntry.action)))

    return run(client, load)


def setup(client: TestClient) -> float:
    """bob pays for plus through Stripe, carol has a voucher sub; root is an admin."""
    now = float(farm(client).clock())
    register(client, "bob")
    post_event(client, checkout_completed(user_id(client, "bob"), "plus", now))
    post_event(client, invoice("invoice.paid", "plus", now + 30 * DAY, now + 1, "1"))
    client.cookies.clear()
    register(client, "carol")
    carol_id = user_id(client, "carol")

    async def grant() -> None:
        async with farm(client).sessions() as db:
            carol = await db.get(models.User, carol_id)
            assert carol is not None
            subscriptions.grant(db, carol, None, "pro", 5.0, "voucher", now, 0.0)
            await db.commit()

    run(client, grant)
    client.cookies.clear()
    register(client, "root")
    make_admin(client, "root")
    return now


def test_admin_subscriptions_list_filters_by_status(tmp_path: Path) -> None:
    with billing_client(tmp_path) as (client, clock, _):
        setup(client)
        page = client.get("/admin/subscriptions").text
        assert "bob" in page and "carol" in page and "2 subscriptions" in page
        clock.now += 6 * DAY
        run(client, lambda: subscriptions.sweep(farm(client)))  # carol's voucher ran out
        expired = client.get("/admin/subscriptions?status=expired").text
        assert "carol" in expired and "bob" not in expired
        active = client.get("/admin/subscriptions?status=active").text
        assert "bob" in active and "carol" not in active
        assert client.get("/admin/subscriptions?status=bogus").status_code == 400
        assert client.get("/admin/subscriptions?page=0").status_code == 400


def test_admin_extends_and_cancels_with_audit(tmp_path: Path) -> None:
    with billing_client(tmp_path) as (client, clock, recorder):
        now = setup(client)
        carol = sub_of(client, "carol")
        token = csrf(client, "/admin/subscriptions")
        response = client.post(
            f"/admin/subscriptions/{carol.id}/extend", data={"csrf_token": token, "days": "10"}
        )
        assert response.status_code == 303
        assert sub_of(client, "carol").current_period_end == now + 15 * DAY
        for bad in ("0", "-3", "x", "inf", "4000"):
            refused = client.post(
                f"/admin/subscriptions/{carol.id}/extend", data={"csrf_token": token, "days": bad}
            )
            assert refused.status_code == 422, bad
        bob = sub_of(client, "bob")
        response = client.post(f"/admin/subscriptions/{bob.id}/cancel", data={"csrf_token": token})
        assert response.status_code == 303
        assert recorder.calls[-1] == (
            "cancel",
            {"subscription_id": "sub_1", "at_period_end": False},
        )
        assert sub_of(client, "bob").status == "cancelled"
        assert farm(client).users[str(user_id(client, "bob"))].tier == "free"
        again = client.post(f"/admin/subscriptions/{bob.id}/cancel", data={"csrf_token": token})
        assert again.status_code == 409
        assert (
            client.post("/admin/subscriptions/999/cancel", data={"csrf_token": token}).status_code
            == 404
        )
        actions = audit_actions(client)
        assert "subscription.extend" in actions and "subscription.cancel" in actions
        # An expired one can be brought back by extending it.
        clock.now = now + 40 * DAY
        client.post(
            f"/admin/subscriptions/{bob.id}/extend", data={"csrf_token": token, "days": "7"}
        )
        revived = sub_of(client, "bob")
        assert revived.status == "active" and revived.provider == "admin"
        assert revived.current_period_end == clock.now + 7 * DAY


def test_admin_billing_pages_are_for_admins_only(tmp_path: Path) -> None:
    with billing_client(tmp_path) as (client, _, _):
        setup(client)
        client.cookies.clear()
        register(client, "mallory")
        for path in ("/admin/subscriptions", "/admin/vouchers"):
            assert client.get(path).status_code == 403
        token = csrf(client, "/profile")
        carol = sub_of(client, "carol")
        assert (
            client.post(
                f"/admin/subscriptions/{carol.id}/extend", data={"csrf_token": token, "days": "9"}
            ).status_code
            == 403
        )
        assert (
            client.post(
                "/admin/vouchers", data={"csrf_token": token, "tier": "pro", "days": "9"}
            ).status_code
            == 403
        )
