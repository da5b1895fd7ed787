"""The views' shared plumbing over real sockets: the one redirect sanitiser on every
login branch, and every numeric query parameter bounded with a 400."""

from __future__ import annotations

import html
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from coordinator.cli.admin_cli import create_api_key, create_user
from tests.support.coordinators import PASSWORD, make_settings, running_coordinator
from tests.support.rawhttp import CSRF

# Values an attacker puts in ?next= (or the login form's hidden field), and what survives.
HOSTILE_NEXT = [
    "/\\evil.example/",  # browsers read "/\" as "//": another host
    "/\t/evil.example/",  # browsers drop tabs and newlines from URLs
    "//evil.example",
    "/%5Cevil.example",
    "/%2F/evil.example",
    "\r\nSet-Cookie: x=1",
    "/ok\r\nSet-Cookie: x=1",
    "https://evil.example",
    "javascript:alert(1)",
    "evil.example",
    "/caf\u00e9",  # not what a browser sends (it percent-encodes)
    "/" + "a" * 3000,
]
SAME_SITE = ["/ok?a=1", "/jobs/abc", "/history?q=a%20b&state=queued", "/caf%C3%A9"]
NEXT_FIELD = re.compile(r'name="next" value="([^"]*)"')


async def _coordinator_with_alice(tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, auth_rate_per_minute=100_000)
    await create_user(settings, "alice", PASSWORD, None, is_admin=True)
    return settings, await create_api_key(settings, "alice", "tests")


async def _login(client: httpx.AsyncClient, next_url: str, htmx: bool) -> httpx.Response:
    match = CSRF.search((await client.get("/login")).text)
    assert match
    return await client.post(
        "/login",
        data={
            "csrf_token": match.group(1),
            "username": "alice",
            "password": PASSWORD,
            "next": next_url,
        },
        headers={"HX-Request": "true"} if htmx else {},
    )


async def test_web_next_goes_through_one_sanitiser_on_every_login_branch(tmp_path: Path) -> None:
    settings, _ = await _coordinator_with_alice(tmp_path)
    async with running_coordinator(settings) as coordinator:
        for value in HOSTILE_NEXT + SAME_SITE:
            expected = value if value in SAME_SITE else "/"
            async with httpx.AsyncClient(base_url=coordinator.http, timeout=10) as client:
                # GET /login: the form's hidden field.
                page = await client.get("/login", params={"next": value})
                field = NEXT_FIELD.search(page.text)
                assert field and html.unescape(field.group(1)) == expected, (value, page.text)
                # POST /login, a plain form: the 303.
                plain = await _login(client, value, htmx=False)
                assert plain.status_code == 303, (value, plain.text)
                assert plain.headers["location"] == expected, value
                # GET /login when logged in already: straight there.
                again = await client.get("/login", params={"next": value})
                assert again.status_code == 303 and again.headers["location"] == expected
            async with httpx.AsyncClient(base_url=coordinator.http, timeout=10) as client:
                # POST /login through htmx: HX-Redirect (a CRLF once dropped the connection).
                hx = await _login(client, value, htmx=True)
                assert hx.status_code == 204, (value, hx.text)
                assert hx.headers["hx-redirect"] == expected, value
                assert "x" not in client.cookies  # no header was injected


@pytest.mark.parametrize(
    "path",
    ["/history?q=a%20b", "/contribute", "/history?next=//evil.example"],
)
async def test_web_login_redirect_keeps_the_page_as_a_same_site_next(
    tmp_path: Path, path: str
) -> None:
    settings = make_settings(tmp_path)
    async with (
        running_coordinator(settings) as coordinator,
        httpx.AsyncClient(base_url=coordinator.http) as client,
    ):
        for htmx in (False, True):
            response = await client.get(path, headers={"HX-Request": "true"} if htmx else {})
            target = response.headers["hx-redirect" if htmx else "location"]
            assert target.startswith("/login?next=")
            (next_url,) = parse_qs(urlsplit(target).query)["next"]
            assert next_url.startswith("/") and not next_url.startswith(("//", "/\\"))
            assert next_url == path


BAD_NUMBERS = [str(10**30), "-1", "abc", "1e3", "1.5", "0x10", "\u0661", "\u00b2", " ", "9" * 5000]


async def test_web_numeric_parameters_are_bounded_with_a_400(tmp_path: Path) -> None:
    settings, key = await _coordinator_with_alice(tmp_path)
    async with running_coordinator(settings) as coordinator:
        auth = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=coordinator.http, headers=auth, timeout=10) as api:
            for name, extra in (("offset", ["1000001"]), ("limit", ["0", "101"])):
                # The API reads numbers as JSON Schema does: 1e3 is the integer 1000.
                for raw in [n for n in BAD_NUMBERS if n != "1e3"] + extra:
                    response = await api.get("/api/v1/jobs", params={name: raw})
                    assert response.status_code == 422, (name, raw[:20], response.text[:200])
                    error = response.json()["error"]
                    assert error["code"] == "validation_failed"
                    assert error["details"][0]["loc"] == ["query", name]
            ok = await api.get("/api/v1/jobs", params={"offset": "1000000", "limit": "100"})
            assert ok.status_code == 200 and ok.json()["jobs"] == []
        async with httpx.AsyncClient(base_url=coordinator.http, timeout=10) as browser:
            await _login(browser, "/", htmx=False)
            for path in ("/history", "/admin/audit", "/admin/users"):
                for raw in [*BAD_NUMBERS, "0", "10001"]:
                    response = await browser.get(path, params={"page": raw})
                    assert response.status_code == 400, (path, raw[:20], response.status_code)
                    assert "page must be a whole number from 1 to 10000" in response.text
                assert (await browser.get(path, params={"page": "10000"})).status_code == 200
