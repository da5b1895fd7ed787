"""Suite-wide set-up: the test-process shortcuts of tests/support/speedups.py, the
heavy-tests-first order of tests/support/ordering.py, and the PostgreSQL fixtures."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from coordinator.store.migrations import upgrade_sync
from tests.support.ordering import order_heavy_first
from tests.support.postgres import copy_database, throwaway_postgres
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


@pytest.fixture(scope="session")
def migrated_postgres() -> Iterator[str]:
    """One throwaway PostgreSQL cluster per test process (started when a test first needs
    it); its database, migrated to head with the real migrations, is the template of each
    test's own database."""
    with throwaway_postgres() as url:
        upgrade_sync(url)
        yield url


@pytest.fixture
def postgres_url(migrated_postgres: str) -> str:
    """A database of this test's own on the shared cluster, copied from the migrated one."""
    return copy_database(migrated_postgres, f"test_{secrets.token_hex(6)}")
