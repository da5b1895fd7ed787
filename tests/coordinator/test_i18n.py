"""The UI's language over HTTP: negotiation order, the switcher, the API stays English."""

from __future__ import annotations

import re
from pathlib import Path

from starlette.testclient import TestClient

from coordinator import i18n
from tests.support.webclient import app_client, csrf

LANG = re.compile(r'<html lang="([^"]+)">')


def page_lang(client: TestClient, path: str = "/login", **headers: str) -> str:
    response = client.get(path, headers=headers)
    match = LANG.search(response.text)
    assert match, response.text[:300]
    return match.group(1)


def switch(client: TestClient, lang: str, back: str = "/login") -> None:
    response = client.post(
        "/language", data={"csrf_token": csrf(client), "lang": lang, "back": back}
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
        client.cookies.set(i18n.COOKIE, "<script>")
        assert page_lang(client) == "en"


def test_i18n_api_stays_english(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        english = client.get("/api/v1/jobs").json()
        client.cookies.set(i18n.COOKIE, "ru")
        response = client.get("/api/v1/jobs", headers={"Accept-Language": "ru"})
        assert response.status_code == 401
        assert response.json() == english
