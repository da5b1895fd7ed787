"""The owner pauses and resumes their agent from the Contribute page in real Chromium.

A real ``instant`` agent process with "my own jobs first" runs for the owner;
the owner pauses it (choosing to finish the running batch), sees why it is
paused, resumes it, at desktop (1280 px) and phone (390 px) width. Pages are
checked with axe-core and photographed into artifacts/screenshots/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import axe, chromium, log_in, needs_chromium, shot, watch_errors
from tests.support.coordinators import (
    PASSWORD,
    make_settings,
    provision,
    running_coordinator,
    start_agent,
    stop_agent,
    wait_for,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(150), needs_chromium]


@pytest.mark.parametrize("width", [1280, 390])
async def test_owner_controls_pause_and_resume_buttons(tmp_path: Path, width: int) -> None:
    from playwright.async_api import expect

    settings = make_settings(tmp_path / "data")
    _, token_file = await provision(settings, tmp_path)
    agent_id = token_file.read_text().strip().split(".")[1]
    errors: list[str] = []
    async with running_coordinator(settings) as coord:
        agent = start_agent(
            coord.ws,
            token_file,
            tmp_path / "spool",
            "--data-dir",
            str(tmp_path / "agent"),
            "--prefer-own",
            model="instant",
        )
        try:

            async def reported() -> bool:
                conn = coord.farm.agents.get(agent_id)
                return conn is not None and conn.prefer_own

            await wait_for(reported, 60, "the agent to connect and report")
            async with chromium() as browser:
                context = await browser.new_context(
                    base_url=coord.http, viewport={"width": width, "height": 900}
                )
                page: Any = await context.new_page()
                watch_errors(page, errors)
                await log_in(page, "alice", PASSWORD)
                await page.goto("/contribute")
                row = page.locator(f"#agent-{agent_id}")
                await expect(row).to_contain_text("Runs first: your own jobs")
                await expect(page.get_by_role("heading", name="Your controls")).to_be_visible()
                await row.get_by_label("Running batch").select_option("finish")
                await row.get_by_role("button", name="Pause alice's agent").click()
                await expect(row).to_contain_text("Paused: paused from the Contribute page")
                await expect(row.get_by_role("button", name="Resume alice's agent")).to_be_visible()
                assert coord.farm.agents[agent_id].paused
                await shot(page, f"contribute-paused-{width}")
                await axe(page, f"contribute paused {width}")
                await row.get_by_role("button", name="Resume alice's agent").click()
                await expect(row.get_by_role("button", name="Pause alice's agent")).to_be_visible()
                await expect(row).not_to_contain_text("Paused:")
                assert not coord.farm.agents[agent_id].paused
                overflow = await page.evaluate(
                    "() => document.documentElement.scrollWidth - window.innerWidth"
                )
                assert overflow <= 0, f"the page scrolls sideways by {overflow} px"
                await context.close()
        finally:
            exit_code = await stop_agent(agent)
    assert exit_code == 0
    assert not errors, errors
