"""A person's journey in real headless Chromium against a real coordinator and agent.

Register, log in, submit a prompt, watch progress arrive live, see the model in
<model-viewer>, download it, find it in history, log out. Selectors are
accessible names and roles. Screenshots go to artifacts/screenshots/; axe-core
checks the main pages for serious or critical accessibility problems.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import (
    MODEL_LOADED,
    SHOTS,
    axe,
    launch,
    needs_chromium,
    shot,
    watch_errors,
)
from tests.support.coordinators import (
    PASSWORD,
    ROOT,
    make_settings,
    provision,
    running_coordinator,
    start_agent,
    stop_agent,
    wait_for,
)

PROMPT = "a red chair"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.timeout(180),
    needs_chromium,
]

# Collects the text of the job's live status block every time it changes, so the
# test can prove that states arrived over SSE (no reload: the marker survives).
WATCH_STATUS = """() => {
  window.__seen = [document.getElementById('job-live').innerText.trim()];
  window.__noReload = true;
  new MutationObserver(() => {
    const text = document.getElementById('job-live').innerText.trim();
    if (text !== window.__seen[window.__seen.length - 1]) window.__seen.push(text);
  }).observe(document.getElementById('job-live'), {subtree: true, childList: true,
                                                  characterData: true});
}"""


def _picture_difference(a: bytes, b: bytes) -> float:
    """Mean absolute difference of two same-sized viewer screenshots, 0 (same) to 1,
    below the viewer's loading bar (its top rows, fading out after a load)."""
    from PIL import Image, ImageChops, ImageStat

    one, two = (Image.open(io.BytesIO(x)).convert("RGB") for x in (a, b))
    assert one.size == two.size
    box = (0, 8, *one.size)
    one, two = one.crop(box), two.crop(box)
    return sum(ImageStat.Stat(ImageChops.difference(one, two)).mean) / (3 * 255)


def _no_agents(coord: Any) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return not coord.farm.agents

    return check


async def test_journey_register_generate_watch_view_download_history_logout(
    tmp_path: Path,
) -> None:
    from playwright.async_api import async_playwright, expect

    settings = make_settings(tmp_path / "data")
    _, token_file = await provision(settings, tmp_path, "volunteer")
    page_errors: list[str] = []
    async with running_coordinator(settings) as coord, async_playwright() as pw:
        browser = await launch(pw)
        agent = None
        try:
            context = await browser.new_context(
                base_url=coord.http, viewport={"width": 1100, "height": 800}
            )
            page = await context.new_page()
            watch_errors(page, page_errors)

            await page.goto("/")
            await shot(page, "landing")
            await axe(page, "landing")
            await page.get_by_role("link", name="Register").first.click()
            await page.get_by_label("Username").fill("carol")
            await page.get_by_label("Password", exact=True).fill(PASSWORD)
            await page.get_by_label("Repeat password").fill(PASSWORD)
            await axe(page, "register")
            await page.get_by_role("button", name="Register").click()
            await expect(page.get_by_role("heading", name="Generate a 3D model")).to_be_visible()

            # Log out and back in through the login form.
            await page.get_by_role("button", name="Log out").click()
            await page.get_by_role("link", name="Log in").first.click()
            await page.get_by_label("Username").fill("carol")
            await page.get_by_label("Password").fill(PASSWORD)
            await axe(page, "login")
            await page.get_by_role("button", name="Log in").click()

            # No agent yet: the generate page says so, and the job waits in the queue.
            await expect(page.get_by_text("No GPU agent is online")).to_be_visible()
            await page.get_by_label("Prompt").fill(PROMPT)
            await page.get_by_label("Steps").fill("4")
            await page.get_by_label("Seed (blank = random)").fill("7")
            await page.get_by_role("button", name="Generate").click()
            job_link = page.get_by_role("link", name=PROMPT)
            await expect(job_link).to_be_visible()  # the htmx row, without navigation
            await shot(page, "generate")
            await axe(page, "generate")
            await job_link.click()
            await page.wait_for_url(re.compile(r"/jobs/[\w-]+$"))
            status = page.locator("#job-live")
            await expect(status).to_contain_text("queued")
            await expect(status).to_contain_text("No GPU agent is online")
            await page.evaluate(WATCH_STATUS)
            await axe(page, "job (queued)")

            agent = start_agent(coord.ws, token_file, tmp_path / "spool")
            await expect(status).to_contain_text("succeeded", timeout=90_000)
            seen = await page.evaluate("() => window.__seen")
            assert await page.evaluate("() => window.__noReload === true"), "the page reloaded"
            assert "queued" in seen[0] and "succeeded" in seen[-1], seen
            assert len(seen) >= 2, seen

            # The model page: <model-viewer> loads the meshopt-compressed copy, decoded
            # by the decoder from our vendor folder (the CSP blocks any other origin).
            src = await page.evaluate(MODEL_LOADED)
            assert src.endswith("/model.meshopt.glb")
            async with page.expect_response(lambda r: "meshopt_decoder.js" in r.url) as decoder:
                await page.reload()
            assert (await decoder.value).url.endswith("/static/vendor/meshopt_decoder.js")
            assert (await page.evaluate(MODEL_LOADED)).endswith("/model.meshopt.glb")
            await expect(page.get_by_text("Made by agent")).to_be_visible()
            await shot(page, "model")
            await axe(page, "model")
            # The compressed copy looks as the stored model does: the same viewer shows
            # one, then the other, and the two pictures differ by little more than noise.
            viewer = page.locator("model-viewer")
            compact = await viewer.screenshot(path=str(SHOTS / "viewer-meshopt.png"))
            stored = src.replace("/model.meshopt.glb", "/model.glb")
            await page.evaluate(
                "(src) => { document.querySelector('model-viewer').src = src }", stored
            )
            assert (await page.evaluate(MODEL_LOADED)).endswith("/model.glb")
            # The first frames after 'load' may still be drawing: a few looks, bounded.
            differences = []
            for _ in range(5):
                plain = await viewer.screenshot(path=str(SHOTS / "viewer-stored.png"))
                differences.append(_picture_difference(compact, plain))
                if differences[-1] < 0.01:
                    break
                await page.wait_for_timeout(300)
            assert min(differences) < 0.01, differences

            async with page.expect_download() as info:
                await page.get_by_role("link", name="GLB", exact=True).click()
            download = await info.value
            data = await asyncio.to_thread(Path(await download.path()).read_bytes)
            assert data[:4] == b"glTF" and download.suggested_filename.endswith(".glb")

            # From here on no agent: later jobs stay queued, so their pages carry no
            # <model-viewer> (its first WebGL frames cost seconds of CPU in SwiftShader).
            await stop_agent(agent)
            agent = None
            await wait_for(_no_agents(coord), 10, "the coordinator to see the agent leave")

            # History finds it, by search too.
            await page.get_by_role("link", name="History").click()
            await expect(page.get_by_role("link", name=PROMPT)).to_be_visible()
            await page.get_by_label("Search prompts").fill("chair")
            await page.get_by_label("Status").select_option("succeeded")
            await page.get_by_role("button", name="Search").click()
            await page.wait_for_url(re.compile(r"/history\?q=chair&state=succeeded"))
            await expect(page.get_by_role("link", name=PROMPT)).to_be_visible()
            await page.get_by_label("Search prompts").fill("no such thing")
            await page.get_by_role("button", name="Search").click()
            await expect(page.get_by_text("Nothing matches")).to_be_visible()
            await page.goto("/history")
            await shot(page, "history")
            await axe(page, "history")

            # The history list is live: a job submitted elsewhere (here: a plain POST
            # from the same session) appears without a reload.
            await page.evaluate("() => { window.__noReload = true; }")
            token = await page.locator("input[name=csrf_token]").first.input_value()
            posted = await page.request.post(
                "/jobs",
                form={"csrf_token": token, "prompt": "a blue vase", "steps": "4"},
                max_redirects=0,
            )
            assert posted.status == 303, await posted.text()
            await expect(page.get_by_role("link", name="a blue vase")).to_be_visible(timeout=15_000)
            assert await page.evaluate("() => window.__noReload === true"), "the page reloaded"

            # Owner actions on the job page: public/private, then delete after confirming.
            await page.get_by_role("link", name="a blue vase").click()
            await expect(page.locator("#job-live")).to_contain_text("No GPU agent is online")
            await page.get_by_role("button", name="Make public").click()
            await expect(page.get_by_role("button", name="Make private")).to_be_visible()
            await expect(page.get_by_text("Public: anyone with the link")).to_be_visible()
            dialogs: list[str] = []

            async def confirm(dialog: Any) -> None:
                dialogs.append(dialog.message)
                await dialog.accept()

            page.once("dialog", confirm)
            await page.get_by_role("button", name="Delete").click()
            await page.wait_for_url(re.compile(r"/history$"))
            assert dialogs == ["Delete this model for good?"]
            await expect(page.get_by_role("link", name="a blue vase")).to_have_count(0)
            await expect(page.get_by_role("link", name=PROMPT)).to_be_visible()

            for path, name in (("/profile", "profile"), ("/plans", "plans")):
                await page.goto(path)
                await shot(page, name)
                await axe(page, name)

            await page.get_by_role("button", name="Log out").click()
            await expect(page.get_by_role("link", name="Log in").first).to_be_visible()
            await page.goto("/history")
            await page.wait_for_url(re.compile(r"/login\?next="))
            await context.close()
        finally:
            await browser.close()
            if agent is not None:
                await stop_agent(agent)
    assert not page_errors, page_errors
    if os.environ.get("SHAPEFARM_DOCS_SCREENSHOTS"):
        # Regenerating the README pictures is a manual step: see README "Screenshots".
        docs = ROOT / "docs" / "screenshots"
        docs.mkdir(parents=True, exist_ok=True)
        for name in ("model", "history"):
            (docs / f"{name}.png").write_bytes((SHOTS / f"{name}.png").read_bytes())
