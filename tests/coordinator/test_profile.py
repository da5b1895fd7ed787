from __future__ import annotations

from pathlib import Path

from coordinator.store import models
from scheduler.lifecycle import JobState
from tests.support.coordinators import PASSWORD
from tests.support.ui import (
    api_key,
    farm,
    job_exists,
    make_job,
    password_ok,
    run,
    user_id,
)
from tests.support.webclient import app_client, csrf, login, register

NEW_PASSWORD = "another long passphrase 2"


def test_profile_shows_account_tier_and_usage(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        for _ in range(3):
            make_job(client, "alice")
        page = client.get("/profile")
        assert page.status_code == 200
        assert "alice" in page.text
        assert "<strong>Free</strong>" in page.text
        assert "3 of 20 models" in page.text
        assert "up to 64 steps, up to 2 variants" in page.text


def test_profile_shows_expired_tier_as_free(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        uid = user_id(client, "alice")

        async def expire() -> None:
            async with farm(client).sessions() as db:
                user = await db.get(models.User, uid)
                assert user is not None
                user.tier, user.tier_expires_at = "pro", 1.0
                await db.commit()

        run(client, expire)
        page = client.get("/profile").text
        assert "<strong>Free</strong>" in page and "your Pro plan expired" in page


def test_profile_password_change_revokes_other_sessions(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        other_session = dict(client.cookies)
        client.cookies.clear()
        login(client, "alice")  # a second, independent session
        response = client.post(
            "/profile/password",
            data={
                "csrf_token": csrf(client, "/profile"),
                "old_password": PASSWORD,
                "new_password": NEW_PASSWORD,
                "new_password2": NEW_PASSWORD,
            },
        )
        assert response.status_code == 200
        assert "Password changed" in response.text
        assert password_ok(client, "alice", NEW_PASSWORD)
        # This session was renewed; the other one is dead.
        assert client.get("/profile").status_code == 200
        client.cookies.clear()
        client.cookies.update(other_session)
        assert client.get("/profile").status_code == 303


def test_profile_password_change_refusals(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        token = csrf(client, "/profile")
        for old, new, again, message in (
            ("wrong password!!", NEW_PASSWORD, NEW_PASSWORD, "current password is wrong"),
            (PASSWORD, "short", "short", "at least 10"),
            (PASSWORD, NEW_PASSWORD, NEW_PASSWORD + "x", "differ"),
        ):
            response = client.post(
                "/profile/password",
                data={
                    "csrf_token": token,
                    "old_password": old,
                    "new_password": new,
                    "new_password2": again,
                },
            )
            assert response.status_code == 400, message
            assert message in response.text
        assert password_ok(client, "alice", PASSWORD)


def test_profile_api_key_shown_once_listed_and_revoked(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        secret = api_key(client)
        assert secret.startswith("sfk.")
        api = {"Authorization": f"Bearer {secret}"}
        assert client.get("/api/v1/jobs", headers=api).status_code == 200
        page = client.get("/profile").text
        assert secret not in page  # shown once only
        key_id = secret.split(".")[1]
        assert f'id="key-{key_id}"' in page
        revoked = client.post(
            f"/profile/api-keys/{key_id}/revoke", data={"csrf_token": csrf(client, "/profile")}
        )
        assert revoked.status_code == 303
        assert f'id="key-{key_id}"' not in client.get("/profile").text
        assert client.get("/api/v1/jobs", headers=api).status_code == 401


def test_profile_api_key_name_too_long(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        response = client.post(
            "/profile/api-keys",
            data={
                "csrf_token": csrf(client, "/profile"),
                "name": "k" * 65,
            },
        )
        assert response.status_code == 400
        assert "at most 64 characters" in response.text


def test_profile_delete_account_removes_everything(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "bob")
        bobs = make_job(client, "bob")
        register(client, "alice")
        api_key(client)
        done = make_job(client, "alice")
        waiting = make_job(client, "alice", state=JobState.QUEUED)
        store = farm(client).store
        assert store.exists(done, "glb") and store.exists(done, "png")
        wrong = client.post(
            "/profile/delete",
            data={
                "csrf_token": csrf(client, "/profile"),
                "password": "not my password",
            },
        )
        assert wrong.status_code == 400 and "password is wrong" in wrong.text
        assert job_exists(client, done)
        response = client.post(
            "/profile/delete",
            data={
                "csrf_token": csrf(client, "/profile"),
                "password": PASSWORD,
            },
        )
        assert response.status_code == 303
        assert not job_exists(client, done) and not job_exists(client, waiting)
        assert not store.exists(done, "glb") and not store.exists(done, "png")
        assert waiting not in farm(client).queue
        assert job_exists(client, bobs) and store.exists(bobs, "glb")
        assert client.get("/profile").status_code == 303  # logged out

        async def leftovers() -> list[int]:
            async with farm(client).sessions() as db:
                from sqlalchemy import func, select

                return [
                    int(await db.scalar(select(func.count()).select_from(table)) or 0)
                    for table in (models.User, models.ApiKey)
                ]

        assert run(client, leftovers) == [1, 0]  # bob remains, alice's key is gone
        # The name is free again.
        register(client, "alice")


def test_plans_page_shows_tiers_and_highlights_own(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        anonymous = client.get("/plans")
        assert anonymous.status_code == 200
        for name in ("Free", "Plus", "Pro"):
            assert f">{name}</h2>" in anonymous.text
        assert ">Admin</h2>" not in anonymous.text
        assert "Your plan" not in anonymous.text
        register(client, "alice")
        page = client.get("/plans").text
        assert 'class="plan current" aria-labelledby="plan-free"' in page
        assert page.count("Your plan") == 1
