"""Suite-wide set-up: the test-process shortcuts of tests/support/speedups.py."""

from __future__ import annotations

import pytest

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
