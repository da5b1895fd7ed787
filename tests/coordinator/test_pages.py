from __future__ import annotations

import re
from pathlib import Path

from protocol.limits import DEFAULT_STEPS, MAX_PROMPT_CHARS, MAX_SEED
from tests.support.webclient import app_client, csrf, register


def test_prompt_is_escaped_in_html(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        response = client.post(
            "/jobs",
            data={
                "csrf_token": csrf(client, "/"),
                "prompt": "<script>alert(1)</script>",
                "steps": "8",
            },
        )
        assert response.status_code == 303
        page = client.get(response.headers["location"])
        assert "<script>alert(1)</script>" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


def test_htmx_submit_returns_job_row_partial(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        token = csrf(client, "/")
        response = client.post(
            "/jobs",
            data={"prompt": "a boat", "steps": "8"},
            headers={"HX-Request": "true", "X-CSRF-Token": token},
        )
        assert response.status_code == 200
        assert response.text.lstrip().startswith('<li id="job-')
        assert "<html" not in response.text


def test_invalid_submission_gets_clear_error(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        token = csrf(client, "/")
        for data, message in (
            ({"prompt": ""}, "Describe the object"),
            ({"prompt": "x" * 501}, "the limit is 500"),
            ({"prompt": "a cat", "steps": "abc"}, "Steps must be a number"),
            ({"prompt": "a cat", "steps": "100000"}, "Steps must be between"),
            ({"prompt": "a cat", "guidance": "nan"}, "Guidance must be a number"),
        ):
            response = client.post(
                "/jobs", data=data, headers={"HX-Request": "true", "X-CSRF-Token": token}
            )
            assert response.status_code == 422, data
            assert message in response.text, (data, response.text)


def test_form_limits_are_the_generation_limits(tmp_path: Path) -> None:
    """The browser's own checks match what the API and the agents accept."""
    with app_client(tmp_path) as client:
        register(client, "alice")
        page = client.get("/").text
        # Not required: a picture may stand in for it (the server says which is missing).
        assert f'name="prompt" maxlength="{MAX_PROMPT_CHARS}"' in page
        assert f'name="seed" type="number" min="0" max="{MAX_SEED}"' in page
        assert f'max="64" value="{DEFAULT_STEPS}"' in page  # the free tier's steps


def test_job_page_needs_login_and_hides_other_users_jobs(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        location = client.post(
            "/jobs",
            data={
                "csrf_token": csrf(client, "/"),
                "prompt": "a lamp",
                "steps": "8",
            },
        ).headers["location"]
        assert client.get(location).status_code == 200
        client.cookies.clear()
        assert client.get(location).status_code == 404
        register(client, "bob")
        for suffix in ("", "/status", "/model.glb", "/download/glb", "/preview.png"):
            assert client.get(location + suffix).status_code == 404, suffix


def test_security_headers_present(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        response = client.get("/login")
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "'unsafe-eval'" not in csp
        assert "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "same-origin"


def test_oversized_body_is_refused(tmp_path: Path) -> None:
    with app_client(tmp_path, max_body_bytes=1024) as client:
        response = client.post(
            "/login",
            content=b"x" * 4096,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 413


def test_unknown_page_uses_app_layout(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        response = client.get("/no/such/page")
        assert response.status_code == 404
        assert "Not found" in response.text and "shapefarm" in response.text


def test_index_recent_list_refreshes_as_a_partial(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        client.post("/jobs", data={"csrf_token": csrf(client, "/"), "prompt": "a kite"})
        page = client.get("/")
        assert (
            'sse-connect="/history/events"' in page.text and 'hx-trigger="sse:changed"' in page.text
        )
        partial = client.get("/", headers={"HX-Request": "true"})
        assert partial.status_code == 200 and "a kite" in partial.text
        assert "<html" not in partial.text and partial.text.lstrip().startswith("<li")


def test_favicon_is_served_and_linked(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        icon = client.get("/favicon.ico")
        assert icon.status_code == 200
        assert icon.headers["content-type"].startswith("image/svg+xml")
        assert icon.content.startswith(b"<svg")
        assert client.get("/static/favicon.svg").status_code == 200
        assert 'rel="icon" href="/static/favicon.svg"' in client.get("/").text


def test_job_page_times_are_time_elements_with_utc_title(tmp_path: Path) -> None:
    from tests.support.ui import make_job

    with app_client(tmp_path) as client:
        register(client, "alice")
        job = make_job(client, "alice", "a clock")
        for path in (f"/jobs/{job}", "/history"):
            page = client.get(path).text
            assert re.search(
                r'<time datetime="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ" title="[^"]+ UTC" data-local>',
                page,
            ), path
