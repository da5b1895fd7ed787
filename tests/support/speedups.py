"""Test-process shortcuts that keep behaviour and cut CPU time (installed by tests/conftest.py).

- Password hashing: the production Argon2id costs (64 MiB, 3 passes, 4 lanes) take about half
  a second of both cores per hash on the test machine, and nearly every test registers or logs
  in. The test process hashes with the same algorithm at the lowest costs; the format, the
  verification path and the dummy hash for unknown users stay as they are.
- Migrations: a new SQLite database starts as a copy of one database this process migrated
  once to head with the real Alembic migrations, instead of running every migration again.
  Only the callers that create a working database (the app's lifespan and the admin CLI) take
  the shortcut; tests/coordinator/test_migrations.py calls ``upgrade_sync`` and stays real.
- TLS set-up for plain-HTTP clients: every ``httpx`` client builds a default SSL context,
  parsing the whole CA bundle (about 0.1 s), although the tests talk plain HTTP to 127.0.0.1.
  The test process builds that default context once and shares it (an ``SSLContext`` is made
  to be shared); a client that passes its own ``verify`` or ``cert`` is untouched.

None of these reaches a coordinator started as a subprocess: those run production code.
"""

from __future__ import annotations

import shutil
import sqlite3
import ssl
import tempfile
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from argon2 import PasswordHasher

SQLITE_PREFIX = "sqlite+aiosqlite:///"
HEAD = "head"

# Argon2id at its lowest legal costs: a few microseconds per hash.
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def cheap_password_hashing() -> None:
    from coordinator.services import auth

    auth._hasher = CHEAP_HASHER  # the module's one hasher
    auth._DUMMY_HASH = CHEAP_HASHER.hash("not a real password")


def shared_default_tls_context() -> None:
    from httpx._transports import default  # the name its transports call

    build: Callable[..., ssl.SSLContext] = vars(default)["create_ssl_context"]
    shared: list[ssl.SSLContext] = []

    def create_ssl_context(
        verify: ssl.SSLContext | str | bool = True, cert: Any = None, trust_env: bool = True
    ) -> ssl.SSLContext:
        if verify is not True or cert is not None or not trust_env:
            return build(verify=verify, cert=cert, trust_env=trust_env)
        if not shared:
            shared.append(build())
        return shared[0]

    vars(default)["create_ssl_context"] = create_ssl_context


class MigratedTemplate:
    """One database migrated to head per test process, copied for each new database."""

    def __init__(self, upgrade_sync: Callable[[str, str], None]) -> None:
        self._upgrade_sync = upgrade_sync
        self._lock = threading.Lock()
        self._path: Path | None = None

    def _template(self) -> Path:
        with self._lock:
            if self._path is None:
                folder = Path(tempfile.mkdtemp(prefix="shapefarm-template-"))
                path = folder / "template.db"
                self._upgrade_sync(f"{SQLITE_PREFIX}{path}", HEAD)
                with sqlite3.connect(path) as conn:  # fold the WAL into the file
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._path = path
            return self._path

    def upgrade_sync(self, url: str, revision: str = HEAD) -> None:
        """Copy the template to a SQLite file that does not exist yet; otherwise migrate."""
        if revision == HEAD and url.startswith(SQLITE_PREFIX):
            target = Path(url.removeprefix(SQLITE_PREFIX))
            if not target.exists() and target.parent.is_dir():
                shutil.copyfile(self._template(), target)
                return
        self._upgrade_sync(url, revision)


def migrate_from_template() -> None:
    import asyncio

    from coordinator import app
    from coordinator.cli import admin_cli
    from coordinator.store import migrations

    template = MigratedTemplate(migrations.upgrade_sync)

    async def upgrade(url: str, revision: str = HEAD) -> None:
        await asyncio.to_thread(template.upgrade_sync, url, revision)

    fast: Callable[[str, str], Awaitable[None]] = upgrade
    real = migrations.upgrade
    # The modules that create working databases, each holding its own name for upgrade().
    modules: tuple[ModuleType, ...] = (migrations, app, admin_cli)
    for module in modules:
        assert module.upgrade is real, f"{module.__name__}.upgrade is not the real one"
        vars(module)["upgrade"] = fast
