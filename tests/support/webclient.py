"""In-process HTTP helpers for coordinator tests (Starlette TestClient, no sockets)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from coordinator.app import create_app
from tests.support.coordinators import PASSWORD, make_settings

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@contextmanager
def app_client(data_dir: Path, **overrides: Any) -> Iterator[TestClient]:
    """A TestClient with the app's lifespan running (DB migrated, farm started)."""
    app = create_app(make_settings(data_dir, **overrides))
    with TestClient(app, base_url="http://127.0.0.1", follow_redirects=False) as client:
        yield client


def csrf(client: TestClient, path: str = "/login") -> str:
    match = CSRF.search(client.get(path).text)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def register(client: TestClient, username: str, password: str = PASSWORD) -> None:
    response = client.post(
        "/register",
        data={
            "csrf_token": csrf(client, "/register"),
            "username": username,
            "password": password,
            "password2": password,
        },
    )
    assert response.status_code == 303, response.text


def login(client: TestClient, username: str, password: str = PASSWORD) -> None:
    response = client.post(
        "/login",
        data={
            "csrf_token": csrf(client),
            "username": username,
            "password": password,
        },
    )
    assert response.status_code == 303, response.text


def logout(client: TestClient) -> None:
    response = client.post("/logout", data={"csrf_token": csrf(client, "/")})
    assert response.status_code == 303
