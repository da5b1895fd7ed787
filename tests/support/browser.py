"""Shared pieces of the browser tests: launching Debian's Chromium, axe-core, screenshots,
and catching script errors and Content-Security-Policy violations.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.coordinators import ROOT

CHROMIUM = Path("/usr/bin/chromium")
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
SHOTS = ROOT / "artifacts" / "screenshots"
# Playwright's own browser download is impossible here (offline), so it drives Debian's.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's /usr/bin/chromium"
)


async def launch(pw: Any) -> Any:
    """Headless Debian Chromium through Playwright."""
    return await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """Playwright and a launched browser, both closed on exit."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await launch(pw)
        try:
            yield browser
        finally:
            await browser.close()


async def axe(page: Any, name: str) -> None:
    """No serious or critical axe-core violations on the current page."""
    # Evaluated over the DevTools protocol, so the page's CSP (script-src 'self') stays on.
    if not await page.evaluate("() => typeof window.axe !== 'undefined'"):
        await page.evaluate(AXE.read_text() + "\n;undefined")
    result = await page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".map(v => ({id: v.id, impact: v.impact, help: v.help,"
        " nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}))"
    )
    bad = [v for v in result if v["impact"] in ("serious", "critical")]
    assert not bad, f"axe on {name}: {json.dumps(bad, indent=1)}"


def report(text: str, errors: list[str]) -> None:
    """Collect script errors and Content-Security-Policy violations."""
    errors.append(text)


def watch_errors(page: Any, errors: list[str]) -> None:
    """Record the page's uncaught script errors and CSP violations into ``errors``."""
    page.on("pageerror", lambda exc: report(str(exc), errors))
    page.on(
        "console",
        lambda msg: (
            report(msg.text, errors)
            if msg.type == "error" and "Content Security Policy" in msg.text
            else None
        ),
    )


async def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def log_in(page: Any, username: str, password: str) -> None:
    """Fill and send the login form (the caller checks where it lands)."""
    await page.goto("/login")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Log in").click()
