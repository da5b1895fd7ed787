from __future__ import annotations

from pathlib import Path

from coordinator.cli.admin_cli import create_user
from tests.support.coordinators import PASSWORD, make_settings, running_coordinator
from tests.support.sockclient import Browser
from tests.support.webclient import app_client, csrf, login, logout, register


def test_register_logs_in_and_shows_generate_page(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        page = client.get("/")
        assert page.status_code == 200
        assert "Generate a 3D model" in page.text and "alice" in page.text


def test_session_cookie_is_httponly_and_samesite(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        response = client.post(
            "/register",
            data={
                "csrf_token": csrf(client, "/register"),
                "username": "alice",
                "password": PASSWORD,
                "password2": PASSWORD,
            },
        )
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie


def test_login_error_is_generic_for_unknown_user_and_wrong_password(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        logout(client)
        answers = []
        for username, password in (("alice", "wrong password 123"), ("nobody", PASSWORD)):
            response = client.post(
                "/login",
                data={
                    "csrf_token": csrf(client),
                    "username": username,
                    "password": password,
                },
            )
            answers.append((response.status_code, "Wrong username or password." in response.text))
        assert answers == [(400, True), (400, True)]


def test_login_rotates_session_and_logout_ends_it(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        logout(client)
        before = client.cookies.get("shapefarm_session")
        login(client, "alice")
        assert client.cookies.get("shapefarm_session") != before
        logout(client)
        assert client.get("/history").status_code in (303, 404)
        assert "Log in" in client.get("/").text


def test_post_without_csrf_token_is_refused(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        response = client.post("/jobs", data={"prompt": "a chair"})
        assert response.status_code == 403
        response = client.post("/jobs", data={"prompt": "a chair", "csrf_token": "forged"})
        assert response.status_code == 403


def test_register_rejects_weak_password_and_duplicate_name(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        weak = client.post(
            "/register",
            data={
                "csrf_token": csrf(client, "/register"),
                "username": "bob",
                "password": "short",
                "password2": "short",
            },
        )
        assert weak.status_code == 400 and "at least 10 characters" in weak.text
        register(client, "alice")
        logout(client)
        dup = client.post(
            "/register",
            data={
                "csrf_token": csrf(client, "/register"),
                "username": "ALICE",
                "password": PASSWORD,
                "password2": PASSWORD,
            },
        )
        assert dup.status_code == 400 and "cannot be used" in dup.text


def test_login_is_rate_limited(tmp_path: Path) -> None:
    with app_client(tmp_path, auth_rate_per_minute=3) as client:
        codes = [
            client.post(
                "/login",
                data={
                    "csrf_token": csrf(client),
                    "username": "x",
                    "password": "y" * 12,
                },
            ).status_code
            for _ in range(5)
        ]
        assert codes == [400, 400, 400, 429, 429]


def test_login_redirect_only_to_local_paths(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        logout(client)
        response = client.post(
            "/login",
            data={
                "csrf_token": csrf(client),
                "username": "alice",
                "password": PASSWORD,
                "next": "//evil.example/",
            },
        )
        assert response.headers["location"] == "/"


class FrozenClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_login_many_addresses_guessing_one_account_are_slowed(tmp_path: Path) -> None:
    # Behind a trusted proxy each attacker request names its own client address.
    settings = make_settings(
        tmp_path / "data", trusted_proxies=("127.0.0.1",), auth_rate_per_minute=20
    )
    await create_user(settings, "alice", PASSWORD, None, is_admin=False)
    async with running_coordinator(settings) as coord:
        clock = FrozenClock()
        coord.app.state.login_throttle.clock = clock
        async with Browser(coord, headers={"X-Forwarded-For": "192.0.2.1"}) as laptop:
            # alice's own browser, from before the attack.
            assert (await laptop.login("alice")).status_code == 303
            assert (await laptop.post("/logout")).status_code == 303

            answers: list[int] = []
            for address in range(8):  # 8 addresses x 3 guesses, each far under its own limit
                headers = {"X-Forwarded-For": f"198.51.100.{address}"}
                async with Browser(coord, headers=headers) as attacker:
                    for guess in range(3):
                        response = await attacker.login("alice", f"guess number {guess} {address}")
                        answers.append(response.status_code)
            assert answers.count(400) == 5  # checked; every other guess refused unchecked
            assert answers.count(429) == 19

            async with Browser(coord, headers={"X-Forwarded-For": "203.0.113.7"}) as fresh:
                # The right password during the wait gets the same answer as a guess.
                right = await fresh.login("alice")
                assert right.status_code == 429
                assert "Too many failed logins for this account. Wait 1 second " in right.text
                # The owner's own browser is not locked out: it counts on its own.
                assert (await laptop.login("alice")).status_code == 303
                assert (await laptop.post("/logout")).status_code == 303
                unknown = [
                    (await fresh.login("nobody", f"guess {i} for nobody")).status_code
                    for i in range(6)
                ]
                assert unknown == [400] * 5 + [429]  # a name that does not exist: the same
                clock.now += 1
                assert (await fresh.login("alice", "one more guess")).status_code == 400
                assert (await fresh.login("alice")).status_code == 429  # now 2 s
                clock.now += 2
                assert (await fresh.login("alice")).status_code == 303
                assert (await fresh.post("/logout")).status_code == 303
                # A success resets the count: a typo right after is just a typo.
                assert (await fresh.login("alice", "a typo in it")).status_code == 400
