from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
from starlette.testclient import TestClient

from coordinator.services import jobs
from coordinator.web import history
from scheduler.lifecycle import JobState
from tests.support.coordinators import PASSWORD, make_settings, running_coordinator
from tests.support.ui import job_exists, make_job
from tests.support.webclient import CSRF, app_client, csrf, register

ROW = re.compile(r'<li id="history-([^"]+)"')


def test_history_lists_own_jobs_newest_first(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "bob")
        register(client, "alice")  # registering logs in: alice is the viewer
        first = make_job(client, "alice", "first chair")
        second = make_job(client, "alice", "second chair", state=JobState.QUEUED)
        make_job(client, "bob", "bob's boat")
        page = client.get("/history")
        assert page.status_code == 200
        assert ROW.findall(page.text) == [second, first]
        assert "bob&#39;s boat" not in page.text and "boat" not in page.text
        assert f'src="/jobs/{first}/preview.png"' in page.text
        assert 'sse-connect="/history/events"' in page.text


def test_history_search_and_status_filter(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        chair = make_job(client, "alice", "a red chair")
        boat = make_job(client, "alice", "a 100%_boat", state=JobState.FAILED)
        assert ROW.findall(client.get("/history?q=CHAIR").text) == [chair]
        # LIKE wildcards in the search are literal characters.
        assert ROW.findall(client.get("/history?q=100%25_").text) == [boat]
        assert ROW.findall(client.get("/history?q=%25").text) == [boat]
        assert ROW.findall(client.get("/history?state=failed").text) == [boat]
        assert ROW.findall(client.get("/history?state=succeeded&q=boat").text) == []
        empty = client.get("/history?q=nothing-like-this")
        assert "Nothing matches" in empty.text


def test_history_htmx_request_gets_the_rows_partial(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        job = make_job(client, "alice", "a cup")
        response = client.get("/history?q=cup", headers={"HX-Request": "true"})
        assert response.status_code == 200
        assert response.text.lstrip().startswith('<div id="history-results"')
        assert "<html" not in response.text
        assert ROW.findall(response.text) == [job]
        # The partial re-fetches itself with the same filter when the list changes.
        assert 'hx-get="/history?q=cup"' in response.text


def test_history_paging(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        made = [make_job(client, "alice", f"thing {i}") for i in range(history.PAGE_SIZE + 3)]
        page1 = client.get("/history")
        page2 = client.get("/history?page=2")
        assert ROW.findall(page1.text) == made[::-1][: history.PAGE_SIZE]
        assert ROW.findall(page2.text) == made[::-1][history.PAGE_SIZE :]
        assert "Page 1 of 2" in page1.text and 'href="/history?page=2"' in page1.text
        assert 'href="/history"' in page2.text  # "Newer" goes back to page 1
        assert ROW.findall(client.get("/history?page=3").text) == []


def test_history_empty_state(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        page = client.get("/history")
        assert "No models yet" in page.text
        assert 'href="/"' in page.text


def test_history_bad_parameters_get_clear_errors(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        for query, message in (
            ("page=0", "whole number"),
            ("page=abc", "whole number"),
            ("state=exploded", "Unknown status"),
            ("q=" + "x" * 201, "limited to 200"),
        ):
            response = client.get(f"/history?{query}")
            assert response.status_code == 400, query
            assert message in response.text, query


def test_history_needs_login(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        for path in ("/history", "/history/events"):
            response = client.get(path)
            assert response.status_code == 303
            assert response.headers["location"].startswith("/login?next=")


async def test_history_events_announce_changes_of_own_jobs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(history, "SSE_MIN_INTERVAL_S", 0.0)
    settings = make_settings(tmp_path / "data")
    async with (
        running_coordinator(settings) as coord,
        httpx.AsyncClient(base_url=coord.http, timeout=10) as web,
    ):
        token = CSRF.search((await web.get("/register")).text)
        assert token
        registered = await web.post(
            "/register",
            data={
                "csrf_token": token.group(1),
                "username": "alice",
                "password": PASSWORD,
                "password2": PASSWORD,
            },
        )
        assert registered.status_code == 303
        token = CSRF.search((await web.get("/")).text)
        assert token
        async with web.stream("GET", "/history/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = (line async for line in stream.aiter_lines() if line)
            async with asyncio.timeout(10):
                assert await anext(lines) == ": connected"
            submitted = await web.post(
                "/jobs",
                data={
                    "csrf_token": token.group(1),
                    "prompt": "a kettle",
                    "steps": "4",
                },
            )
            assert submitted.status_code == 303
            async with asyncio.timeout(10):
                assert await anext(lines) == "event: changed"
                assert await anext(lines) == "data: jobs"


def test_history_reflects_delete_and_visibility_from_job_page(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        job = make_job(client, "alice", "a small vase")
        page = client.get(f"/jobs/{job}").text
        assert "<dt>Generation time</dt><dd>4 sec</dd>" in page
        assert 'href="/?prompt=a+small+vase&amp;seed=7&amp;guidance=15.0&amp;steps=8"' in page
        prefilled = client.get("/?prompt=a+small+vase&seed=7&guidance=15.0&steps=8").text
        assert ">a small vase</textarea>" in prefilled and 'value="7"' in prefilled
        token = csrf(client, f"/jobs/{job}")
        shown = client.post(
            f"/jobs/{job}/visibility", data={"csrf_token": token, "visibility": "public"}
        )
        assert shown.status_code == 303
        assert "public</span>" in client.get("/history").text
        bad = client.post(f"/jobs/{job}/visibility", data={"csrf_token": token, "visibility": "?"})
        assert bad.status_code == 400 and "Visibility must be" in bad.text
        deleted = client.post(f"/jobs/{job}/delete", data={"csrf_token": token})
        assert deleted.status_code == 303 and deleted.headers["location"] == "/history"
        assert ROW.findall(client.get("/history").text) == []
        assert client.get(f"/jobs/{job}").status_code == 404


def test_history_search_folds_case_beyond_ascii(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        chair = make_job(client, "alice", "красный стул")
        street = make_job(client, "alice", "Große Straße")
        make_job(client, "alice", "a blue table")
        assert ROW.findall(client.get("/history", params={"q": "СТУЛ"}).text) == [chair]
        assert ROW.findall(client.get("/history", params={"q": "КРАСНЫЙ"}).text) == [chair]
        # casefold, not lower: "ß" folds to "ss" both ways.
        assert ROW.findall(client.get("/history", params={"q": "STRASSE"}).text) == [street]
        assert ROW.findall(client.get("/history", params={"q": "straße"}).text) == [street]


def _bulk(client: TestClient, ids: list[str], **extra: str) -> Any:
    token = csrf(client, "/history")
    return client.post("/history/delete", data={"csrf_token": token, "job": ids, **extra})


def test_history_bulk_delete_removes_only_own_selected_jobs(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "bob")
        bobs = make_job(client, "bob", "bob's boat")
        register(client, "alice")
        a, b, c = (make_job(client, "alice", f"thing {i}") for i in range(3))
        queued = make_job(client, "alice", "waiting", state=JobState.QUEUED)
        page = client.get("/history").text
        assert 'action="/history/delete"' in page and "data-confirm=" in page
        assert f'name="job" value="{a}"' in page
        response = _bulk(client, [a, queued, bobs], back="/history?q=thing")
        assert response.status_code == 303
        assert response.headers["location"] == "/history?q=thing"
        assert ROW.findall(client.get("/history").text) == [c, b]
        assert job_exists(client, bobs)  # another user's job is not touched
        # An outside "back" is not followed.
        assert _bulk(client, [b], back="https://evil.example/").headers["location"] == "/history"


def test_history_bulk_delete_refuses_bad_requests(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        job = make_job(client, "alice", "keep me")
        assert _bulk(client, []).status_code == 400
        too_many = [f"id{i}" for i in range(jobs.MAX_BULK_DELETE + 1)]
        assert _bulk(client, too_many).status_code == 400
        no_csrf = client.post("/history/delete", data={"job": [job]})
        assert no_csrf.status_code == 403
        assert job_exists(client, job)
        client.post("/logout", data={"csrf_token": csrf(client, "/")})
        anonymous = client.post("/history/delete", data={"job": [job]})
        assert anonymous.status_code in (303, 403)
        assert job_exists(client, job)


def test_index_recent_list_has_thumbnails_and_example_prompts(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        job = make_job(client, "alice", "a bird")
        page = client.get("/").text
        assert f'<img src="/jobs/{job}/preview.png"' in page
        assert 'class="example" data-prompt="a red chair"' in page
        assert "Guidance: how closely" in page
        partial = client.get("/", headers={"HX-Request": "true"}).text
        assert f'<img src="/jobs/{job}/preview.png"' in partial
