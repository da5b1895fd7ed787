"""The UI's language over HTTP: negotiation order, the switcher, the API stays English."""

from __future__ import annotations

import re
from pathlib import Path

from starlette.testclient import TestClient

from coordinator import i18n
from coordinator.store import models
from tests.support.ui import farm, run, user_id
from tests.support.webclient import app_client, csrf, login, logout, register

LANG = re.compile(r'<html lang="([^"]+)">')


def page_lang(client: TestClient, path: str = "/login", **headers: str) -> str:
    response = client.get(path, headers=headers)
    match = LANG.search(response.text)
    assert match, response.text[:300]
    return match.group(1)


def switch(client: TestClient, lang: str, back: str = "/login") -> None:
    """Press the navigation's language button on page ``back``."""
    response = client.post(
        "/language", data={"csrf_token": csrf(client, back), "lang": lang, "back": back}
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == back


def test_i18n_parse_accept_language_orders_by_quality() -> None:
    header = "de;q=0.5, ru-RU, en;q=0.9, fr;q=0, *;q=0.1, xx;q=abc"
    assert i18n.parse_accept_language(header) == ["ru-ru", "en", "de"]
    assert i18n.parse_accept_language("") == []
    # A huge header is read only up to its bound.
    assert len(i18n.parse_accept_language("en," * 100_000)) <= i18n.MAX_LANGUAGE_RANGES


def test_i18n_negotiation_order() -> None:
    i18n.load_catalogs()
    assert i18n.negotiate("ru", "en", "en", "/") == "ru"  # saved preference first
    assert i18n.negotiate(None, "ru", "en", "/") == "ru"  # then the cookie
    assert i18n.negotiate("xx", "bogus", "de, ru;q=0.5", "/") == "ru"  # then the header
    assert i18n.negotiate(None, None, "de, fr", "/") == "en"  # then English
    assert i18n.negotiate("ru", "ru", "ru", "/api/v1/jobs") == "en"  # the API: English


def test_i18n_english_without_hints(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        assert page_lang(client) == "en"
        assert "Log in" in client.get("/login").text


def test_i18n_accept_language_picks_russian(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        assert page_lang(client, **{"Accept-Language": "ru-RU,ru;q=0.9,en;q=0.8"}) == "ru"
        assert "Accept-Language" in client.get("/login").headers["vary"]
        assert "Войти" in client.get("/login", headers={"Accept-Language": "ru"}).text
        assert page_lang(client, **{"Accept-Language": "de-DE, fr;q=0.5"}) == "en"


def test_i18n_switcher_cookie_beats_accept_language_logged_out(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        switch(client, "ru")
        assert client.cookies.get(i18n.COOKIE) == "ru"
        assert page_lang(client, **{"Accept-Language": "en"}) == "ru"
        switch(client, "en")
        assert page_lang(client, **{"Accept-Language": "ru"}) == "en"


def test_i18n_switcher_refuses_unknown_language_and_foreign_back(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        token = csrf(client)
        bad = client.post("/language", data={"csrf_token": token, "lang": "xx"})
        assert bad.status_code == 400
        assert client.cookies.get(i18n.COOKIE) is None
        away = client.post(
            "/language", data={"csrf_token": token, "lang": "ru", "back": "//evil.example/"}
        )
        assert away.status_code == 303 and away.headers["location"] == "/"
        forged = client.post("/language", data={"lang": "ru"})
        assert forged.status_code == 403


def test_i18n_forged_cookie_is_ignored(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        set_cookie(client, "<script>")
        assert page_lang(client) == "en"


def test_i18n_api_stays_english(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        english = client.get("/api/v1/jobs").json()
        set_cookie(client, "ru")
        response = client.get("/api/v1/jobs", headers={"Accept-Language": "ru"})
        assert response.status_code == 401
        assert response.json() == english


def set_cookie(client: TestClient, lang: str) -> None:
    """What the switcher would have left in this browser."""
    for cookie in list(client.cookies.jar):
        if cookie.name == i18n.COOKIE:
            client.cookies.jar.clear(cookie.domain, cookie.path, cookie.name)
    client.cookies.set(i18n.COOKIE, lang)


def save_language(client: TestClient, lang: str) -> None:
    response = client.post(
        "/profile/language", data={"csrf_token": csrf(client, "/profile"), "lang": lang}
    )
    assert response.status_code == 303, response.text


def saved_locale(client: TestClient, username: str) -> str | None:
    uid = user_id(client, username)

    async def read() -> str | None:
        async with farm(client).sessions() as db:
            user = await db.get(models.User, uid)
            assert user is not None
            return user.locale

    return run(client, read)


def test_i18n_saved_preference_beats_cookie_and_header(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        save_language(client, "ru")
        assert saved_locale(client, "alice") == "ru"
        page = client.get("/profile", headers={"Accept-Language": "en"})
        assert 'lang="ru"' in page.text and 'value="ru" lang="ru" selected' in page.text
        set_cookie(client, "en")
        assert page_lang(client, "/profile", **{"Accept-Language": "en"}) == "ru"
        # "Automatic" clears it: the cookie decides again.
        save_language(client, "")
        assert saved_locale(client, "alice") is None
        set_cookie(client, "en")
        assert page_lang(client, "/profile", **{"Accept-Language": "ru"}) == "en"


def test_i18n_profile_language_refuses_unknown_and_needs_login(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        token = csrf(client)
        anonymous = client.post("/profile/language", data={"csrf_token": token, "lang": "ru"})
        assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login")
        register(client, "alice")
        bad = client.post(
            "/profile/language", data={"csrf_token": csrf(client, "/profile"), "lang": "de"}
        )
        assert bad.status_code == 400
        assert saved_locale(client, "alice") is None


def test_i18n_choice_survives_login_and_logout(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        switch(client, "ru")  # logged out, then registered: the account keeps it
        register(client, "alice")
        assert saved_locale(client, "alice") == "ru"
        assert page_lang(client, "/") == "ru"
        logout(client)
        assert page_lang(client, **{"Accept-Language": "en"}) == "ru"
    with app_client(tmp_path / "second") as client:
        register(client, "bob")
        save_language(client, "ru")
        logout(client)
        client.cookies.clear()  # another browser: English until bob logs in
        assert page_lang(client, **{"Accept-Language": "en"}) == "en"
        login(client, "bob")
        assert client.cookies.get(i18n.COOKIE) == "ru"
        assert page_lang(client, "/", **{"Accept-Language": "en"}) == "ru"
        logout(client)
        assert page_lang(client, **{"Accept-Language": "en"}) == "ru"


def test_i18n_switcher_when_logged_in_updates_saved_choice(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        save_language(client, "ru")
        switch(client, "en", back="/profile")
        assert saved_locale(client, "alice") == "en"
        assert page_lang(client, "/profile", **{"Accept-Language": "ru"}) == "en"


def test_i18n_form_errors_and_refusals_in_russian(tmp_path: Path) -> None:
    ru = {"Accept-Language": "ru"}
    with app_client(tmp_path) as client:
        register(client, "alice")
        token = csrf(client, "/")
        bad = client.post(
            "/jobs", data={"csrf_token": token, "prompt": "стул", "steps": "abc"}, headers=ru
        )
        assert bad.status_code in (400, 422)
        assert "Шаги: нужно число." in bad.text
        # The prompt had no Latin letters: the hint is shown, in Russian.
        assert re.search(r'<p id="prompt-hint" class="hint" role="status">Модель', bad.text)
        refused = client.post(
            "/jobs", data={"csrf_token": token, "prompt": "a chair", "steps": "200"}, headers=ru
        )
        assert "Тариф «Бесплатный» позволяет не больше 64 шагов (запрошено 200)." in refused.text
        # In English the hint is there but hidden until the prompt needs it.
        english = client.get("/")
        assert re.search(r'<p id="prompt-hint" class="hint" role="status" hidden>', english.text)
        login_page = client.post("/logout", data={"csrf_token": token}, headers=ru)
        assert login_page.status_code == 303
        wrong = client.post(
            "/login",
            data={"csrf_token": csrf(client), "username": "alice", "password": "x" * 12},
            headers=ru,
        )
        assert "Неверное имя пользователя или пароль." in wrong.text


def test_i18n_error_pages_in_russian(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        missing = client.get("/jobs/nothing-here", headers={"Accept-Language": "ru"})
        assert missing.status_code == 404
        assert "Не найдено" in missing.text and "Такой модели нет." in missing.text
        bad_page = client.get("/history?page=x", headers={"Accept-Language": "ru"})
        assert bad_page.status_code == 400
        assert "page: нужно целое число от 1 до" in bad_page.text


def test_i18n_live_updates_speak_the_page_language(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        token = csrf(client, "/")
        posted = client.post("/jobs", data={"csrf_token": token, "prompt": "a cup", "steps": "4"})
        job_url = posted.headers["location"]
        cancelled = client.post(f"{job_url}/cancel", data={"csrf_token": token})
        assert cancelled.status_code == 303
        events = client.get(f"{job_url}/events", headers={"Accept-Language": "ru"})
        assert events.status_code == 200
        assert '<span class="badge">отменено</span>' in events.text
        assert "отменено пользователем" in events.text  # the stored reason, translated
        assert "cancelled by user" not in events.text


def test_i18n_starlette_errors_get_a_page_in_the_language(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        missing = client.get("/no/such/page", headers={"Accept-Language": "ru"})
        assert missing.status_code == 404
        assert "По этому адресу ничего нет." in missing.text and "Not Found" not in missing.text
        english = client.get("/no/such/page")
        assert "There is nothing at this address." in english.text
