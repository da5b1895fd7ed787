"""Every list page at phone width (390 px), in real headless Chromium.

History's prompt links had no room left (0 px wide) and its thumbnails were not
links; the agent and admin tables pushed pages to 569–922 px. Now no page is wider
than the phone, prompts keep a readable width, thumbnails open the model, and wide
tables scroll inside their card; the model page's viewer shows its model. Screenshots
go to artifacts/screenshots/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import (
    MODEL_LOADED,
    chromium,
    log_in,
    needs_chromium,
    shot,
    watch_errors,
)
from tests.support.coordinators import (
    PASSWORD,
    api_client,
    make_settings,
    provision,
    running_coordinator,
    start_agent,
    stop_agent,
    wait_for,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(180), needs_chromium]

PROMPTS = [
    "a very detailed antique brass telescope standing on a wooden tripod",
    "a red chair",
]
PAGES = ["/history", "/", "/contribute", "/admin", "/admin/agents", "/admin/jobs",
         "/admin/users", "/admin/audit", "/profile"]  # fmt: skip


async def test_phone_width_pages_fit_and_history_rows_are_usable(tmp_path: Path) -> None:
    from playwright.async_api import expect

    settings = make_settings(tmp_path / "data")
    key, token_file = await provision(settings, tmp_path, "root", admin=True)
    errors: list[str] = []
    async with running_coordinator(settings) as coord:
        agent = start_agent(coord.ws, token_file, tmp_path / "spool")
        try:
            async with api_client(coord, key) as api:
                ids = []
                for prompt in PROMPTS:
                    answer = await api.post("/api/v1/jobs", json={"prompt": prompt, "steps": 4})
                    assert answer.status_code == 201, answer.text
                    ids.append(answer.json()["jobs"][0]["id"])

                async def all_done() -> bool:
                    states = [(await api.get(f"/api/v1/jobs/{i}")).json()["state"] for i in ids]
                    return all(s == "succeeded" for s in states)

                await wait_for(all_done, 120, "both models")
            async with chromium() as browser:
                context = await browser.new_context(
                    base_url=coord.http, viewport={"width": 390, "height": 844}
                )
                page = await context.new_page()
                watch_errors(page, errors)
                await log_in(page, "root", PASSWORD)
                await expect(
                    page.get_by_role("heading", name="Generate a 3D model")
                ).to_be_visible()
                for path in PAGES:
                    await page.goto(path)
                    width = await page.evaluate("document.documentElement.scrollWidth")
                    assert width <= 390, f"{path} is {width} px wide at 390 px"
                    await shot(page, "phone" + path.replace("/", "-").rstrip("-"))
                await page.goto("/history")
                for job_id, prompt in zip(ids, PROMPTS, strict=True):
                    row = page.locator(f"#history-{job_id}")
                    link = row.get_by_role("link", name=prompt)
                    box: Any = await link.bounding_box()
                    assert box is not None and box["width"] >= 120, (prompt, box)
                    thumb = row.locator("a.thumb-link")
                    assert await thumb.get_attribute("href") == f"/jobs/{job_id}"
                await page.locator(f"#history-{ids[1]} a.thumb-link").click()
                await expect(page).to_have_url(f"{coord.http}/jobs/{ids[1]}")
                # The model page on the phone: the viewer shows the compressed copy.
                assert (await page.evaluate(MODEL_LOADED)).endswith("/model.meshopt.glb")
                width = await page.evaluate("document.documentElement.scrollWidth")
                assert width <= 390, f"the model page is {width} px wide at 390 px"
                await shot(page, "phone-model")
                await context.close()
        finally:
            await stop_agent(agent)
    assert not errors, errors
