"""The public gallery over HTTP: what shows (and what never does), likes, creator
pages, reports and the moderation queue."""

from __future__ import annotations

import re
from pathlib import Path

from starlette.testclient import TestClient

from coordinator.services import gallery
from coordinator.web import gallery as gallery_view
from scheduler.lifecycle import JobState
from tests.support.ui import make_admin, make_job
from tests.support.webclient import app_client, csrf, login, logout, register

CARD = re.compile(r'<li class="card" id="card-([^"]+)"')
HTMX = {"HX-Request": "true"}


def _as(client: TestClient, name: str) -> None:
    logout(client)
    login(client, name)


def _like(client: TestClient, job: str, htmx: bool = True) -> tuple[int, str]:
    token = csrf(client, f"/jobs/{job}")
    response = client.post(
        f"/jobs/{job}/like", data={"csrf_token": token}, headers=HTMX if htmx else {}
    )
    return response.status_code, response.text


def _report(client: TestClient, job: str, reason: str) -> tuple[int, str]:
    token = csrf(client, f"/jobs/{job}")
    response = client.post(
        f"/jobs/{job}/report", data={"csrf_token": token, "reason": reason}, headers=HTMX
    )
    return response.status_code, response.text


def test_gallery_shows_public_finished_models_only(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        shown = make_job(client, "alice", "a public chair", public=True)
        secret = make_job(client, "alice", "my secret lamp")
        make_job(client, "alice", "a public queued boat", public=True, state=JobState.QUEUED)
        logout(client)
        for path in ("/explore", "/u/alice", "/explore?q=lamp", "/explore?order=liked"):
            page = client.get(path)
            assert page.status_code == 200, path
            assert "secret lamp" not in page.text and secret not in page.text, path
            assert "queued boat" not in page.text, path
        html = client.get("/explore").text
        assert CARD.findall(html) == [shown]
        assert f'src="/jobs/{shown}/preview.png"' in html
        assert 'href="/u/alice"' in html


def test_gallery_orders_search_and_pages(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        for name in ("bob", "carol"):
            register(client, name)
        register(client, "alice")
        old = make_job(client, "alice", "Красный СТУЛ", public=True)
        new = make_job(client, "alice", "a blue table", public=True)
        assert CARD.findall(client.get("/explore").text) == [new, old]
        for name in ("bob", "carol"):
            _as(client, name)
            assert _like(client, old)[0] == 200
        assert CARD.findall(client.get("/explore?order=liked").text) == [old, new]
        assert CARD.findall(client.get("/explore", params={"q": "стул"}).text) == [old]
        partial = client.get("/explore?q=table", headers=HTMX).text
        assert partial.lstrip().startswith('<div id="gallery-results"')
        assert CARD.findall(partial) == [new]
        for bad in (
            "order=random",
            "page=0",
            f"page={gallery_view.MAX_PAGE + 1}",
            "q=" + "x" * 201,
        ):
            assert client.get(f"/explore?{bad}").status_code == 400, bad


def test_gallery_paging_is_bounded(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        made = [
            make_job(client, "alice", f"thing {i}", public=True)
            for i in range(gallery_view.PAGE_SIZE + 2)
        ]
        first = client.get("/explore").text
        assert len(CARD.findall(first)) == gallery_view.PAGE_SIZE
        assert 'href="/explore?page=2"' in first
        assert CARD.findall(client.get("/explore?page=2").text) == made[1::-1]
        assert CARD.findall(client.get("/explore?page=3").text) == []


def test_likes_once_per_user_and_toggle(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        job = make_job(client, "alice", "a likeable cat", public=True)
        register(client, "bob")
        status, html = _like(client, job)
        assert status == 200 and 'aria-pressed="true"' in html
        assert '<span class="like-count">1</span>' in html
        status, html = _like(client, job)  # the second click takes it back
        assert 'aria-pressed="false"' in html and '<span class="like-count">0</span>' in html
        _like(client, job)
        _as(client, "alice")
        status, html = _like(client, job)
        assert '<span class="like-count">2</span>' in html
        # Without htmx the form posts and comes back to the model.
        status, _ = _like(client, job, htmx=False)
        assert status == 303
        assert '<span class="like-count">1</span>' in client.get(f"/jobs/{job}").text


def test_likes_need_login_csrf_and_a_gallery_model(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        private = make_job(client, "alice", "a private owl")
        public = make_job(client, "alice", "a public owl", public=True)
        # Even its owner cannot like a private model: it is not in the gallery.
        token = csrf(client, "/")
        assert client.post(f"/jobs/{private}/like", data={"csrf_token": token}).status_code == 404
        assert client.post("/jobs/nope/like", data={"csrf_token": token}).status_code == 404
        assert client.post(f"/jobs/{public}/like", data={}).status_code == 403
        logout(client)
        anonymous = client.post(f"/jobs/{public}/like", data={"csrf_token": token})
        assert anonymous.status_code == 303 and "/login" in anonymous.headers["location"]
        assert "Log in to like" in client.get(f"/jobs/{public}").text


def test_creator_page_lists_their_public_models(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "bob")
        bobs = make_job(client, "bob", "bob's boat", public=True)
        register(client, "alice")
        alices = make_job(client, "alice", "alice's apple", public=True)
        make_job(client, "alice", "alice's diary")
        page = client.get("/u/alice").text
        assert CARD.findall(page) == [alices]
        assert "Models by alice" in page
        assert CARD.findall(client.get("/u/bob").text) == [bobs]
        assert client.get("/u/nobody").status_code == 404
        assert client.get("/u/" + "x" * 40).status_code == 404


def test_report_goes_to_the_moderation_queue_and_hide_removes_it(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "admin")
        make_admin(client, "admin")
        register(client, "alice")
        job = make_job(client, "alice", "an offensive thing", public=True)
        other = make_job(client, "alice", "a fine thing", public=True)
        assert _report(client, job, "my own")[0] == 422  # owners do not report themselves
        register(client, "bob")
        status, html = _report(client, job, "   ")
        assert status == 422 and "Say what is wrong" in html
        status, html = _report(client, job, "x" * (gallery.MAX_REASON + 1))
        assert status == 422 and "limited to" in html
        status, html = _report(client, job, "It insults people")
        assert status == 200 and "an admin will look" in html
        status, html = _report(client, job, "again")
        assert status == 422 and "already" in html
        # Another user cannot hide (or reach the queue).
        assert client.get("/admin/reports").status_code == 403
        token = csrf(client, "/")
        hide = client.post(f"/admin/moderation/{job}/hide", data={"csrf_token": token})
        assert hide.status_code == 403

        _as(client, "admin")
        queue = client.get("/admin/reports").text
        assert "It insults people" in queue and "an offensive thing" in queue and "bob" in queue
        token = csrf(client, "/admin/reports")
        assert client.post(f"/admin/moderation/{job}/hide", data={}).status_code == 403
        hide = client.post(f"/admin/moderation/{job}/hide", data={"csrf_token": token})
        assert hide.status_code == 303
        assert "It insults people" not in client.get("/admin/reports").text  # resolved
        audit = client.get("/admin/audit?action=job.hide").text
        assert job in audit and "1 open report(s) resolved" in audit

        logout(client)
        for path in ("/explore", "/u/alice"):
            assert CARD.findall(client.get(path).text) == [other], path
        assert client.get(f"/jobs/{job}").status_code == 404
        assert client.get(f"/jobs/{job}/model.glb").status_code == 404

        # The owner still sees it, marked hidden, on their creator page and the job page.
        _as(client, "alice")
        page = client.get("/u/alice").text
        assert set(CARD.findall(page)) == {job, other} and "hidden by a moderator" in page
        assert "A moderator has hidden this model" in client.get(f"/jobs/{job}").text
        assert CARD.findall(client.get("/explore").text) == [other]

        _as(client, "admin")
        token = csrf(client, "/admin/reports")
        client.post(f"/admin/moderation/{job}/unhide", data={"csrf_token": token})
        assert set(CARD.findall(client.get("/explore").text)) == {job, other}
        assert job in client.get("/admin/audit?action=job.unhide").text


def test_reports_are_rate_limited_and_dismissable(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "admin")
        make_admin(client, "admin")
        register(client, "alice")
        made = [
            make_job(client, "alice", f"thing {i}", public=True)
            for i in range(gallery.REPORTS_PER_WINDOW + 1)
        ]
        register(client, "bob")
        for job in made[:-1]:
            assert _report(client, job, "spam")[0] == 200
        status, html = _report(client, made[-1], "spam")
        assert status == 422 and "many reports" in html
        _as(client, "admin")
        page = client.get("/admin/reports").text
        first = re.findall(r'id="report-row-(\d+)"', page)[0]
        token = csrf(client, "/admin/reports")
        dismissed = client.post(f"/admin/reports/{first}/dismiss", data={"csrf_token": token})
        assert dismissed.status_code == 303
        again = client.post(f"/admin/reports/{first}/dismiss", data={"csrf_token": token})
        assert again.status_code == 404
        assert f'id="report-row-{first}"' not in client.get("/admin/reports").text
        assert "report.dismiss" in client.get("/admin/audit?action=report.").text


def test_deleting_a_liked_and_reported_model_removes_its_rows(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        job = make_job(client, "alice", "short-lived", public=True)
        register(client, "bob")
        _like(client, job)
        _report(client, job, "meh")
        _as(client, "alice")
        token = csrf(client, f"/jobs/{job}")
        assert client.post(f"/jobs/{job}/delete", data={"csrf_token": token}).status_code == 303
        assert client.get("/explore").status_code == 200
        _as(client, "bob")
        assert "short-lived" not in client.get("/explore").text


def test_gallery_speaks_russian(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        make_job(client, "alice", "стул", public=True)
        page = client.get("/explore", headers={"Accept-Language": "ru"}).text
        assert "Галерея публичных моделей" in page and "1 модель" in page
        assert "Самые популярные" in page


def test_a_deleted_accounts_likes_leave_the_counts(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        job = make_job(client, "alice", "a popular pot", public=True)
        register(client, "bob")
        assert '<span class="like-count">1</span>' in _like(client, job)[1]
        token = csrf(client, "/profile")
        gone = client.post(
            "/profile/delete", data={"csrf_token": token, "password": "a long test password 1"}
        )
        assert gone.status_code == 303
        assert "Log in to like</span> 0</a>" in client.get(f"/jobs/{job}").text
