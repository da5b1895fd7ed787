"""Two coordinator processes on one PostgreSQL share their login limits.

With SQLite each process counts in memory; on PostgreSQL the per-address rate limit
and the per-account failed-login throttle are rows both replicas update, so
spreading attempts over replicas behind a load balancer gains an attacker nothing.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from coordinator.cli.admin_cli import create_user
from coordinator.services.shared_limits import SharedLoginThrottle, SharedRateLimiter
from coordinator.store.db import make_engine
from coordinator.store.migrations import upgrade
from tests.support.coordinators import CSRF_FIELD, PASSWORD, make_settings
from tests.support.procs import CoordinatorProcess, coordinator_env, free_port

pytestmark = pytest.mark.slow

RATE = 10  # login attempts per client address and minute


@pytest.fixture
async def replicas(tmp_path: Path, postgres_url: str) -> AsyncIterator[list[CoordinatorProcess]]:
    await create_user(
        make_settings(tmp_path / "admin", database_url=postgres_url),
        "alice",
        PASSWORD,
        None,
        is_admin=False,
    )
    env = coordinator_env(
        database_url=postgres_url,
        secret_key=secrets.token_urlsafe(32),  # the same on every replica
        auth_rate_per_minute=RATE,
        trusted_proxies="127.0.0.1",  # the test plays nginx: X-Forwarded-For names the client
    )
    procs = [
        CoordinatorProcess(tmp_path / f"r{i}", free_port(), env, tmp_path / f"r{i}.log")
        for i in range(2)
    ]
    try:
        await asyncio.gather(*(proc.start() for proc in procs))
        yield procs
    finally:
        for proc in procs:
            proc.stop()


async def _form(client: httpx.AsyncClient) -> str:
    token = CSRF_FIELD.search((await client.get("/login")).text)
    assert token
    return token.group(1)


async def _login(
    client: httpx.AsyncClient, csrf: str, username: str, password: str
) -> httpx.Response:
    return await client.post(
        "/login", data={"csrf_token": csrf, "username": username, "password": password}
    )


async def test_login_limits_count_across_replicas(replicas: list[CoordinatorProcess]) -> None:
    # Failed logins for one account, alternating between the replicas: the throttle lets
    # 5 through, then each further try waits 1, 2, 4 ... s after the last failure and is
    # refused unchecked. Per-process counters would have seen 4 each and checked all 8.
    clients = [
        httpx.AsyncClient(base_url=proc.http, timeout=30, headers={"X-Forwarded-For": "10.0.0.1"})
        for proc in replicas
    ]
    try:
        forms = [await _form(client) for client in clients]
        answers: list[httpx.Response] = []
        for _ in range(4):
            for client, csrf in zip(clients, forms, strict=True):
                answers.append(await _login(client, csrf, "alice", "wrong password!"))
        statuses = [answer.status_code for answer in answers]
        assert statuses[:5] == [400] * 5, statuses
        # At most one more checked, should a try come a whole second after the last failure.
        assert statuses.count(429) >= 2, statuses
        assert all(
            "Too many failed logins for this account" in answer.text
            for answer in answers
            if answer.status_code == 429
        )
    finally:
        for client in clients:
            await client.aclose()

    # Another address hammers both replicas at once: one limit of RATE a minute in all
    # (one more if the minute turns meanwhile: the previous window's weight drops).
    clients = [
        httpx.AsyncClient(base_url=proc.http, timeout=30, headers={"X-Forwarded-For": "10.0.0.2"})
        for proc in replicas
    ]
    try:
        forms = [await _form(client) for client in clients]
        attempts = [
            _login(client, csrf, f"nobody{i}", "wrong password!")
            for i in range(12)
            for client, csrf in zip(clients, forms, strict=True)
        ]
        statuses = [response.status_code for response in await asyncio.gather(*attempts)]
    finally:
        for client in clients:
            await client.aclose()
    assert set(statuses) <= {400, 429}
    assert RATE <= statuses.count(400) <= RATE + 1, statuses


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_shared_window_and_throttle_follow_the_clock(postgres_url: str) -> None:
    settings = make_settings(Path("unused"), database_url=postgres_url)
    await upgrade(settings.db_url)
    engine = make_engine(settings.db_url)
    try:
        clock = Clock(6000.0)  # the start of a window (100 * 60 s)
        limiter = SharedRateLimiter(engine, "t", limit=3, window_s=60.0, clock=clock)
        other = SharedRateLimiter(engine, "u", limit=1, window_s=60.0, clock=clock)
        assert [await limiter.hit("k") for _ in range(4)] == [True, True, True, False]
        assert await limiter.hit("another key") and await other.hit("k")  # separate counts
        clock.now += 60.0  # a new window, but all of the last one still counts
        assert not await limiter.hit("k")
        clock.now += 30.0  # half of it: 3 * 0.5 -> 1 counts, so 2 more
        assert [await limiter.hit("k") for _ in range(3)] == [True, True, False]
        clock.now += 300.0
        assert await limiter.hit("k")

        throttle = SharedLoginThrottle(engine, clock=clock)
        for _ in range(5):
            assert await throttle.wait("alice") == 0
            await throttle.fail("alice")
        assert await throttle.wait("alice") == 1.0  # 2 ** (5 - 5) after the last failure
        assert await throttle.wait("ALICE-elsewhere") == 0
        clock.now += 1.0
        await throttle.fail("alice")
        assert await throttle.wait("alice") == 2.0
        clock.now += 901.0  # a quiet window: forgotten
        assert await throttle.wait("alice") == 0
        await throttle.fail("alice")
        assert await throttle.wait("alice") == 0  # one failure since: no delay
        for _ in range(100):
            await throttle.fail("bob")
        assert await throttle.wait("bob") == 300.0  # capped
        await throttle.clear("bob")
        assert await throttle.wait("bob") == 0
    finally:
        await engine.dispose()
