"""Plans and vouchers in real headless Chromium, at 1280 px and 390 px.

An administrator creates a one-use voucher for Pro in the console; a user with a
job waiting redeems it on the profile; the profile and the Plans page show the
new plan and its end, and the waiting job is scheduled with Pro's weight. Without
payment keys the paid plans say "Not available". Every page is checked with
axe-core and photographed into artifacts/screenshots/.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import pytest

from coordinator.cli.admin_cli import create_user
from coordinator.store import models
from tests.support.billing import RecordingProvider, paid_tiers
from tests.support.browser import axe, chromium, log_in, needs_chromium, shot, watch_errors
from tests.support.coordinators import PASSWORD, make_settings, running_coordinator

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(150), needs_chromium]

WIDTHS = (1280, 390)


async def _page(browser: Any, base_url: str, width: int, errors: list[str]) -> Any:
    context = await browser.new_context(
        base_url=base_url, viewport={"width": width, "height": 900 if width > 500 else 844}
    )
    page = await context.new_page()
    watch_errors(page, errors)
    return page


async def _check(page: Any, name: str, width: int) -> None:
    await shot(page, f"{name}-{width}")
    await axe(page, f"{name} at {width} px")
    scroll = await page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width, f"{name} is {scroll} px wide at {width} px"


async def _queued_job(farm: Any, user_id: int) -> str:
    now = farm.clock()
    job = models.Job(
        id=secrets.token_urlsafe(12),
        user_id=user_id,
        prompt="a brass lamp",
        seed=1,
        guidance=15.0,
        steps=16,
        created_at=now,
        enqueued_at=now,
    )
    async with farm.sessions() as db:
        db.add(job)
        await db.commit()
    async with farm.sessions() as db:
        await farm.remember_user(db, user_id)
    farm.enqueue(job)
    return job.id


async def test_browser_admin_voucher_redeemed_on_profile_changes_plan_and_weight(
    tmp_path: Any,
) -> None:
    from playwright.async_api import expect

    settings = make_settings(tmp_path / "data", tiers_file=paid_tiers(tmp_path))
    await create_user(settings, "root", PASSWORD, None, is_admin=True)
    alice = await create_user(settings, "alice", PASSWORD, None, is_admin=False)
    errors: list[str] = []
    async with running_coordinator(settings) as coord, chromium() as browser:
        farm = coord.farm
        await _queued_job(farm, alice.id)
        assert farm.users[str(alice.id)].tier == "free"

        admin = await _page(browser, coord.http, 1280, errors)
        await log_in(admin, "root", PASSWORD)
        await admin.goto("/admin/vouchers")
        await admin.get_by_label("Plan", exact=True).select_option("pro")
        await admin.get_by_label("Days of the plan").fill("14")
        await admin.get_by_label("Number of uses").fill("1")
        await admin.get_by_label("Note").fill("browser test")
        await admin.get_by_role("button", name="Create voucher").click()
        code = (await admin.locator("#new-code").text_content() or "").strip()
        assert re.fullmatch(r"[A-Z2-9]{4}(-[A-Z2-9]{4}){3}", code), code
        await _check(admin, "vouchers-admin", 1280)
        await admin.goto("/admin/subscriptions")
        await _check(admin, "subscriptions-admin-empty", 1280)

        for width in WIDTHS:
            page = await _page(browser, coord.http, width, errors)
            await log_in(page, "alice", PASSWORD)
            await page.goto("/plans")
            if width == WIDTHS[0]:
                for plan in ("plus", "pro"):
                    card = page.locator(f'[data-plan="{plan}"]')
                    await expect(card.get_by_text("Not available")).to_be_visible()
                await _check(page, "plans-free", width)
                await page.goto("/profile")
                await page.get_by_label("Voucher code").fill("WRONG-CODE-0000-0000")
                await page.get_by_role("button", name="Redeem").click()
                await expect(page.locator("#voucher-error")).to_have_text("This code is not valid.")
                await page.get_by_label("Voucher code").fill(code.lower())
                await page.get_by_role("button", name="Redeem").click()
                await expect(page.locator("#voucher-ok")).to_be_visible()
            else:
                await page.goto("/profile")
            await expect(page.locator("#plan-h + dl strong")).to_have_text("Pro")
            await expect(page.locator("#subscription-status")).to_have_text("active")
            await expect(page.locator("#billing-history")).to_contain_text("voucher redeemed")
            await _check(page, "profile-voucher", width)
            await page.goto("/plans")
            pro = page.locator('[data-plan="pro"]')
            await expect(pro.get_by_text("Your plan")).to_be_visible()
            await expect(page.locator("#current-plan")).to_contain_text("Pro plan runs until")
            await _check(page, "plans-pro", width)

        # The waiting job is now scheduled with Pro's weight.
        snapshot = farm.snapshot()
        assert snapshot.users[str(alice.id)].tier == "pro"
        assert farm.tiers[snapshot.users[str(alice.id)].tier].weight == 6.0
        # With a payment provider, the other paid plan offers a change.
        coord.app.state.payments = RecordingProvider()
        for width in WIDTHS:
            page = await _page(browser, coord.http, width, errors)
            await log_in(page, "alice", PASSWORD)
            await page.goto("/plans")
            change = page.locator('[data-plan="plus"]').get_by_role("button", name="Change")
            await expect(change).to_be_visible()
            await _check(page, "plans-with-payments", width)
        await admin.goto("/admin/subscriptions?status=active")
        await expect(admin.get_by_role("row").filter(has_text="alice")).to_contain_text("pro")
        await _check(admin, "subscriptions-admin", 1280)
    assert not errors, errors
