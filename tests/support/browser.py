"""Shared pieces of the browser tests: launching Debian's Chromium, axe-core, screenshots,
and catching script errors and Content-Security-Policy violations.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
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


@dataclass
class _Shared:
    """The one Chromium of this test process's browser tests, in their shared event loop."""

    loop: asyncio.AbstractEventLoop
    playwright: Any = None
    browser: Any = None


_shared: _Shared | None = None


@contextlib.asynccontextmanager
async def one_chromium_per_process() -> AsyncIterator[None]:
    """Let chromium() keep one browser for every test in this loop (tests/browser/conftest.py
    runs the browser tests in one session loop); the browser is launched on first use and
    closed here."""
    global _shared
    _shared = _Shared(asyncio.get_running_loop())
    try:
        yield
    finally:
        held, _shared = _shared, None
        if held.browser is not None:
            await held.browser.close()
        if held.playwright is not None:
            await held.playwright.stop()


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """A launched browser. Inside one_chromium_per_process() it is the process's one browser,
    and every context the caller opened is closed on exit (each test starts with none);
    otherwise Playwright and the browser are started here and closed on exit."""
    from playwright.async_api import async_playwright

    held = _shared
    if held is None or held.loop is not asyncio.get_running_loop():
        async with async_playwright() as pw:
            browser = await launch(pw)
            try:
                yield browser
            finally:
                await browser.close()
        return
    if held.browser is None or not held.browser.is_connected():
        if held.playwright is None:
            held.playwright = await async_playwright().start()
        held.browser = await launch(held.playwright)
    try:
        yield held.browser
    finally:
        for context in list(held.browser.contexts):
            await context.close()


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


# The <model-viewer> on the page has shown its model (its src), or failed to decode it
# (the promise rejects with model-viewer's error detail instead of waiting for ever).
MODEL_LOADED = """async () => {
  const viewer = document.querySelector('model-viewer');
  await customElements.whenDefined('model-viewer');
  if (!viewer.loaded) {
    // A model it cannot decode fires 'error' instead: say so rather than wait forever.
    await new Promise((resolve, reject) => {
      viewer.addEventListener('load', resolve);
      viewer.addEventListener('error', (e) => reject(new Error(JSON.stringify(e.detail))));
    });
  }
  return viewer.src;
}"""
