"""Suite-wide set-up: the test-process shortcuts of tests/support/speedups.py, and the
heavy-tests-first order of tests/support/ordering.py."""

from __future__ import annotations

import pytest

from tests.support.ordering import order_heavy_first
from tests.support.speedups import (
    cheap_password_hashing,
    migrate_from_template,
    shared_default_tls_context,
)


def pytest_configure(config: pytest.Config) -> None:
    # Before any test module is imported, so that names imported from these modules see them.
    cheap_password_hashing()
    migrate_from_template()
    shared_default_tls_context()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    order_heavy_first(items)
