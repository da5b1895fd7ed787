"""Forgot password -> mail -> new password -> login, and the job page's notification
toggle, in real headless Chromium at desktop and phone width.

Mail goes through a real SMTP server (aiosmtpd on 127.0.0.1); the browser opens
the link from the received mail. The notification test grants the permission in
the Playwright context, records the notifications the page shows, and puts the
tab "in the background" by overriding document.visibilityState.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from coordinator.cli.admin_cli import admin_db, create_api_key, create_user, issue_token
from coordinator.settings import Settings
from coordinator.store import models
from protocol import Assign, ResultAck, Welcome
from tests.support.browser import (
    SHOTS,
    axe,
    chromium,
    log_in,
    needs_chromium,
    shot,
    watch_errors,
)
from tests.support.coordinators import PASSWORD, make_settings, running_coordinator
from tests.support.mailserver import Inbox, free_port, smtp_server
from tests.support.scripted_agent import ScriptedAgent

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(180), needs_chromium]

NEW_PASSWORD = "a brand new passphrase 9"
SLOW_MS = 30_000  # a busy CPU shared by many test runs
PHONE_UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) Mobile Safari/604.1"

# Records the notifications the page creates and the permission prompts it opens, and
# lets the test put the tab in the background (headless tabs are always "visible").
RECORDER = """
(() => {
  window.__notes = [];
  window.__asked = 0;
  const Real = window.Notification;
  if (!Real) return;
  class Recording extends Real {
    constructor(title, options) {
      super(title, options);
      window.__notes.push({ title, body: options && options.body });
    }
  }
  Recording.requestPermission = (...args) => {
    window.__asked += 1;
    return Real.requestPermission(...args);
  };
  window.Notification = Recording;
  let hidden = false;
  Object.defineProperty(document, "visibilityState", {
    get: () => (hidden ? "hidden" : "visible"), configurable: true });
  Object.defineProperty(document, "hidden", { get: () => hidden, configurable: true });
  window.__setHidden = (value) => { hidden = value; };
})();
"""


async def _mail_settings(tmp_path: Path, inbox: Inbox) -> Settings:
    port = free_port()
    return make_settings(tmp_path / "data", port=port, **inbox.settings(f"http://127.0.0.1:{port}"))


async def _user_with_address(settings: Settings, name: str) -> None:
    await create_user(settings, name, PASSWORD, None, is_admin=False)
    async with admin_db(settings) as db:
        await db.execute(
            update(models.User)
            .where(models.User.username == name)
            .values(email=f"{name}@example.org", email_verified_at=time.time())
        )
        await db.commit()


@pytest.mark.parametrize(
    ("width", "height", "label"), [(1280, 900, "desktop"), (390, 844, "phone")]
)
async def test_forgot_password_mail_reset_and_login(
    tmp_path: Path, width: int, height: int, label: str
) -> None:
    from playwright.async_api import expect

    errors: list[str] = []
    with smtp_server() as inbox:
        settings = await _mail_settings(tmp_path, inbox)
        await _user_with_address(settings, "olga")
        async with running_coordinator(settings, port=settings.port) as coord, chromium() as br:
            context = await br.new_context(
                base_url=coord.http,
                viewport={"width": width, "height": height},
                user_agent=PHONE_UA if label == "phone" else None,
            )
            page = await context.new_page()
            watch_errors(page, errors)
            await page.goto("/login")
            await page.get_by_role("link", name="Forgot password?").click()
            await expect(page.get_by_role("heading", name="Forgot your password?")).to_be_visible()
            await page.get_by_label("E-mail address").fill("olga@example.org")
            await axe(page, f"forgot password ({label})")
            await page.get_by_role("button", name="Send the link").click()
            await expect(page.get_by_role("status")).to_contain_text("is on its way")
            await shot(page, f"forgot-password-sent-{label}")

            mail = await inbox.next()
            assert mail.envelope_to == ["olga@example.org"]
            await page.goto(mail.link())
            await expect(page.get_by_role("heading", name="Set a new password")).to_be_visible()
            await expect(page.get_by_text("For the account olga")).to_be_visible()
            await axe(page, f"reset password ({label})")
            width_now = await page.evaluate("document.documentElement.scrollWidth")
            assert width_now <= width, f"the reset page is {width_now} px wide at {width} px"
            await shot(page, f"reset-password-{label}")
            await page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
            await page.get_by_label("Repeat the new password").fill(NEW_PASSWORD)
            await page.get_by_role("button", name="Set the password").click()
            await expect(page).to_have_url(f"{coord.http}/login?reset=1")
            await expect(page.get_by_role("status")).to_contain_text("Your password was changed")
            await shot(page, f"reset-password-done-{label}")

            # The link is spent; the old password is gone; the new one logs in.
            await page.goto(mail.link())
            await expect(page.get_by_role("alert")).to_contain_text("does not work any more")
            await log_in(page, "olga", PASSWORD)
            await expect(page.get_by_role("alert")).to_contain_text("Wrong username or password")
            await log_in(page, "olga", NEW_PASSWORD)
            await expect(page.get_by_role("heading", name="Generate a 3D model")).to_be_visible()

            # The profile's e-mail section: the proven address and the job e-mail setting.
            await page.goto("/profile")
            section = page.locator("#mail")
            await expect(section).to_contain_text("olga@example.org (confirmed)")
            await section.get_by_label("E-mail me when a job finishes").check()
            await section.get_by_role("button", name="Save").click()
            await expect(
                page.get_by_role("status").filter(has_text="You will get an e-mail")
            ).to_be_visible()
            await expect(section.get_by_label("E-mail me when a job finishes")).to_be_checked()
            await axe(page, f"profile e-mail section ({label})")
            wide = await page.evaluate("document.documentElement.scrollWidth")
            assert wide <= width, f"the profile is {wide} px wide at {width} px"
            await section.screenshot(path=str(SHOTS / f"profile-mail-{label}.png"))
            await context.close()
    assert not errors, errors


async def _submit(base: str, key: str, prompt: str) -> str:
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as c:
        response = await c.post("/api/v1/jobs", json={"prompt": prompt, "steps": 8})
        assert response.status_code == 201, response.text
        return str(response.json()["jobs"][0]["id"])


async def _finish_one(agent: ScriptedAgent) -> str:
    assign = await agent.expect(Assign, within=15)
    spec = assign.jobs[0]
    await agent.upload(spec.job, spec.attempt)
    ack = await agent.expect(ResultAck)
    assert (ack.job, ack.status) == (spec.job, "stored"), ack.reason
    return str(spec.job)


async def _notes(page: Any) -> list[dict[str, str]]:
    notes: list[dict[str, str]] = await page.evaluate("window.__notes")
    return notes


async def test_job_page_notifies_in_the_background_once_opted_in(tmp_path: Path) -> None:
    from playwright.async_api import expect

    errors: list[str] = []
    # The scripted agent sends no heartbeats: leases must outlast the browser's steps. A
    # left page's stream is noticed closed only at its next keep-alive: room for several.
    settings = make_settings(
        tmp_path / "data", heartbeat_s=30.0, lease_s=300.0, streams_per_session=16
    )
    await create_user(settings, "olga", PASSWORD, None, is_admin=False)
    key = await create_api_key(settings, "olga", "tests")
    _, token = await issue_token(settings, "olga", "gpu", approved=True)
    async with running_coordinator(settings) as coord, chromium() as browser:
        granted = await browser.new_context(
            base_url=coord.http, viewport={"width": 1280, "height": 900}
        )
        await granted.grant_permissions(["notifications"], origin=coord.http)
        await granted.add_init_script(RECORDER)
        # The 3D viewer renders in software here and holds the page's thread for many
        # seconds after each result; this test is about the status, not the model.
        await granted.route("**/model-viewer.min.js", lambda route: route.abort())
        page = await granted.new_page()
        watch_errors(page, errors)
        await log_in(page, "olga", PASSWORD)
        await expect(page.get_by_role("heading", name="Generate a 3D model")).to_be_visible()
        agent = ScriptedAgent(coord.ws, token)

        # Not opted in: a job that ends in the background shows nothing.
        first = await _submit(coord.http, key, "a quiet chair")
        await page.goto(f"/jobs/{first}")
        toggle = page.get_by_label("Notify me in this browser")
        await expect(toggle).to_be_visible()
        await expect(toggle).not_to_be_checked()
        await page.evaluate("window.__setHidden(true)")
        assert isinstance(await agent.connect(), Welcome)
        assert await _finish_one(agent) == first
        await expect(page.locator(".status.state-succeeded")).to_be_visible(timeout=SLOW_MS)
        assert await _notes(page) == []

        # Opted in, tab in front: still nothing; in the background: one notification.
        second = await _submit(coord.http, key, "a loud lamp")
        await page.goto(f"/jobs/{second}")
        await page.evaluate("window.__setHidden(false)")
        await expect(page.locator(".status.state-assigned")).to_be_visible(timeout=SLOW_MS)
        await toggle.check()
        await expect(toggle).to_be_checked()
        assert await page.evaluate("window.__asked") == 0  # granted already: no prompt
        await axe(page, "job page with the notification toggle")
        await shot(page, "job-notify-toggle-desktop")
        await page.set_viewport_size({"width": 390, "height": 844})
        wide = await page.evaluate("document.documentElement.scrollWidth")
        assert wide <= 390, f"the job page is {wide} px wide on a 390 px phone"
        await shot(page, "job-notify-toggle-phone")
        await page.evaluate("window.__setHidden(true)")
        assert await _finish_one(agent) == second
        await page.wait_for_function("() => window.__notes.length > 0", timeout=SLOW_MS)
        assert await _notes(page) == [{"title": "Your 3D model is ready", "body": "a loud lamp"}]

        # The choice is kept for the next job page, and unticking it stops the notices.
        third = await _submit(coord.http, key, "a third vase")
        await page.goto(f"/jobs/{third}")
        await expect(toggle).to_be_checked()
        await toggle.uncheck()
        await page.evaluate("window.__setHidden(true)")
        assert await _finish_one(agent) == third
        try:
            await expect(page.locator(".status.state-succeeded")).to_be_visible()
        except AssertionError:
            raise
        assert await _notes(page) == []
        await agent.close()

        # Without a granted permission, the prompt opens on the click, never before.
        fresh = await browser.new_context(base_url=coord.http)
        await fresh.add_init_script(RECORDER)
        other = await fresh.new_page()
        watch_errors(other, errors)
        await log_in(other, "olga", PASSWORD)
        await expect(other.get_by_role("heading", name="Generate a 3D model")).to_be_visible()
        waiting = await _submit(coord.http, key, "a waiting cup")
        await other.goto(f"/jobs/{waiting}")
        box = other.get_by_label("Notify me in this browser")
        await expect(box).to_be_visible()
        assert await other.evaluate("window.__asked") == 0
        await box.click()
        await other.wait_for_function("() => window.__asked === 1", timeout=SLOW_MS)
        # Headless Chromium answers the prompt itself; unless granted, the box stays off.
        permission = await other.evaluate("Notification.permission")
        if permission != "granted":
            await expect(box).not_to_be_checked()
        await fresh.close()
        await granted.close()
    assert not errors, errors
