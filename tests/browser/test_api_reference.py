"""The API reference page in headless Chromium at desktop and phone width: reachable
from the navigation, every endpoint with its curl example, no horizontal overflow,
no serious accessibility problems. Screenshots go to artifacts/screenshots/."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.api import v1
from tests.support.browser import axe, chromium, needs_chromium, shot, watch_errors
from tests.support.coordinators import make_settings, running_coordinator

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(120), needs_chromium]


@pytest.mark.parametrize("width", [1280, 390])
async def test_api_reference_renders_and_fits(tmp_path: Path, width: int) -> None:
    from playwright.async_api import expect

    errors: list[str] = []
    async with running_coordinator(make_settings(tmp_path)) as coord, chromium() as browser:
        context = await browser.new_context(
            base_url=coord.http, viewport={"width": width, "height": 900}
        )
        page = await context.new_page()
        watch_errors(page, errors)
        await page.goto("/plans")
        nav = page.get_by_role("navigation", name="Main")
        if width > 600:
            await nav.get_by_role("link", name="API", exact=True).click()
        else:
            await page.goto("/api")
        await expect(page.get_by_role("heading", name="API reference", level=1)).to_be_visible()
        assert page.url.endswith("/api")
        for endpoint in v1.ENDPOINTS:
            section = page.locator(f"#{endpoint.operation_id}")
            await expect(section.locator("pre code")).to_contain_text(
                f"$SHAPEFARM_URL{endpoint.example_path or endpoint.path}"
            )
        await expect(page.locator("#error-validation_failed")).to_be_visible()
        await expect(page.locator("pre code").first).to_contain_text("Authorization: Bearer")
        await expect(page.get_by_text(f"export SHAPEFARM_URL={coord.http}")).to_be_visible()
        width_now = await page.evaluate("document.documentElement.scrollWidth")
        assert width_now <= width, f"/api is {width_now} px wide at {width} px"
        await shot(page, f"api-reference-{width}")
        await axe(page, f"/api at {width} px")
        # The link to the machine-readable document works from the page.
        async with page.expect_response("**/api/v1/openapi.json") as answer:
            await page.get_by_role("link", name="OpenAPI 3.1 document").click()
        assert (await answer.value).status == 200
        await context.close()
    assert not errors, errors


async def test_api_reference_in_russian_fits_a_phone(tmp_path: Path) -> None:
    from playwright.async_api import expect

    async with running_coordinator(make_settings(tmp_path)) as coord, chromium() as browser:
        context = await browser.new_context(
            base_url=coord.http, viewport={"width": 390, "height": 900}, locale="ru-RU"
        )
        page = await context.new_page()
        await page.goto("/api")
        await expect(page.get_by_role("heading", name="Справочник по API", level=1)).to_be_visible()
        assert await page.get_attribute("html", "lang") == "ru"
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"/api in Russian is {width} px wide at 390 px"
        await shot(page, "api-reference-390-ru")
        await axe(page, "/api in Russian at 390 px")
        await context.close()
