"""A throwaway PostgreSQL cluster on 127.0.0.1 for tests (Debian's server packages).

``throwaway_postgres()`` skips the test with the reason when the server binaries
are not installed. The cluster's only role, ``shapefarm``, is its superuser (tests
use that to cut connections with ``pg_terminate_backend``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.support.procs import free_port

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)


def _as_postgres(*argv: str) -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else list(argv)


def asyncpg_dsn(url: str) -> str:
    """The plain ``postgresql://`` DSN asyncpg takes, from the SQLAlchemy URL."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str]:
    """Start a cluster with a database ``shapefarm``; yields its SQLAlchemy URL."""
    if PG_BIN is None or not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL server binaries are not installed (apt-get install postgresql)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL")
    # Not under pytest's tmp dir: that is private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="shapefarm-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
    port, password = free_port(), secrets.token_urlsafe(16)
    pwfile = root / "pw"
    pwfile.write_text(password)
    if os.geteuid() == 0:
        shutil.chown(pwfile, "postgres")
    subprocess.run(
        _as_postgres(
            str(PG_BIN / "initdb"),
            "-D",
            str(data),
            "-U",
            "shapefarm",
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "-E",
            "UTF8",
        ),
        check=True,
        capture_output=True,
        timeout=120,
    )
    subprocess.run(
        _as_postgres(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(data),
            "-w",
            "-t",
            "60",
            "-l",
            str(root / "log"),
            "-o",
            f"-p {port} -k {sock} -c listen_addresses=127.0.0.1",
            "start",
        ),
        check=True,
        capture_output=True,
        timeout=90,
    )
    try:
        env = {**os.environ, "PGPASSWORD": password}
        subprocess.run(
            [
                str(PG_BIN / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "shapefarm",
                "shapefarm",
            ],
            check=True,
            env=env,
            timeout=60,
        )
        yield f"postgresql+asyncpg://shapefarm:{password}@127.0.0.1:{port}/shapefarm"
    finally:
        subprocess.run(
            _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"),
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)


def copy_database(url: str, name: str) -> str:
    """Create database ``name`` as a copy of the database ``url`` names (CREATE DATABASE
    ... TEMPLATE: nobody may be connected to that one meanwhile); returns its URL."""
    assert PG_BIN is not None
    parsed = make_url(url)
    assert parsed.database and parsed.password is not None and parsed.username
    subprocess.run(
        [str(PG_BIN / "createdb"), "-h", str(parsed.host), "-p", str(parsed.port),
         "-U", parsed.username, "-T", parsed.database, name],
        check=True, env={**os.environ, "PGPASSWORD": parsed.password}, timeout=60,
    )  # fmt: skip
    return parsed.set(database=name).render_as_string(hide_password=False)
