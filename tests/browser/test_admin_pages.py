"""The volunteer page and the admin console in real headless Chromium.

A volunteer registers, enrolls an agent on "Contribute a GPU" and runs it (a
real ``instant`` agent process with the token copied from the page); an
administrator logs in, approves it, watches the volunteer's waiting job get
done, gives the volunteer the plus tier, drains and revokes the agent (the
process exits 3) and reads the audit log; the volunteer is refused /admin.
Every page is checked with axe-core and photographed into artifacts/screenshots/.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from coordinator.cli.admin_cli import create_user, write_secret_file
from tests.support.browser import axe, chromium, needs_chromium, shot, watch_errors
from tests.support.coordinators import (
    PASSWORD,
    make_settings,
    running_coordinator,
    start_agent,
    stop_agent,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.timeout(150),
    needs_chromium,
]

VOLUNTEER = "vera"
ADMIN = "root"
AGENT = "desk-gpu"
PROMPT = "a green teapot"
LIVE_S = 20_000  # ms: the agent tables poll every 3-5 s


async def _new_page(browser: Any, base_url: str, errors: list[str]) -> Any:
    """A page in its own context (own cookies: one person each)."""
    context = await browser.new_context(base_url=base_url, viewport={"width": 1200, "height": 800})
    page = await context.new_page()
    watch_errors(page, errors)
    return page


async def _check(page: Any, name: str) -> None:
    await shot(page, name)
    await axe(page, name)


def _agent_row(page: Any) -> Any:
    return page.get_by_role("row").filter(has_text=AGENT)


async def _register(page: Any) -> None:
    from playwright.async_api import expect

    await page.goto("/register")
    await page.get_by_label("Username").fill(VOLUNTEER)
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_label("Repeat password").fill(PASSWORD)
    await page.get_by_role("button", name="Register").click()
    await expect(page.get_by_role("heading", name="Generate a 3D model")).to_be_visible()


async def _log_in(page: Any, username: str) -> None:
    from playwright.async_api import expect

    await page.goto("/login")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("link", name=username)).to_be_visible()


async def _enroll(page: Any) -> str:
    """Enroll an agent on the volunteer page; returns the token it shows once."""
    from playwright.async_api import expect

    await page.get_by_role("link", name="Contribute a GPU").click()
    await expect(page.get_by_role("heading", name="Contribute your GPU")).to_be_visible()
    await expect(page.get_by_text("No agents yet")).to_be_visible()
    await page.get_by_label("Name").fill(AGENT)
    async with page.expect_response(
        lambda r: r.url.endswith("/contribute/agents") and r.request.method == "POST"
    ) as info:
        await page.get_by_role("button", name="Create a token").click()
    response = await info.value
    assert response.status == 200 and response.headers["cache-control"] == "no-store"
    await expect(page.get_by_role("heading", name=f"Agent “{AGENT}” enrolled")).to_be_visible()
    await expect(page.get_by_text("it is shown only once")).to_be_visible()
    token: str = (await page.locator("#agent-token").inner_text()).strip()
    assert re.fullmatch(r"sfa\.[\w-]+\.[\w-]+", token), token
    row = _agent_row(page)
    await expect(row).to_contain_text("offline")
    await expect(row).to_contain_text("pending")
    await _check(page, "contribute-token")

    # Reloading the page is a plain GET (app.js rewrote the history entry), so it
    # enrolls nothing new: the agent is listed once and the token is gone for good.
    assert page.url.endswith("/contribute")
    await page.reload()
    await expect(_agent_row(page)).to_contain_text("pending")
    await expect(page.get_by_role("row").filter(has_text=AGENT)).to_have_count(1)
    await expect(page.locator("#agent-token")).to_have_count(0)
    assert token not in await page.content()
    assert token.split(".")[-1] not in await page.content()
    return token


async def _submit(page: Any) -> None:
    from playwright.async_api import expect

    await page.get_by_role("link", name="Generate").click()
    await page.get_by_label("Prompt").fill(PROMPT)
    await page.get_by_label("Steps").fill("4")
    await page.get_by_role("button", name="Generate").click()
    await expect(page.get_by_role("link", name=PROMPT)).to_be_visible()


async def _admin_nav(page: Any, name: str) -> None:
    await page.get_by_role("navigation", name="Admin").get_by_role("link", name=name).click()


async def test_admin_pages_enroll_approve_tier_drain_revoke_audit(tmp_path: Path) -> None:
    from playwright.async_api import expect

    settings = make_settings(tmp_path / "data")
    await create_user(settings, ADMIN, PASSWORD, None, is_admin=True)
    token_file = tmp_path / "agent-token"
    page_errors: list[str] = []
    async with running_coordinator(settings) as coord, chromium() as browser:
        agent = None
        try:
            volunteer = await _new_page(browser, coord.http, page_errors)
            admin = await _new_page(browser, coord.http, page_errors)

            # 1-2. The volunteer enrolls an agent and runs it with the token from the page.
            await _register(volunteer)
            token = await _enroll(volunteer)
            await asyncio.to_thread(write_secret_file, token_file, token)
            agent = start_agent(coord.ws, token_file, tmp_path / "spool", model="instant")
            row = _agent_row(volunteer)
            await expect(row.locator(".badge").first).to_have_text("online", timeout=LIVE_S)
            await expect(row).to_contain_text("pending")
            await _check(volunteer, "contribute")
            await _submit(volunteer)  # waits: the only agent is not approved yet

            # 3. The administrator: dashboard, the waiting job, approval.
            await _log_in(admin, ADMIN)
            await admin.get_by_role("link", name="Admin", exact=True).click()
            await expect(admin.get_by_role("heading", name="Farm dashboard")).to_be_visible()
            await expect(admin.locator("#dash-queue")).to_have_text("1")
            await expect(admin.locator("#dash-agents")).to_have_text("0")  # pending: not counted
            await expect(admin.get_by_text("1 connected (pending included)")).to_be_visible()
            await _check(admin, "admin-dashboard")

            await _admin_nav(admin, "Jobs")
            await expect(admin.get_by_role("heading", name="free 1 waiting")).to_be_visible()
            job_row = admin.get_by_role("row").filter(has_text=PROMPT)
            await expect(job_row).to_contain_text(VOLUNTEER)
            await expect(admin.get_by_text("Nothing is running.")).to_be_visible()

            await _admin_nav(admin, "Agents")
            row = _agent_row(admin)
            await expect(row).to_contain_text(VOLUNTEER)
            await expect(row).to_contain_text("pending")
            await _check(admin, "admin-agents-pending")
            await admin.get_by_role("button", name=f"Approve {AGENT}").click()
            await expect(row).to_contain_text("approved")
            await expect(admin.get_by_role("button", name=f"Approve {AGENT}")).to_have_count(0)

            # The job ran: the dashboard (live) counts it, the queue is empty.
            await _admin_nav(admin, "Dashboard")
            await expect(admin.get_by_text("succeeded: 1")).to_be_visible(timeout=LIVE_S)
            await expect(admin.locator("#dash-queue")).to_have_text("0")
            await _admin_nav(admin, "Jobs")
            await expect(admin.get_by_role("heading", name="free 0 waiting")).to_be_visible()
            await expect(admin.get_by_role("link", name=PROMPT)).to_have_count(0)
            await _check(admin, "admin-jobs")
            await volunteer.get_by_role("link", name="History").click()
            await expect(
                volunteer.get_by_role("listitem").filter(has_text=PROMPT).locator(".badge")
            ).to_have_text("succeeded")

            # Plus for 30 days; the volunteer's profile and plans show it.
            await _admin_nav(admin, "Users")
            await admin.get_by_label("Search by name or e-mail").fill(VOLUNTEER)
            await admin.get_by_role("button", name="Search").click()
            await expect(admin.get_by_text("1 user matching")).to_be_visible()
            await admin.get_by_label(f"Tier for {VOLUNTEER}", exact=True).select_option("plus")
            await admin.get_by_label(f"Days of that tier for {VOLUNTEER}").fill("30")
            await admin.get_by_role("button", name=f"Set tier for {VOLUNTEER}").click()
            user_row = admin.get_by_role("row").filter(has_text=VOLUNTEER)
            await expect(user_row.get_by_role("cell").nth(1)).to_contain_text("Plus")
            await expect(user_row).to_contain_text("until")
            await expect(user_row).to_contain_text("1 today")
            await _check(admin, "admin-users")
            await volunteer.get_by_role("link", name=VOLUNTEER).click()
            await expect(volunteer.get_by_text("Plus", exact=True)).to_be_visible()
            await expect(
                volunteer.get_by_text(
                    re.compile(r"\(until [A-Z][a-z]{2} \d{1,2}, \d{4}, \d{2}:\d{2} UTC\)")
                )
            ).to_be_visible()
            await volunteer.get_by_role("link", name="Plans", exact=True).click()
            plus = volunteer.get_by_role("article", name="Plus")
            await expect(plus.get_by_text("Your plan")).to_be_visible()

            # 4. Drain, then revoke: the agent is refused and exits with code 3.
            await _admin_nav(admin, "Agents")
            await admin.get_by_role("button", name=f"Drain {AGENT}").click()
            await expect(row).to_contain_text("draining")
            await expect(admin.get_by_role("button", name=f"Resume {AGENT}")).to_be_visible()
            dialogs: list[str] = []

            async def confirm(dialog: Any) -> None:
                dialogs.append(dialog.message)
                await dialog.accept()

            admin.once("dialog", confirm)
            await admin.get_by_role("button", name=f"Revoke {AGENT}").click()
            await expect(row).to_contain_text("revoked")
            assert dialogs == [f"Revoke {AGENT} for good? Its token stops working."]
            assert await asyncio.to_thread(agent.wait, 20) == 3
            agent = None
            await expect(row.locator(".badge").first).to_have_text("offline", timeout=LIVE_S)
            await expect(row.get_by_role("button")).to_have_count(0)
            await _check(admin, "admin-agents")
            await volunteer.goto("/contribute")
            await expect(_agent_row(volunteer)).to_contain_text("revoked")

            await _admin_nav(admin, "Audit log")
            await expect(admin.get_by_role("row").filter(has_text="agent.enroll")).to_contain_text(
                VOLUNTEER
            )
            for action in ("agent.approve", "user.tier", "agent.drain"):
                entry = admin.get_by_role("row").filter(has_text=action)
                await expect(entry).to_have_count(1)
                await expect(entry).to_contain_text(ADMIN)
            revoke = admin.get_by_role("row").filter(has_text="agent.revoke")
            await expect(revoke).to_contain_text(ADMIN)
            await expect(revoke).to_contain_text(AGENT)
            tier = admin.get_by_role("row").filter(has_text="user.tier")
            await expect(tier).to_contain_text(VOLUNTEER)
            await expect(tier).to_contain_text("plus for 30 days")
            await _check(admin, "admin-audit")

            # 5. The volunteer is not an administrator: 403, in the app's layout.
            await expect(volunteer.get_by_role("link", name="Admin", exact=True)).to_have_count(0)
            response = await volunteer.goto("/admin")
            assert response is not None and response.status == 403
            await expect(volunteer.get_by_role("heading", name="Not allowed")).to_be_visible()
            await expect(volunteer.get_by_text("This page is for administrators.")).to_be_visible()
            await expect(volunteer.get_by_role("navigation", name="Main")).to_be_visible()
            await expect(volunteer.get_by_role("heading", name="Farm dashboard")).to_have_count(0)
            await _check(volunteer, "admin-forbidden")

            await volunteer.goto("/stats")
            await expect(volunteer.locator("#stat-models")).to_have_text("1")
            await expect(volunteer.locator("#stat-volunteers")).to_have_text("1")
            await _check(volunteer, "stats")
        finally:
            if agent is not None:
                await stop_agent(agent)
    assert not page_errors, page_errors
