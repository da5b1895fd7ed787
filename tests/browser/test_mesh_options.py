"""The generate page's Mesh fieldset in real headless Chromium at phone and desktop
width: a refused combination shows its error beside the field (after the htmx swap),
a fixed one queues, and the job's page says what the options made of the model.
Screenshots go to artifacts/screenshots/.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.cli.admin_cli import create_user
from tests.support.browser import axe, chromium, log_in, needs_chromium, shot, watch_errors
from tests.support.coordinators import (
    PASSWORD,
    make_settings,
    provision,
    running_coordinator,
    start_agent,
    stop_agent,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(180), needs_chromium]

USER = "mila"


@pytest.mark.parametrize("width", [390, 1280])
async def test_mesh_fieldset_errors_beside_fields_then_a_printable_model(
    tmp_path: Path, width: int
) -> None:
    from playwright.async_api import expect

    settings = make_settings(tmp_path / "data")
    await create_user(settings, USER, PASSWORD, None, is_admin=False)
    _, token_file = await provision(settings, tmp_path, "volunteer")
    errors: list[str] = []
    async with running_coordinator(settings) as coord, chromium() as browser:
        context = await browser.new_context(
            base_url=coord.http, viewport={"width": width, "height": 900}
        )
        page = await context.new_page()
        watch_errors(page, errors)
        await log_in(page, USER, PASSWORD)
        mesh = page.get_by_role("group", name="Mesh")
        await expect(mesh).to_be_visible()
        await expect(mesh).to_contain_text("watertight")  # the help says what printing does
        await shot(page, f"mesh-fieldset-{width}")

        # A level and a face count of one's own: refused, the error beside the field.
        await page.get_by_label("Prompt").fill("a small vase")
        await page.get_by_label("Detail").select_option("low")
        faces = page.get_by_label("Face count")
        await faces.fill("9000")
        await page.get_by_role("button", name="Generate").click()
        field_error = page.locator("#mesh-error")
        await expect(field_error).to_contain_text("not both")
        await expect(field_error).to_be_visible()
        await expect(faces).to_have_attribute("aria-invalid", "true")
        await expect(page.locator("#submit-error")).to_be_empty()
        await expect(faces).to_have_value("9000")  # what was typed stays
        await expect(page.get_by_label("Prompt")).to_have_value("a small vase")
        await shot(page, f"mesh-error-{width}")
        await axe(page, f"mesh error ({width} px)")

        # Fixed: a custom count for printing queues, and the error goes.
        await page.get_by_label("Detail").select_option("custom")
        await page.get_by_label("For 3D printing").check()
        # A seed whose test sphere repairs watertight (a few drawn at random, e.g. 0 and
        # 325016354, decimate into a surface the repair cannot close: honest, not this test).
        await page.get_by_label("Seed (blank = random)").fill("7")
        await page.get_by_role("button", name="Generate").click()
        await expect(page.locator("#jobs-list li")).to_have_count(1)
        await expect(field_error).to_be_hidden()
        await expect(faces).not_to_have_attribute("aria-invalid", "true")
        await expect(faces).to_have_value("")  # a fresh form

        # A volunteer's agent makes it; the job page says what became of the mesh.
        agent = start_agent(coord.ws, token_file, tmp_path / "spool", model="instant:sphere=40000")
        try:
            await page.locator("#jobs-list li a").first.click()
            await expect(page.locator("dl.settings")).to_contain_text(
                "about 9,000 faces, for 3D printing"
            )
            await expect(page.locator("dl.settings dt:text-is('Seed') + dd")).to_have_text("7")
            await expect(page.get_by_text("the STL is watertight")).to_be_visible(timeout=60_000)
            await expect(page.locator("#job-live")).to_contain_text("faces")
            await shot(page, f"mesh-job-{width}")
            await axe(page, f"mesh job page ({width} px)")
            async with page.expect_download() as download_info:
                await page.get_by_role("link", name="STL").click()
            download = await download_info.value
            assert (await download.path()).stat().st_size > 84
        finally:
            assert await stop_agent(agent) == 0
        await context.close()
    assert not errors, errors
