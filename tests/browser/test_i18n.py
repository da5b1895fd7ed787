"""The UI in Russian, in real headless Chromium against a real coordinator.

Two ways in: the navigation's language switcher (an English browser, 1280 px)
and the browser's own Accept-Language (a Russian phone, 390 px). Each walks
register -> generate -> job page -> history -> profile -> contribute and checks
``<html lang>``, Russian plural forms and a localised date. Screenshots of the
Russian pages go to artifacts/screenshots/ru-*.png.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import axe, launch, needs_chromium, shot, watch_errors
from tests.support.coordinators import PASSWORD, make_settings, running_coordinator

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(240), needs_chromium]

# "2 дек. 2026 г., 16:44 UTC" (May is "мая", without the dot).
RU_DATE = re.compile(
    r"\d{1,2}\s(янв\.|февр\.|мар\.|апр\.|мая|июн\.|июл\.|авг\.|сент\.|окт\.|нояб\.|дек\.)"
    r"\s\d{4}\sг\.,\s\d{2}:\d{2}(\sUTC)?"
)  # Babel (and the browser's Intl) separate some parts with no-break spaces
# The page writes UTC; app.js shows it in the viewer's time zone, UTC staying on hover.
RU_UTC_TITLE = re.compile(RU_DATE.pattern.removesuffix("(\\sUTC)?") + "\\sUTC")
PROMPT = "a red chair"


async def expect_russian(page: Any) -> None:
    from playwright.async_api import expect

    await expect(page.locator("html")).to_have_attribute("lang", "ru")


async def fits(page: Any, width: int) -> None:
    """Nothing on the page is wider than the window (Russian text is longer)."""
    overflow = await page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{page.url} is {overflow}px wider than the {width}px window"


async def post_jobs(page: Any, variants: int) -> None:
    """Queue ``variants`` more jobs from this browser session (a plain form POST)."""
    token = await page.locator("input[name=csrf_token]").first.input_value()
    posted = await page.request.post(
        "/jobs",
        form={
            "csrf_token": token,
            "prompt": "a wooden boat",
            "steps": "4",
            "variants": str(variants),
        },
        max_redirects=0,
    )
    assert posted.status == 303, await posted.text()


async def walk_in_russian(page: Any, username: str, width: int) -> None:
    """Register -> generate -> job -> history -> profile -> contribute, all in Russian."""
    from playwright.async_api import expect

    def name(page_name: str) -> str:
        return f"ru-{page_name}-{width}"

    await page.get_by_role("link", name="Регистрация").first.click()
    await expect(page.get_by_role("heading", name="Создание учётной записи")).to_be_visible()
    await expect_russian(page)
    await page.get_by_label("Имя пользователя").fill(username)
    await page.get_by_label("Пароль", exact=True).fill(PASSWORD)
    await page.get_by_label("Повторите пароль").fill(PASSWORD)
    await shot(page, name("register"))
    await fits(page, width)
    await page.get_by_role("button", name="Регистрация").click()

    # Generate: the hint for a prompt without Latin letters, in Russian.
    await expect(page.get_by_role("heading", name="Создать 3D-модель")).to_be_visible()
    await expect_russian(page)
    hint = page.locator("#prompt-hint")
    await expect(hint).to_be_hidden()
    await page.get_by_label("Описание").fill("красный деревянный стул")
    await expect(hint).to_be_visible()
    await expect(hint).to_contain_text("Модель лучше всего понимает английский")
    await shot(page, name("generate-hint"))
    await fits(page, width)
    await page.get_by_label("Описание").fill(PROMPT)
    await expect(hint).to_be_hidden()
    await page.get_by_label("Шаги").fill("4")
    await page.get_by_role("button", name="Создать", exact=True).click()
    row = page.locator("#jobs-list li").filter(has=page.get_by_role("link", name=PROMPT))
    await expect(row).to_contain_text("в очереди")
    await expect(page.get_by_text("до 2 вариантов")).to_be_visible()
    await shot(page, name("generate"))
    await fits(page, width)

    # The job page: Russian state, queue position and a Russian date.
    await page.get_by_role("link", name=PROMPT).click()
    await page.wait_for_url(re.compile(r"/jobs/[\w-]+$"))
    await expect_russian(page)
    status = page.locator("#job-live")
    await expect(status).to_contain_text("в очереди")
    await expect(status).to_contain_text("Место в очереди: 1")
    submitted = page.locator("dd time").first
    await expect(submitted).to_have_text(RU_DATE)
    await expect(submitted).to_have_attribute("title", RU_UTC_TITLE)
    await expect(page.get_by_text("(только что)")).to_be_visible()
    await shot(page, name("job"))
    await fits(page, width)
    await axe(page, f"job in Russian at {width}")

    # History: plural forms as the list grows (1 модель, 2 модели, 5 моделей).
    await page.get_by_role("link", name="История").click()
    await expect_russian(page)
    counter = page.locator("#history-results > p[role=status]")
    await expect(counter).to_have_text("1 модель.")
    await expect(page.locator("#history-results time").first).to_have_text(RU_DATE)
    await post_jobs(page, 1)
    await page.reload()
    await expect(counter).to_have_text("2 модели.")
    await post_jobs(page, 2)
    await post_jobs(page, 1)
    await page.reload()
    await expect(counter).to_have_text("5 моделей.")
    await shot(page, name("history"))
    await fits(page, width)

    # Profile: Russian date, the saved language, Russian plurals in the limits.
    await page.goto("/profile")
    await expect(page.get_by_role("heading", name="Ваша учётная запись")).to_be_visible()
    await expect_russian(page)
    await expect(page.locator("dd time").first).to_have_text(RU_DATE)
    await expect(page.get_by_text("до 64 шагов, до 2 вариантов")).to_be_visible()
    await expect(page.get_by_text("5 из 20 моделей")).to_be_visible()
    await shot(page, name("profile"))
    await fits(page, width)
    await axe(page, f"profile in Russian at {width}")

    # Contribute: enroll an agent, in Russian.
    await page.get_by_role("link", name="Поделиться GPU").click()
    await expect(page.get_by_role("heading", name="Поделитесь своей видеокартой")).to_be_visible()
    await expect_russian(page)
    await page.get_by_label("Имя (для вас").fill("домашний ПК")
    await page.get_by_role("button", name="Создать токен").click()
    await expect(page.get_by_role("heading", name="Агент «домашний ПК» подключён")).to_be_visible()
    await expect(page.locator("#my-agents")).to_contain_text("ждёт одобрения")
    await shot(page, name("contribute"))
    await fits(page, width)


async def test_i18n_russian_through_the_switcher(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright, expect

    errors: list[str] = []
    settings = make_settings(tmp_path / "data")
    async with running_coordinator(settings) as coord, async_playwright() as pw:
        browser = await launch(pw)
        try:
            context = await browser.new_context(
                base_url=coord.http, locale="en-US", viewport={"width": 1280, "height": 900}
            )
            page = await context.new_page()
            watch_errors(page, errors)
            await page.goto("/")
            await expect(page.locator("html")).to_have_attribute("lang", "en")
            await page.get_by_role("button", name="Русский").click()
            await expect_russian(page)
            await expect(
                page.get_by_role("heading", name="Превратите фразу в 3D-модель")
            ).to_be_visible()
            await shot(page, "ru-landing-1280")

            await walk_in_russian(page, "olga", 1280)

            # The choice survives logging out and in (the account saved it).
            await page.get_by_role("button", name="Выйти").click()
            await expect_russian(page)
            await page.get_by_role("link", name="Войти").first.click()
            await page.get_by_label("Имя пользователя").fill("olga")
            await page.get_by_label("Пароль").fill(PASSWORD)
            await page.get_by_role("button", name="Войти").click()
            await expect(page.get_by_role("heading", name="Создать 3D-модель")).to_be_visible()
            await expect_russian(page)
            # And back to English with the same switcher.
            await page.get_by_role("button", name="English").click()
            await expect(page.locator("html")).to_have_attribute("lang", "en")
            await expect(page.get_by_role("heading", name="Generate a 3D model")).to_be_visible()
        finally:
            await browser.close()
    assert not errors, errors


async def test_i18n_russian_from_accept_language_on_a_phone(tmp_path: Path) -> None:
    from playwright.async_api import async_playwright, expect

    errors: list[str] = []
    settings = make_settings(tmp_path / "data")
    async with running_coordinator(settings) as coord, async_playwright() as pw:
        browser = await launch(pw)
        try:
            context = await browser.new_context(
                base_url=coord.http,
                locale="ru-RU",
                viewport={"width": 390, "height": 844},
                is_mobile=True,
                has_touch=True,
            )
            page = await context.new_page()
            watch_errors(page, errors)
            await page.goto("/")
            await expect_russian(page)
            await expect(page.get_by_role("button", name="English")).to_be_visible()
            await shot(page, "ru-landing-390")
            await walk_in_russian(page, "pavel", 390)
        finally:
            await browser.close()
    assert not errors, errors
