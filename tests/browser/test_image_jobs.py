"""Image-to-3D in real headless Chromium at phone and desktop width: a bad file is refused
beside the picture field, a good picture becomes a job that a real agent process with the
tiny image model runs, and the job page shows the picture and the model.
Screenshots go to artifacts/screenshots/."""

from __future__ import annotations

import re
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
)
from tests.support.images import encoded

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(240), needs_chromium]

USER = "iris"
# The input picture has loaded and is drawn at a visible size.
PICTURE_SHOWN = """() => {
  const img = document.querySelector('figure.input-image img');
  return !!img && img.complete && img.naturalWidth > 0 && img.getBoundingClientRect().width > 50;
}"""


def upload(name: str, mime: str, data: bytes) -> dict[str, Any]:
    return {"name": name, "mimeType": mime, "buffer": data}


@pytest.mark.parametrize("width", [390, 1280])
async def test_image_job_from_the_generate_page(tmp_path: Path, width: int) -> None:
    from playwright.async_api import expect

    settings = make_settings(tmp_path / "data")
    _, token_file = await provision(settings, tmp_path, USER)
    errors: list[str] = []
    async with running_coordinator(settings) as coord, chromium() as browser:
        agent = start_agent(coord.ws, token_file, tmp_path / "spool", model="tiny-img2img")
        try:
            context = await browser.new_context(
                base_url=coord.http, viewport={"width": width, "height": 900}
            )
            page = await context.new_page()
            watch_errors(page, errors)
            await log_in(page, USER, PASSWORD)
            await expect(page.get_by_role("heading", name="Generate a 3D model")).to_be_visible()
            field = page.locator("#image")
            image_error = page.locator("#image-error")

            # A file that only claims to be a picture: refused beside the field, kept out.
            await field.set_input_files(upload("cat.png", "image/png", b"<html>not a cat</html>"))
            await page.get_by_role("button", name="Generate").click()
            await expect(image_error).to_contain_text("not a PNG, JPEG or WebP")
            await expect(page.locator("#submit-error")).to_be_empty()
            await expect(page.locator("#jobs-list li")).to_have_count(0)
            await shot(page, f"image-refused-{width}")
            await axe(page, f"generate, picture refused ({width} px)")

            # A picture with something hidden after its end: refused too.
            hidden = encoded("PNG", (64, 64)) + b"PK\x03\x04 a zip file hiding here"
            await field.set_input_files(upload("chair.png", "image/png", hidden))
            await page.get_by_role("button", name="Generate").click()
            await expect(image_error).to_contain_text("after the end of the image")

            # A real picture, no prompt: queued; the error goes.
            picture = encoded("JPEG", (400, 300))
            await field.set_input_files(upload("chair.jpg", "image/jpeg", picture))
            await page.get_by_label("Steps").fill("4")
            await page.get_by_role("button", name="Generate").click()
            row = page.locator("#jobs-list li").first
            await expect(row).to_contain_text("Model from an image")
            await expect(image_error).to_be_empty()
            await row.get_by_role("link", name="Model from an image").click()
            await page.wait_for_url(re.compile(r"/jobs/[\w-]+$"))

            await expect(page.get_by_role("heading", name="Model from an image")).to_be_visible()
            await page.wait_for_function(PICTURE_SHOWN, timeout=15_000)
            status = page.locator("#job-live")
            await expect(status).to_contain_text("succeeded", timeout=150_000)
            await page.wait_for_function(
                "() => document.querySelector('model-viewer')?.loaded === true", timeout=60_000
            )
            await page.wait_for_function(PICTURE_SHOWN, timeout=15_000)
            await shot(page, f"image-job-{width}")
            await axe(page, f"image job page ({width} px)")
            # The picture is served only to whoever may see the job.
            src = await page.locator("figure.input-image img").get_attribute("src")
            assert src is not None and src.endswith("/input.png")
            stranger = await browser.new_context(base_url=coord.http)
            response = await stranger.request.get(src)
            assert response.status == 404
            await stranger.close()
        finally:
            assert await stop_agent(agent) == 0
    assert errors == [], errors
