"""The profile's webhook section in real headless Chromium at desktop and phone width.

A key gets a webhook pointing at a real receiver on 127.0.0.1 (private addresses
allowed by the setting), the secret is shown once, "Send test" delivers a signed
ping, and the delivery log lists it; a loopback URL is refused where the setting is
off (see tests/coordinator/test_webhooks.py). Both widths pass axe-core, nothing
overflows 390 px, and the pages are photographed into artifacts/screenshots/.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from coordinator.cli.admin_cli import create_api_key, create_user
from coordinator.store import models
from tests.support.browser import axe, chromium, log_in, needs_chromium, shot, watch_errors
from tests.support.coordinators import (
    PASSWORD,
    RunningCoordinator,
    make_settings,
    running_coordinator,
)
from tests.support.webhook_receiver import receiving

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(120), needs_chromium]

USER = "wanda"


async def _log_job_delivery(coord: RunningCoordinator, url: str) -> None:
    """A delivery to a job's own URL in the log (as the engine writes it after a job)."""
    async with coord.farm.sessions() as db:
        key = await db.scalar(select(models.ApiKey))
        assert key is not None
        at = coord.farm.clock()
        row = models.WebhookDelivery(
            api_key_id=key.id, job_id="J0bWithItsOwnUrl", event="job.finished", url=url,
            status_code=200, error="", attempts=2, at=at, duration_ms=1.0, per_job=True,
        )  # fmt: skip
        db.add(row)
        await db.commit()


async def test_webhooks_set_tested_and_logged_at_both_widths(tmp_path: Path) -> None:
    from playwright.async_api import expect

    settings = make_settings(tmp_path / "data", webhooks_allow_private=True)
    await create_user(settings, USER, PASSWORD, None, is_admin=False)
    await create_api_key(settings, USER, "my script")
    errors: list[str] = []
    async with (
        receiving() as receiver,
        running_coordinator(settings) as coord,
        chromium() as browser,
    ):
        for width, height, label in ((1280, 900, "desktop"), (390, 844, "phone")):
            context = await browser.new_context(
                base_url=coord.http, viewport={"width": width, "height": height}
            )
            page = await context.new_page()
            watch_errors(page, errors)
            await log_in(page, USER, PASSWORD)
            await page.goto("/profile#webhooks")
            section = page.locator("#webhooks")
            await expect(section.get_by_role("heading", name="Webhooks")).to_be_visible()
            if label == "desktop":
                await expect(section.get_by_role("button", name="Create secret")).to_be_visible()
                await section.get_by_label("Webhook URL").fill(receiver.url)
                await section.get_by_role("button", name="Save webhook").click()
                await expect(page.locator("#new-webhook-secret")).to_be_visible()
                await shot(page, "profile-webhook-saved-desktop")
                await page.locator("#webhooks").get_by_role("button", name="Send test").click()
                await expect(page.locator("#webhook-message")).to_contain_text(
                    "Test delivered: HTTP 200."
                )
                await receiver.wait_for(1)
                await expect(section.get_by_role("button", name="Replace secret")).to_be_visible()
                await _log_job_delivery(coord, receiver.url + "/job-hook")
                await page.goto("/profile#webhooks")  # not reload: that would re-POST
            rows = page.locator("#webhooks table.deliveries tbody tr")
            await expect(rows).to_have_count(2)
            await expect(rows.first).to_contain_text("(to the job's own URL)")
            await expect(rows.last).to_contain_text("ping")
            await expect(rows.last.locator("td").last).to_have_text("1")  # one attempt
            await page.locator("#webhooks").scroll_into_view_if_needed()
            await axe(page, f"profile webhooks ({label})")
            width_used = await page.evaluate("document.documentElement.scrollWidth")
            assert width_used <= width, f"{label}: the page is {width_used} px wide"
            await shot(page, f"profile-webhooks-{label}")
            await context.close()
    assert not errors, errors
