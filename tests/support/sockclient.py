"""A browser for tests against a real coordinator server (see tests/support/coordinators.py
``running_coordinator``): its own cookie jar over httpx, forms posted with the
CSRF token of the page, no redirects followed."""

from __future__ import annotations

import re
from types import TracebackType

import httpx

from tests.support.coordinators import PASSWORD, RunningCoordinator

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
NEW_KEY = re.compile(r'id="new-key"[^>]*>([^<]+)<')


class Browser:
    def __init__(
        self,
        coordinator: RunningCoordinator,
        cookies: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.http = httpx.AsyncClient(
            base_url=coordinator.http,
            cookies=cookies,
            headers=headers,
            follow_redirects=False,
            timeout=30,
        )

    async def __aenter__(self) -> Browser:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.http.aclose()

    def cookies(self) -> dict[str, str]:
        """A copy of the cookie jar, as someone who stole the cookie would hold it."""
        return dict(self.http.cookies)

    async def get(self, path: str) -> httpx.Response:
        return await self.http.get(path)

    async def csrf(self, page: str = "/") -> str:
        match = CSRF.search((await self.http.get(page)).text)
        assert match, f"no CSRF token on {page}"
        return match.group(1)

    async def post(
        self, path: str, data: dict[str, str] | None = None, page: str = "/"
    ) -> httpx.Response:
        """Submit a form the way a browser does from ``page``: with its CSRF token."""
        return await self.http.post(
            path, data={"csrf_token": await self.csrf(page), **(data or {})}
        )

    async def register(self, username: str, password: str = PASSWORD) -> None:
        response = await self.post(
            "/register",
            {"username": username, "password": password, "password2": password},
            page="/register",
        )
        assert response.status_code == 303, response.text

    async def login(self, username: str, password: str = PASSWORD) -> httpx.Response:
        return await self.post(
            "/login", {"username": username, "password": password}, page="/login"
        )


def sent_to_login(response: httpx.Response) -> bool:
    return response.status_code == 303 and response.headers["location"].startswith("/login")
