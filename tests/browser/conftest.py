"""The browser tests share one event loop per test process and, in it, one Chromium
(each test still gets fresh browser contexts: see tests/support/browser.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.support.browser import one_chromium_per_process

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    shared_loop = pytest.mark.asyncio(loop_scope="session")
    for item in items:
        if item.path.is_relative_to(HERE) and item.get_closest_marker("asyncio") is not None:
            item.add_marker(shared_loop, append=False)


@pytest_asyncio.fixture(scope="session", loop_scope="session", autouse=True)
async def one_chromium() -> AsyncIterator[None]:
    async with one_chromium_per_process():
        yield
