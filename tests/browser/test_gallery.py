"""Issue 12's gallery items in real headless Chromium at phone and desktop width:
Cyrillic search, local times and the favicon, the public gallery with likes, reports
and moderation, sharing and embedding, AR, and the generate/history helpers.

Screenshots go to artifacts/screenshots/; axe-core checks every new page.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coordinator.cli.admin_cli import create_user
from tests.support.browser import (
    MODEL_LOADED,
    axe,
    chromium,
    log_in,
    needs_chromium,
    shot,
    watch_errors,
)
from tests.support.coordinators import (
    PASSWORD,
    RunningCoordinator,
    make_settings,
    running_coordinator,
)
from tests.support.gallery import other_site, shaped_job

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(180), needs_chromium]

WIDTHS = [390, 1280]
ADMIN, ALICE, BOB = "root", "alice", "bob"  # user ids 1, 2, 3


@dataclass
class Site:
    coord: RunningCoordinator
    browser: Any
    width: int
    errors: list[str]

    async def page(self, user: str | None = None, **options: Any) -> Any:
        """A fresh browser context (its own cookies) at the test's width, logged in."""
        phone = self.width < 500
        context = await self.browser.new_context(
            base_url=self.coord.http,
            viewport={"width": self.width, "height": 900},
            is_mobile=phone,
            has_touch=phone,
            **options,
        )
        page = await context.new_page()
        watch_errors(page, self.errors)
        if user is not None:
            await log_in(page, user, PASSWORD)
            await page.wait_for_url(lambda url: "/login" not in url)
        return page

    async def job(self, owner_id: int, prompt: str, public: bool = True) -> str:
        return await shaped_job(self.coord.farm, owner_id, prompt, public=public)


@contextlib.asynccontextmanager
async def site(tmp_path: Path, width: int) -> AsyncIterator[Site]:
    settings = make_settings(tmp_path / "data")
    for name in (ADMIN, ALICE, BOB):
        await create_user(settings, name, PASSWORD, None, is_admin=name == ADMIN)
    errors: list[str] = []
    async with running_coordinator(settings) as coord, chromium() as browser:
        yield Site(coord, browser, width, errors)
    assert not errors, errors


@pytest.mark.parametrize("width", WIDTHS)
async def test_history_search_finds_cyrillic_in_any_case(tmp_path: Path, width: int) -> None:
    from playwright.async_api import expect

    async with site(tmp_path, width) as s:
        chair = await s.job(2, "красный стул", public=False)
        await s.job(2, "a blue ball", public=False)
        page = await s.page(ALICE)
        await page.goto("/history")
        await page.get_by_label("Search prompts").fill("СТУЛ")
        await page.get_by_role("button", name="Search").click()
        await expect(page).to_have_url(re.compile(r"q="))
        rows = page.locator("#history-results li.job")
        await expect(rows).to_have_count(1)
        await expect(page.locator(f"#history-{chair}")).to_contain_text("красный стул")
        await shot(page, f"gallery-search-cyrillic-{width}")


@pytest.mark.parametrize("width", WIDTHS)
async def test_times_show_in_local_time_with_utc_on_hover(tmp_path: Path, width: int) -> None:
    from playwright.async_api import expect

    async with site(tmp_path, width) as s:
        job = await s.job(2, "a blue ball", public=False)
        page = await s.page(ALICE, timezone_id="Asia/Tokyo", locale="en-US")
        missing: list[str] = []
        page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
        expected = """(t) => new Intl.DateTimeFormat('en', {dateStyle: 'medium',
            timeStyle: 'short', timeZone: 'Asia/Tokyo'}).format(new Date(t.dateTime))"""
        for path in (f"/jobs/{job}", "/history"):
            await page.goto(path)
            time = page.locator("time[data-local]").first
            await expect(time).to_have_attribute("title", re.compile(r" UTC$"))
            await expect(time).to_have_text(await time.evaluate(expected))
            assert "UTC" not in await time.inner_text()
        # Swapped in by htmx (a search): localised as well.
        await page.get_by_label("Search prompts").fill("ball")
        await page.get_by_role("button", name="Search").click()
        await expect(page).to_have_url(re.compile(r"q=ball"))
        time = page.locator("#history-results time[data-local]").first
        await expect(time).to_have_text(await time.evaluate(expected))
        await time.hover()
        await shot(page, f"gallery-local-times-{width}")
        icon = await page.request.get("/favicon.ico")
        assert icon.status == 200 and icon.headers["content-type"].startswith("image/svg")
        assert not missing, missing


@pytest.mark.parametrize("width", WIDTHS)
async def test_gallery_likes_report_and_moderation(tmp_path: Path, width: int) -> None:
    from playwright.async_api import expect

    async with site(tmp_path, width) as s:
        ids = {p: await s.job(2, p) for p in ("a red chair", "a blue ball", "a green vase")}
        await s.job(2, "a yellow cone", public=False)
        await s.job(3, "a purple capsule")
        bob = await s.page(BOB)
        await bob.goto("/explore")
        await bob.evaluate("() => { window.__noReload = true; }")
        cards = bob.locator("ul.gallery li.card")
        await expect(cards).to_have_count(4)
        await expect(bob.get_by_text("a yellow cone")).to_have_count(0)  # private
        like = bob.locator(f"#like-{ids['a red chair']} button")
        await like.click()
        await expect(like).to_have_attribute("aria-pressed", "true")
        await expect(like.locator(".like-count")).to_have_text("1")
        assert await bob.evaluate("() => window.__noReload === true")  # an htmx swap
        await bob.get_by_label("Order").select_option("liked")
        await bob.get_by_role("button", name="Search").click()
        await expect(bob).to_have_url(re.compile(r"order=liked"))
        await expect(cards.first).to_contain_text("a red chair")
        await shot(bob, f"gallery-explore-{width}")
        await axe(bob, f"explore ({width} px)")

        await cards.first.get_by_role("link", name="alice").click()
        await expect(bob.get_by_role("heading", name="Models by alice")).to_be_visible()
        await expect(cards).to_have_count(3)
        await axe(bob, f"creator page ({width} px)")

        await bob.goto(f"/jobs/{ids['a blue ball']}")
        assert await bob.evaluate(MODEL_LOADED)
        await bob.get_by_text("Report this model").click()
        await bob.get_by_label("What is wrong with it?").fill("It is not a ball at all")
        await bob.get_by_role("button", name="Send report").click()
        await expect(bob.get_by_text("an admin will look at this model")).to_be_visible()
        await axe(bob, f"job page with likes and report ({width} px)")

        root = await s.page(ADMIN)
        await root.goto("/admin/reports")
        row = root.locator("table.reports tbody tr")
        await expect(row).to_contain_text("It is not a ball at all")
        await shot(root, f"gallery-moderation-{width}")
        await axe(root, f"moderation queue ({width} px)")
        root.once("dialog", lambda dialog: dialog.accept())
        await row.get_by_role("button", name="Hide model").click()
        await expect(root.get_by_text("No open reports.")).to_be_visible()

        await bob.goto("/explore")
        await expect(cards).to_have_count(3)
        await expect(bob.get_by_text("a blue ball")).to_have_count(0)
        alice = await s.page(ALICE)
        await alice.goto("/u/alice")
        hidden = alice.locator(f"#card-{ids['a blue ball']}")
        await expect(hidden).to_contain_text("hidden by a moderator")
        await shot(alice, f"gallery-creator-owner-{width}")


@pytest.mark.parametrize("width", WIDTHS)
async def test_share_copy_link_meta_and_embed(tmp_path: Path, width: int) -> None:
    from playwright.async_api import expect

    async with site(tmp_path, width) as s:
        job = await s.job(2, "a green vase")
        private = await s.job(2, "a yellow cone", public=False)
        page = await s.page(BOB)
        await page.context.grant_permissions(["clipboard-read", "clipboard-write"])
        await page.goto(f"/jobs/{job}")
        assert await page.evaluate(MODEL_LOADED)
        url = f"{s.coord.http}/jobs/{job}"
        # No public_url here: no Open Graph meta (it needs absolute URLs, see the HTTP
        # tests), and the share box completes its paths from the page's address.
        await expect(page.locator('meta[property="og:image"]')).to_have_count(0)
        await expect(page.get_by_label("Link", exact=True)).to_have_value(url)
        await page.get_by_role("button", name="Copy link").click()
        await expect(page.get_by_text("Link copied")).to_be_visible()
        assert await page.evaluate("() => navigator.clipboard.readText()") == url
        await page.get_by_role("button", name="Copy embed code").click()
        snippet = await page.evaluate("() => navigator.clipboard.readText()")
        assert snippet.startswith(f'<iframe src="{s.coord.http}/embed/{job}"')
        await shot(page, f"gallery-share-{width}")

        # Another site frames the embed page: it loads; a normal page refuses to be framed.
        html = (
            f"<!doctype html><title>blog</title><h1>My blog</h1>{snippet}"
            f'<iframe id="no" src="{s.coord.http}/jobs/{job}" title="not allowed"></iframe>'
        )
        with other_site(html) as other:
            await page.goto(other)
            embed = page.frame(url=re.compile(f"/embed/{job}$"))
            assert embed is not None, [frame.url for frame in page.frames]
            # Framed elsewhere, the viewer still decodes the compressed copy.
            assert (await embed.evaluate(MODEL_LOADED)).endswith("/model.meshopt.glb")
            blocked = page.frame_locator("#no")
            await expect(blocked.get_by_role("heading", name="a green vase")).to_have_count(0)
        # Chrome reports the refused frame; that one report is expected, nothing else.
        assert any("frame-ancestors 'none'" in e for e in s.errors), s.errors
        s.errors[:] = [e for e in s.errors if "frame-ancestors 'none'" not in e]
        await shot(page, f"gallery-embedded-{width}")

        await page.goto(f"/embed/{job}")
        await axe(page, f"embed page ({width} px)")
        missing = await page.request.get(f"/embed/{private}")
        assert missing.status == 404


@pytest.mark.parametrize("width", WIDTHS)
async def test_viewer_offers_ar_in_your_space(tmp_path: Path, width: int) -> None:
    from playwright.async_api import expect

    async with site(tmp_path, width) as s:
        job = await s.job(2, "a red chair")
        page = await s.page(ALICE)
        await page.goto(f"/jobs/{job}")
        viewer = page.locator("model-viewer")
        await expect(viewer).to_have_attribute("ar-modes", "webxr scene-viewer quick-look")
        assert await page.evaluate(MODEL_LOADED)
        assert await viewer.evaluate("(v) => v.ar === true")
        button = viewer.locator('button[slot="ar-button"]')
        await expect(button).to_have_text("View in your space")
        # Headless Chromium has no AR: model-viewer keeps the button out of sight,
        # as it does on any device that cannot place the model.
        can = await viewer.evaluate("(v) => v.canActivateAR")
        assert can is False
        await expect(button).to_be_hidden()
        await shot(page, f"gallery-ar-viewer-{width}")


@pytest.mark.parametrize("width", WIDTHS)
async def test_generate_help_thumbnails_and_bulk_delete(tmp_path: Path, width: int) -> None:
    from playwright.async_api import expect

    async with site(tmp_path, width) as s:
        made = [await s.job(2, p, public=False) for p in ("a red chair", "a blue ball")]
        keep = await s.job(2, "a green vase", public=False)
        page = await s.page(ALICE)
        await page.goto("/")
        await page.get_by_role("button", name="a birthday cupcake").click()
        await expect(page.get_by_label("Prompt")).to_have_value("a birthday cupcake")
        await expect(page.get_by_label("Prompt")).to_be_focused()
        await expect(page.get_by_text("Guidance: how closely")).to_be_visible()
        thumbs = page.locator("#jobs-list img")
        await expect(thumbs).to_have_count(3)
        # Thumbnails load lazily: at phone width the list starts below the form.
        await thumbs.first.scroll_into_view_if_needed()
        await page.wait_for_function(
            "(img) => img.complete && img.naturalWidth > 0",
            arg=await thumbs.first.element_handle(),
            timeout=10_000,
        )
        await shot(page, f"gallery-generate-help-{width}")
        await axe(page, f"generate page ({width} px)")

        await page.goto("/history")
        delete = page.get_by_role("button", name="Delete selected")
        await expect(delete).to_be_disabled()
        for job in made:
            await page.locator(f"#history-{job} input.select-job").check()
        await expect(delete).to_be_enabled()
        await expect(page.locator(".selection-count")).to_have_text("Selected: 2")
        await shot(page, f"gallery-bulk-select-{width}")
        await axe(page, f"history with selection ({width} px)")
        dialogs: list[str] = []

        async def accept(dialog: Any) -> None:
            dialogs.append(dialog.message)
            await dialog.accept()

        page.once("dialog", accept)
        await delete.click()
        await expect(page.locator("#history-results li.job")).to_have_count(1)
        await expect(page.locator(f"#history-{keep}")).to_be_visible()
        assert len(dialogs) == 1 and "Delete the selected models" in dialogs[0]
