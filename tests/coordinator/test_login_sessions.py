"""Login sessions against a real server: what a kept copy of a cookie can still do.

Each test plays the attacker who copied a session cookie (from a shared
computer, a proxy log, a backup) and then waits for the account's owner to log
out, change the password, be banned or delete the account.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from coordinator.cli.admin_cli import create_user, reset_password
from coordinator.services import login_sessions
from coordinator.store import models
from tests.support.coordinators import PASSWORD, TWO_A_DAY, make_settings, running_coordinator
from tests.support.sockclient import NEW_KEY, Browser, sent_to_login

NEW_PASSWORD = "another long passphrase 2"


async def test_login_sessions_deleted_account_passes_nothing_to_the_next(tmp_path: Path) -> None:
    tiers = tmp_path / "tiers.toml"
    tiers.write_text(TWO_A_DAY)
    settings = make_settings(tmp_path / "data", tiers_file=tiers)
    await create_user(settings, "root", PASSWORD, None, is_admin=True)
    await create_user(settings, "carol", PASSWORD, None, is_admin=False)
    await create_user(settings, "dave", PASSWORD, None, is_admin=True)
    async with (
        running_coordinator(settings) as coord,
        Browser(coord) as dave,
        Browser(coord) as root,
        Browser(coord) as mallory,
    ):
        assert (await dave.login("dave")).status_code == 303
        carol_id = 2
        ban = await dave.post(f"/admin/users/{carol_id}/ban", page="/admin/users")
        assert ban.status_code == 303
        for _ in range(2):  # dave uses up a day's quota
            submitted = await dave.post("/jobs", {"prompt": "a chair", "steps": "8"})
            assert submitted.status_code == 303, submitted.text
        token = await dave.csrf("/profile")
        kept = dave.cookies()
        deleted = await dave.post("/profile/delete", {"password": PASSWORD}, page="/profile")
        assert deleted.status_code == 303

        await mallory.register("mallory")
        async with Browser(coord, cookies=kept) as ghost:
            minted = await ghost.http.post(
                "/profile/api-keys", data={"csrf_token": token, "name": "backdoor"}
            )
            assert sent_to_login(minted), minted.status_code
            assert sent_to_login(await ghost.get("/profile"))
        page = (await mallory.get("/profile")).text
        assert "mallory" in page and "0 of 2 models" in page
        # The newcomer's quota is their own, not what dave left behind.
        submitted = await mallory.post("/jobs", {"prompt": "a lamp", "steps": "8"})
        assert submitted.status_code == 303, submitted.text

        # dave's ban of carol stays dave's deed: nobody else's name goes on it.
        assert (await root.login("root")).status_code == 303
        audit = (await root.get("/admin/audit?action=user.ban")).text
        assert "deleted user" in audit and "mallory" not in audit
        async with coord.farm.sessions() as db:
            mallory_id = await db.scalar(
                select(models.User.id).where(models.User.username == "mallory")
            )
            assert mallory_id == 4  # never dave's 3
            left = await db.scalar(
                select(func.count())
                .select_from(models.LoginSession)
                .where(models.LoginSession.user_id == 3)
            )
            assert left == 0


async def test_login_sessions_logout_ends_every_copy_of_the_cookie(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with running_coordinator(settings) as coord, Browser(coord) as alice:
        await alice.register("alice")
        kept = alice.cookies()
        assert (await alice.post("/logout")).status_code == 303
        async with Browser(coord, cookies=kept) as thief:
            assert sent_to_login(await thief.get("/profile"))
            assert sent_to_login(await thief.get("/history"))
            assert "Log in" in (await thief.get("/")).text


async def test_login_sessions_profile_lists_and_revokes_sessions(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with (
        running_coordinator(settings) as coord,
        Browser(coord, headers={"User-Agent": "laptop-browser"}) as laptop,
        Browser(coord, headers={"User-Agent": "phone-browser"}) as phone,
        Browser(coord, headers={"User-Agent": "cafe-browser"}) as cafe,
    ):
        await laptop.register("alice")
        for browser in (phone, cafe):
            assert (await browser.login("alice")).status_code == 303
        page = await laptop.get("/profile")
        assert page.headers["cache-control"] == "no-store"
        assert all(ua in page.text for ua in ("laptop-browser", "phone-browser", "cafe-browser"))
        async with coord.farm.sessions() as db:
            cafe_id = await db.scalar(
                select(models.LoginSession.id).where(
                    models.LoginSession.user_agent == "cafe-browser"
                )
            )
        assert cafe_id is not None and f"/profile/sessions/{cafe_id}/revoke" in page.text
        revoked = await laptop.post(f"/profile/sessions/{cafe_id}/revoke", page="/profile")
        assert revoked.status_code == 303
        assert sent_to_login(await cafe.get("/profile"))
        assert (await phone.get("/profile")).status_code == 200
        # Someone else's session id is not theirs to end.
        async with Browser(coord) as bob:
            await bob.register("bob")
            async with coord.farm.sessions() as db:
                phone_id = await db.scalar(
                    select(models.LoginSession.id).where(
                        models.LoginSession.user_agent == "phone-browser"
                    )
                )
            stranger = await bob.post(f"/profile/sessions/{phone_id}/revoke", page="/profile")
            assert stranger.status_code == 404
        assert (await phone.get("/profile")).status_code == 200

        everywhere = await phone.post("/logout/everywhere", page="/profile")
        assert sent_to_login(everywhere)
        assert sent_to_login(await laptop.get("/profile"))
        assert sent_to_login(await phone.get("/profile"))


async def test_login_sessions_password_change_ends_others_and_revokes_keys(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path)
    async with (
        running_coordinator(settings) as coord,
        Browser(coord) as alice,
        Browser(coord) as thief,
    ):
        await alice.register("alice")
        assert (await thief.login("alice")).status_code == 303
        created = await thief.post("/profile/api-keys", {"name": "thief's"}, page="/profile")
        assert created.status_code == 201
        assert created.headers["cache-control"] == "no-store"
        match = NEW_KEY.search(created.text)
        assert match
        key = {"Authorization": f"Bearer {match.group(1)}"}
        assert (await thief.http.get("/api/v1/jobs", headers=key)).status_code == 200
        kept = alice.cookies()
        changed = await alice.post(
            "/profile/password",
            {
                "old_password": PASSWORD,
                "new_password": NEW_PASSWORD,
                "new_password2": NEW_PASSWORD,
            },
            page="/profile",
        )
        assert changed.status_code == 200 and "API keys revoked" in changed.text
        assert (await alice.get("/profile")).status_code == 200  # rotated, still in
        assert sent_to_login(await thief.get("/profile"))
        assert (await thief.http.get("/api/v1/jobs", headers=key)).status_code == 401
        async with Browser(coord, cookies=kept) as old_copy:  # even alice's own old cookie
            assert sent_to_login(await old_copy.get("/profile"))


async def test_login_sessions_revoke_all_api_keys(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with running_coordinator(settings) as coord, Browser(coord) as alice:
        await alice.register("alice")
        keys = []
        for name in ("one", "two"):
            created = await alice.post("/profile/api-keys", {"name": name}, page="/profile")
            match = NEW_KEY.search(created.text)
            assert match
            keys.append({"Authorization": f"Bearer {match.group(1)}"})
        assert "Revoke all API keys" in (await alice.get("/profile")).text
        revoked = await alice.post("/profile/api-keys/revoke-all", page="/profile")
        assert revoked.status_code == 303
        for key in keys:
            assert (await alice.http.get("/api/v1/jobs", headers=key)).status_code == 401
        assert "No API keys yet" in (await alice.get("/profile")).text


async def test_login_sessions_ban_and_cli_password_reset_end_sessions(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    await create_user(settings, "root", PASSWORD, None, is_admin=True)
    async with (
        running_coordinator(settings) as coord,
        Browser(coord) as root,
        Browser(coord) as alice,
        Browser(coord) as bob,
    ):
        assert (await root.login("root")).status_code == 303
        await alice.register("alice")
        await bob.register("bob")
        alice_id = 2
        assert (
            await root.post(f"/admin/users/{alice_id}/ban", page="/admin/users")
        ).status_code == 303
        assert sent_to_login(await alice.get("/profile"))
        assert (
            await root.post(f"/admin/users/{alice_id}/unban", page="/admin/users")
        ).status_code == 303
        assert sent_to_login(await alice.get("/profile"))  # unbanning revives no session

        await reset_password(settings, "bob", NEW_PASSWORD)
        assert sent_to_login(await bob.get("/profile"))
        assert (await bob.login("bob", NEW_PASSWORD)).status_code == 303


async def test_login_sessions_expire_when_idle_and_at_the_absolute_limit(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, session_idle_s=600.0, session_max_age_s=3600.0)
    async with running_coordinator(settings) as coord:
        now = [1_000_000.0]
        coord.farm.clock = lambda: now[0]
        async with Browser(coord) as alice:
            await alice.register("alice")
            now[0] += 30
            assert (await alice.get("/profile")).status_code == 200
            async with coord.farm.sessions() as db:
                seen = await db.scalar(select(models.LoginSession.last_seen_at))
            assert seen == 1_000_000.0  # "last seen" is to the minute: no write per request
            for _ in range(6):  # used every 9 minutes: never idle, until the hour is up
                now[0] += 540
                assert (await alice.get("/profile")).status_code == 200
            now[0] += 331  # 30 + 6 x 540 + 331 = 3601 s after the login
            assert sent_to_login(await alice.get("/profile"))
        async with Browser(coord) as bob:
            await bob.register("bob")
            now[0] += 601
            assert sent_to_login(await bob.get("/profile"))
        async with coord.farm.sessions() as db:
            # The refused records are gone, and a login prunes expired ones of anyone.
            count = await db.scalar(select(func.count()).select_from(models.LoginSession))
            assert count == 0


async def test_login_sessions_are_capped_per_user(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, auth_rate_per_minute=1000)
    async with running_coordinator(settings) as coord, Browser(coord) as first:
        await first.register("alice")
        for _ in range(login_sessions.MAX_PER_USER + 5):
            async with Browser(coord) as other:
                assert (await other.login("alice")).status_code == 303
        async with coord.farm.sessions() as db:
            count = await db.scalar(select(func.count()).select_from(models.LoginSession))
        assert count == login_sessions.MAX_PER_USER
        assert sent_to_login(await first.get("/profile"))  # the oldest went first
