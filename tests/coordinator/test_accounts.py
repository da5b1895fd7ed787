from __future__ import annotations

from pathlib import Path

from tests.helpers import PASSWORD
from tests.webclient import app_client, csrf, login, logout, register


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
