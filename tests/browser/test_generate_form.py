"""The generate form's refusals, a logged-out tab, Back after a search, and a suspended
account, in real headless Chromium at phone and desktop width.

The server has always answered these with a good message; what broke was the page:
htmx dropped the 4xx answers and the form was reset, so the message never showed and
the prompt was gone. Screenshots go to artifacts/screenshots/.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from coordinator.cli.admin_cli import create_user
from tests.support.browser import axe, chromium, log_in, needs_chromium, shot, watch_errors
from tests.support.coordinators import PASSWORD, make_settings, running_coordinator

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(150), needs_chromium]

USER = "nina"
PROMPT = "a small wooden boat"


async def _generate(page: Any, prompt: str) -> None:
    await page.get_by_label("Prompt").fill(prompt)
    await page.get_by_role("button", name="Generate").click()


@pytest.mark.parametrize("width", [390, 1280])
async def test_generate_form_shows_refusals_and_keeps_the_prompt(
    tmp_path: Path, width: int
) -> None:
    from playwright.async_api import expect

    settings = make_settings(tmp_path / "data")
    await create_user(settings, USER, PASSWORD, None, is_admin=False)
    errors: list[str] = []
    async with running_coordinator(settings) as coord, chromium() as browser:
        context = await browser.new_context(
            base_url=coord.http, viewport={"width": width, "height": 900}
        )
        page = await context.new_page()
        watch_errors(page, errors)
        await log_in(page, USER, PASSWORD)
        await expect(page.get_by_role("heading", name="Generate a 3D model")).to_be_visible()
        box = page.locator("#submit-error")

        # Three spaces: refused with a message, and what was typed stays.
        await _generate(page, "   ")
        await expect(box).to_contain_text("Describe the object")
        await expect(box.locator("p.error")).to_be_visible()
        await expect(page.get_by_label("Prompt")).to_have_value("   ")

        # The free plan lets 5 wait (no agent is online); the sixth is refused, kept.
        for i in range(5):
            await _generate(page, f"{PROMPT} {i}")
            await expect(page.locator("#jobs-list li")).to_have_count(i + 1)
            await expect(page.get_by_label("Prompt")).to_have_value("")  # queued: reset
            await expect(box).to_be_empty()
        await _generate(page, f"{PROMPT} 5")
        await expect(box).to_contain_text("waiting")
        await expect(page.get_by_label("Prompt")).to_have_value(f"{PROMPT} 5")
        await expect(page.locator("#jobs-list li")).to_have_count(5)
        await shot(page, f"generate-refused-{width}")
        await axe(page, f"generate refused ({width} px)")

        # Logged out in another tab: the form says so and the prompt survives the login.
        other = await context.new_page()
        await other.goto("/")
        await other.get_by_role("button", name="Log out").click()
        await expect(other.get_by_role("link", name="Log in").first).to_be_visible()
        await other.close()
        await _generate(page, "a teapot for later")
        await expect(box).to_contain_text("Your session has ended")
        await expect(page.get_by_label("Prompt")).to_have_value("a teapot for later")
        # The Recent list (refreshed over SSE) still lists jobs, not the landing page.
        await expect(page.locator("#jobs-list h1")).to_have_count(0)
        await shot(page, f"generate-session-ended-{width}")
        await box.get_by_role("link", name="Log in again").click()
        await page.get_by_label("Username").fill(USER)
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Log in").click()
        await expect(page.get_by_role("heading", name="Generate a 3D model")).to_be_visible()
        await expect(page.get_by_label("Prompt")).to_have_value("a teapot for later")
        await context.close()
    assert not errors, errors


async def test_generate_form_without_javascript_keeps_the_recent_list(tmp_path: Path) -> None:
    from playwright.async_api import expect

    settings = make_settings(tmp_path / "data")
    await create_user(settings, USER, PASSWORD, None, is_admin=False)
    async with running_coordinator(settings) as coord, chromium() as browser:
        context = await browser.new_context(base_url=coord.http, java_script_enabled=False)
        page = await context.new_page()
        await log_in(page, USER, PASSWORD)
        await _generate(page, PROMPT)  # a full page navigation to the job page
        await page.goto("/")
        await _generate(page, "   ")
        await expect(page.locator("#submit-error")).to_contain_text("Describe the object")
        await expect(page.locator("#jobs-list")).to_contain_text(PROMPT)
        await context.close()


async def test_back_after_a_history_search_shows_the_whole_page(tmp_path: Path) -> None:
    from playwright.async_api import expect

    settings = make_settings(tmp_path / "data")
    await create_user(settings, USER, PASSWORD, None, is_admin=False)
    async with running_coordinator(settings) as coord, chromium() as browser:
        context = await browser.new_context(base_url=coord.http)
        page = await context.new_page()
        await log_in(page, USER, PASSWORD)
        await _generate(page, PROMPT)
        await expect(page.locator("#jobs-list li")).to_have_count(1)
        await page.goto("/history")
        search = page.get_by_role("searchbox").or_(page.locator("input[name=q]")).first
        await search.fill("boat")
        await search.press("Enter")
        await expect(page).to_have_url(re.compile(r"/history\?q=boat"))
        await page.goto("/plans")
        await page.go_back()
        await expect(page).to_have_url(re.compile(r"/history\?q=boat"))
        # The page, not the htmx fragment from the cache: the layout and its navigation.
        await expect(page.get_by_role("navigation").first).to_be_visible()
        assert await page.evaluate("document.styleSheets.length") >= 1
        response = await context.request.get(page.url, headers={"HX-Request": "true"})
        assert "HX-Request" in response.headers.get("vary", "")
        await context.close()


async def test_suspended_account_is_told_so_and_ban_asks_first(tmp_path: Path) -> None:
    from playwright.async_api import expect

    settings = make_settings(tmp_path / "data")
    await create_user(settings, USER, PASSWORD, None, is_admin=False)
    await create_user(settings, "boss", PASSWORD, None, is_admin=True)
    async with running_coordinator(settings) as coord, chromium() as browser:
        context = await browser.new_context(base_url=coord.http)
        admin = await context.new_page()
        await log_in(admin, "boss", PASSWORD)
        await admin.goto(f"/admin/users?q={USER}")
        ban = admin.get_by_role("button", name=f"Ban {USER}")
        dialogs: list[str] = []

        async def dismiss(dialog: Any) -> None:
            dialogs.append(dialog.message)
            await dialog.dismiss()

        admin.once("dialog", dismiss)
        await ban.click()
        await expect(ban).to_be_visible()  # dismissed: nothing happened
        assert dialogs and USER in dialogs[0], dialogs

        async def accept(dialog: Any) -> None:
            await dialog.accept()

        admin.once("dialog", accept)
        await ban.click()
        await expect(admin.get_by_role("button", name=f"Unban {USER}")).to_be_visible()
        await context.close()

        visitor = await (await browser.new_context(base_url=coord.http)).new_page()
        await log_in(visitor, USER, PASSWORD)
        await expect(visitor.locator("main, body").first).to_contain_text("suspended")
        await visitor.goto("/login")
        await visitor.get_by_label("Username").fill(USER)
        await visitor.get_by_label("Password").fill("not the password at all")
        await visitor.get_by_role("button", name="Log in").click()
        await expect(visitor.locator("body")).to_contain_text("Wrong username or password")
        await expect(visitor.locator("body")).not_to_contain_text("suspended")
