"""Active sessions on the profile, in real headless Chromium at desktop and phone width.

One account is logged in from a desktop browser and from a phone. The phone's
profile lists both sessions without overflowing 390 px; it logs the desktop session
out with its button, and the desktop's next page is the login page. Both pages pass
axe-core and are photographed into artifacts/screenshots/.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.cli.admin_cli import create_user
from tests.support.browser import axe, chromium, log_in, needs_chromium, shot, watch_errors
from tests.support.coordinators import PASSWORD, make_settings, running_coordinator

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(120), needs_chromium]

USER = "olga"
PHONE_UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) Mobile Safari/604.1"


async def test_sessions_listed_and_revoked_from_a_phone(tmp_path: Path) -> None:
    from playwright.async_api import expect

    settings = make_settings(tmp_path / "data")
    await create_user(settings, USER, PASSWORD, None, is_admin=False)
    errors: list[str] = []
    async with running_coordinator(settings) as coord, chromium() as browser:
        desktop = await browser.new_context(
            base_url=coord.http, viewport={"width": 1280, "height": 900}
        )
        phone = await browser.new_context(
            base_url=coord.http, viewport={"width": 390, "height": 844}, user_agent=PHONE_UA
        )
        big, small = await desktop.new_page(), await phone.new_page()
        watch_errors(big, errors)
        watch_errors(small, errors)
        await log_in(big, USER, PASSWORD)
        await expect(big.get_by_role("heading", name="Generate a 3D model")).to_be_visible()
        await log_in(small, USER, PASSWORD)
        await expect(small.get_by_role("heading", name="Generate a 3D model")).to_be_visible()

        await big.goto("/profile")
        rows = big.locator("#sessions tbody tr")
        await expect(rows).to_have_count(2)
        await axe(big, "profile sessions (desktop)")
        await shot(big, "profile-sessions-desktop")

        await small.goto("/profile")
        await expect(small.locator("#sessions tbody tr")).to_have_count(2)
        this = small.locator("#sessions tbody tr", has_text="(this session)")
        await expect(this).to_contain_text("iPhone")
        width = await small.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the profile is {width} px wide on a 390 px phone"
        # Each cell says what it is once the header row is hidden.
        await expect(this.locator("td[data-label='Last seen']")).to_be_visible()
        await axe(small, "profile sessions (phone)")
        await shot(small, "profile-sessions-phone")

        other = small.locator("#sessions tbody tr", has_text="HeadlessChrome")
        await other.get_by_role("button", name="Log out").click()
        await expect(small.locator("#sessions tbody tr")).to_have_count(1)
        await expect(small.locator("#sessions tbody tr")).to_contain_text("(this session)")

        await big.goto("/profile")
        await expect(big).to_have_url(f"{coord.http}/login?next=%2Fprofile")
        await desktop.close()
        await phone.close()
    assert not errors, errors
