"""The coordinator on PostgreSQL (asyncpg): migrations, dispatch, results, restart.

Runs a throwaway PostgreSQL cluster from Debian's packages on 127.0.0.1; skipped
with the reason when the server binaries are not installed.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select

from coordinator.services import moderation
from coordinator.store import models
from coordinator.store.migrations import upgrade_sync
from tests.support.coordinators import (
    PASSWORD,
    api_client,
    make_settings,
    provision,
    running_coordinator,
    start_agent,
    stop_process,
    wait_for,
)
from tests.support.sockclient import Browser, sent_to_login
from tests.support.ui import create_job

pytestmark = pytest.mark.slow

TEMPLATE = "shapefarm_template"
PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_postgres(*argv: str) -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else list(argv)


@dataclass(frozen=True)
class Cluster:
    port: int
    password: str

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://shapefarm:{self.password}@127.0.0.1:{self.port}/{database}"

    def createdb(self, name: str, *options: str) -> None:
        assert PG_BIN is not None
        subprocess.run(
            [str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
             "-U", "shapefarm", *options, name],
            check=True, env={**os.environ, "PGPASSWORD": self.password}, timeout=60,
        )  # fmt: skip


@pytest.fixture(scope="module")
def postgres_cluster() -> Iterator[Cluster]:
    """One throwaway cluster for this module, holding a database migrated to head that
    each test's own database is copied from (CREATE DATABASE ... TEMPLATE)."""
    if PG_BIN is None or not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL server binaries are not installed (apt-get install postgresql)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL")
    root = Path(tempfile.mkdtemp(prefix="shapefarm-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
    port, password = _free_port(), secrets.token_urlsafe(16)
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
        cluster = Cluster(port, password)
        cluster.createdb(TEMPLATE)
        upgrade_sync(cluster.url(TEMPLATE))  # the real migrations, once
        yield cluster
    finally:
        subprocess.run(
            _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"),
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_cluster: Cluster) -> str:
    """A fresh database of its own for each test, already at the head revision."""
    name = f"test_{secrets.token_hex(6)}"
    postgres_cluster.createdb(name, "-T", TEMPLATE)
    return postgres_cluster.url(name)


async def test_postgres_jobs_run_end_to_end_and_survive_restart(
    tmp_path: Path, postgres_url: str
) -> None:
    settings = make_settings(tmp_path / "data", database_url=postgres_url)
    key, token_file = await provision(settings, tmp_path)
    async with running_coordinator(settings) as coord, api_client(coord, key) as client:
        agent = start_agent(coord.ws, token_file, tmp_path / "spool", model="instant")
        try:
            created = (
                await client.post(
                    "/api/v1/jobs",
                    # Seeds past int32: a seed is 0 .. 2**32-1, so the column must be wide.
                    json={"prompt": "a teapot", "steps": 8, "variants": 2, "seed": 4_000_000_000},
                )
            ).json()["jobs"]
            ids = [job["id"] for job in created]

            async def done() -> bool:
                states = [(await client.get(f"/api/v1/jobs/{i}")).json()["state"] for i in ids]
                return all(state == "succeeded" for state in states)

            await wait_for(done, 60, "both variants to succeed on PostgreSQL")
        finally:
            exit_code = stop_process(agent)
        assert exit_code == 0
    # A second coordinator on the same database sees everything the first stored.
    async with running_coordinator(settings) as coord, api_client(coord, key) as client:
        listing = (await client.get("/api/v1/jobs")).json()
        assert listing["total"] == 2
        assert {job["state"] for job in listing["jobs"]} == {"succeeded"}
        glb = await client.get(f"/api/v1/jobs/{ids[0]}/download/glb")
        assert glb.status_code == 200 and glb.content[:4] == b"glTF"


async def test_postgres_sessions_end_and_ids_are_never_reused(
    tmp_path: Path, postgres_url: str
) -> None:
    settings = make_settings(tmp_path / "data", database_url=postgres_url)
    async with running_coordinator(settings) as coord, Browser(coord) as alice:
        await alice.register("alice")
        kept = alice.cookies()
        assert (await alice.post("/logout")).status_code == 303
        async with Browser(coord, cookies=kept) as thief:
            assert sent_to_login(await thief.get("/profile"))
        assert (await alice.login("alice")).status_code == 303
        kept = alice.cookies()
        deleted = await alice.post("/profile/delete", {"password": PASSWORD}, page="/profile")
        assert deleted.status_code == 303
        async with Browser(coord) as bob, Browser(coord, cookies=kept) as ghost:
            await bob.register("bob")
            assert sent_to_login(await ghost.get("/profile"))
        async with coord.farm.sessions() as db:
            ids = list(await db.scalars(select(models.User.id)))
            sessions = await db.scalar(select(func.count()).select_from(models.LoginSession))
        assert ids == [2] and sessions == 1  # bob's id is new; alice's sessions went with her


async def test_postgres_one_use_voucher_redeemed_once_under_concurrency(
    tmp_path: Path, postgres_url: str
) -> None:
    from tests.support.billing import new_voucher, redeem_at_once

    settings = make_settings(
        tmp_path / "data", database_url=postgres_url, auth_rate_per_minute=1000
    )
    async with running_coordinator(settings) as coord:
        answers = await redeem_at_once(coord, await new_voucher(coord, "plus"), 8)
        assert sorted(a.status_code for a in answers) == [200] + [400] * 7
        assert all("used up" in a.text for a in answers if a.status_code == 400)
        async with coord.farm.sessions() as db:
            uses = await db.scalar(select(models.Voucher.uses))
            rows = await db.scalar(select(func.count()).select_from(models.VoucherRedemption))
        assert (uses, rows) == (1, 1)


async def test_postgres_search_folds_cyrillic_case(tmp_path: Path, postgres_url: str) -> None:
    settings = make_settings(tmp_path / "data", database_url=postgres_url)
    key, _ = await provision(settings, tmp_path)
    async with running_coordinator(settings) as coord, api_client(coord, key) as client:
        for prompt in ("красный стул", "a blue table"):
            made = await client.post("/api/v1/jobs", json={"prompt": prompt, "steps": 8})
            assert made.status_code == 201, made.text
        found = (await client.get("/api/v1/jobs", params={"q": "СТУЛ"})).json()
        assert [job["prompt"] for job in found["jobs"]] == ["красный стул"]
        found = (await client.get("/api/v1/jobs", params={"q": "Красный СТ"})).json()
        assert found["total"] == 1


async def test_postgres_gallery_likes_reports_and_hiding(tmp_path: Path, postgres_url: str) -> None:
    settings = make_settings(tmp_path / "data", database_url=postgres_url)
    async with running_coordinator(settings) as coord, Browser(coord) as alice:
        await alice.register("alice")
        job = await create_job(coord.farm, 1, "Красный СТУЛ", public=True)
        async with Browser(coord) as bob:
            await bob.register("bob")
            for expected in ("1", "0", "1"):  # a toggle, once per user
                liked = await bob.post(f"/jobs/{job}/like", page=f"/jobs/{job}")
                assert liked.status_code == 303
                page = (await bob.get(f"/jobs/{job}")).text
                assert f'<span class="like-count">{expected}</span>' in page
            reported = await bob.post(
                f"/jobs/{job}/report", {"reason": "spam"}, page=f"/jobs/{job}"
            )
            assert reported.status_code == 303
        explore = (await alice.get("/explore?q=стул&order=liked")).text
        assert f'id="card-{job}"' in explore
        async with coord.farm.sessions() as db:
            await moderation.set_hidden(
                coord.farm, db, await db.get(models.User, 1), await db.get(models.Job, job), True
            )
            opened = await db.scalar(
                select(func.count())
                .select_from(models.Report)
                .where(models.Report.resolved_at.is_(None))
            )
        assert opened == 0
        async with Browser(coord) as visitor:
            assert f'id="card-{job}"' not in (await visitor.get("/explore")).text
