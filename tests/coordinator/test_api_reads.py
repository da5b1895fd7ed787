"""The hot API routes: cached keys that every credential change drops, one read per request."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import delete, event
from starlette.testclient import TestClient

from coordinator.store import models
from coordinator.store.keycache import TTL_S
from tests.support.coordinators import PASSWORD
from tests.support.ui import (
    api_key,
    farm,
    key_id_of,
    make_admin,
    make_job,
    run,
    user_id,
)
from tests.support.webclient import app_client, csrf, logout, register

NEW_PASSWORD = "another long password 2"


def _get(client: TestClient, key: str, path: str) -> int:
    response = client.get(path, headers={"Authorization": f"Bearer {key}"})
    return response.status_code


def _submit(client: TestClient, key: str, steps: int = 8) -> int:
    body = {"prompt": "a small boat", "steps": steps}
    response = client.post("/api/v1/jobs", json=body, headers={"Authorization": f"Bearer {key}"})
    return response.status_code


def _post(client: TestClient, path: str, **data: str) -> int:
    return client.post(path, data={"csrf_token": csrf(client, "/profile"), **data}).status_code


def _revoke(client: TestClient, key: str) -> None:
    assert _post(client, f"/profile/api-keys/{key_id_of(key)}/revoke") == 303


def _revoke_all(client: TestClient, key: str) -> None:
    assert _post(client, "/profile/api-keys/revoke-all") == 303


def _change_password(client: TestClient, key: str) -> None:
    data = {"old_password": PASSWORD, "new_password": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    assert _post(client, "/profile/password", **data) in (200, 303)


def _ban(client: TestClient, key: str) -> None:
    alice = user_id(client, "alice")
    logout(client)
    register(client, "root")
    make_admin(client, "root")
    assert _post(client, f"/admin/users/{alice}/ban") == 303


def _delete_account(client: TestClient, key: str) -> None:
    assert _post(client, "/profile/delete", password=PASSWORD) == 303


@pytest.mark.parametrize("change", [_revoke, _revoke_all, _change_password, _ban, _delete_account])
def test_api_reads_cached_key_is_refused_right_after_a_credential_change(
    tmp_path: Path, change: Callable[[TestClient, str], None]
) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        key = api_key(client)
        job = make_job(client, "alice")
        for _ in range(3):  # cached after the first
            assert _get(client, key, f"/api/v1/jobs/{job}") == 200
        assert len(farm(client).keys) == 1
        assert _submit(client, key) == 201
        change(client, key)
        # A suspended account is told so (403); any other dead key is a 401.
        refused = 403 if change is _ban else 401
        assert _get(client, key, f"/api/v1/jobs/{job}") == refused
        assert _get(client, key, f"/api/v1/jobs/{job}/download/glb") == refused
        assert _get(client, key, "/api/v1/jobs") == refused
        assert _submit(client, key) == refused


def test_api_reads_change_from_another_process_is_seen_within_the_ttl(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        key = api_key(client)
        job = make_job(client, "alice")
        assert _get(client, key, f"/api/v1/jobs/{job}") == 200
        the_farm = farm(client)
        engine = the_farm.sessions.kw["bind"]

        async def revoke_elsewhere() -> None:  # like the admin CLI: not this app's sessions
            async with engine.begin() as conn:
                await conn.execute(delete(models.ApiKey))

        run(client, revoke_elsewhere)
        assert _get(client, key, f"/api/v1/jobs/{job}") == 200  # still cached
        now = the_farm.clock()
        the_farm.clock = lambda: now + TTL_S
        assert _get(client, key, f"/api/v1/jobs/{job}") == 401


@contextmanager
def _statements(client: TestClient) -> Iterator[list[str]]:
    """Statements run through the app's async engine (ORM sessions) meanwhile."""
    seen: list[str] = []
    engine = farm(client).sessions.kw["bind"].sync_engine

    def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_api_reads_get_and_download_make_one_read_and_no_orm_session(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        key = api_key(client)
        job = make_job(client, "alice")
        reader = farm(client).reader
        with _statements(client) as orm:
            for path in (f"/api/v1/jobs/{job}", f"/api/v1/jobs/{job}/download/glb") * 2:
                before = reader.units
                assert _get(client, key, path) == 200
                assert reader.units - before == 1, path  # cold cache: key and job together
        assert orm == []
        answer = client.get(f"/api/v1/jobs/{job}", headers={"Authorization": f"Bearer {key}"})
        assert answer.json()["result"]["faces"] == 12
        assert answer.json()["state"] == "succeeded"


def test_api_reads_other_users_job_and_bad_keys(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        alice_key = api_key(client)
        logout(client)
        register(client, "bob")  # and logged in
        bob_key = api_key(client)
        job = make_job(client, "alice")
        assert _get(client, bob_key, f"/api/v1/jobs/{job}") == 404
        assert _get(client, bob_key, f"/api/v1/jobs/{job}/download/glb") == 404
        assert _get(client, alice_key, f"/api/v1/jobs/{job}") == 200
        assert _get(client, alice_key, "/api/v1/jobs/" + "x" * 5000) == 404
        wrong = alice_key[:-2] + ("AA" if not alice_key.endswith("AA") else "BB")
        for bad in (wrong, "sfk.nope.x", "garbage", ""):
            assert _get(client, bad, f"/api/v1/jobs/{job}") == 401
        make_admin(client, "bob")
        # Any change of a users row drops the cache: bob, an admin now, sees alice's job.
        assert _get(client, bob_key, f"/api/v1/jobs/{job}") == 200


def test_api_reads_submission_reads_the_owner_once_and_opens_no_orm_session(
    tmp_path: Path,
) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        key = api_key(client)
        make_job(client, "alice")  # the day's usage is in memory from here on
        reader = farm(client).reader
        job = make_job(client, "alice")
        assert _get(client, key, f"/api/v1/jobs/{job}") == 200  # the key is cached from here on
        with _statements(client) as orm:
            reads = []
            for _ in range(3):
                before = reader.units
                assert _submit(client, key) == 201
                reads.append(reader.units - before)
        assert orm == []
        # The owner with its subscription once, then kept with the cached key.
        assert reads == [1, 0, 0]


def test_api_reads_submission_runs_under_the_owners_subscription_tier(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        key = api_key(client)
        alice = user_id(client, "alice")
        assert _submit(client, key, steps=200) == 422  # over the free tier's 64 steps
        the_farm = farm(client)

        async def subscribe() -> None:
            async with the_farm.sessions() as db:
                now = the_farm.clock()
                db.add(
                    models.Subscription(
                        user_id=alice, tier="pro", status="active",
                        current_period_end=now + 86400, created_at=now, updated_at=now,
                    )
                )  # fmt: skip
                await db.commit()

        run(client, subscribe)
        assert _submit(client, key, steps=200) == 201  # pro allows 256
        assert _submit(client, key, steps=200) == 201  # the owner as kept with the key

        async def cancel() -> None:
            async with the_farm.sessions() as db:
                subscription = await db.get(models.Subscription, alice)
                assert subscription is not None
                subscription.status = "canceled"
                subscription.current_period_end = the_farm.clock() - 30 * 86400
                await db.commit()

        run(client, cancel)
        assert _submit(client, key, steps=200) == 422  # the plan ended: the free tier again


def test_api_routes_skip_the_cookie_session_but_keep_headers_and_the_body_limit(
    tmp_path: Path,
) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")  # logged in: the browser holds a session cookie
        assert client.cookies.get("shapefarm_session")
        # The cookie alone does not authenticate an API call, whatever it holds.
        answer = client.get("/api/v1/jobs", headers={"Accept-Language": "ru"})
        assert answer.status_code == 401
        assert answer.json()["error"]["message"].startswith("Send an API key")  # English
        assert "set-cookie" not in answer.headers
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
        key = api_key(client)
        huge = {"prompt": "x" * (70 * 1024)}  # over the limit of bodies without an upload
        auth = {"Authorization": f"Bearer {key}"}
        answer = client.post("/api/v1/jobs/nope/visibility", json=huge, headers=auth)
        assert answer.status_code == 413
        # Submissions may carry an image: their own, larger limit still holds.
        huge = {"prompt": "x" * (15 * 1024 * 1024)}
        assert client.post("/api/v1/jobs", json=huge, headers=auth).status_code == 413
        # Pages still have their session: the profile shows the logged-in user.
        assert client.get("/profile").status_code == 200
