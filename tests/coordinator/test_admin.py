"""Admin console: authorisation, agent control over a live socket, users, jobs, audit, stats."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from starlette.routing import Route
from starlette.websockets import WebSocketDisconnect

from coordinator.store import models
from coordinator.web import admin, stats
from protocol import (
    Assign,
    CloseCode,
    Drain,
    Heartbeat,
    encode,
)
from scheduler.lifecycle import JobState
from tests.support.admin import (
    agent_socket,
    as_admin,
    audit_actions,
    enroll,
    job_row,
    next_message,
    post,
    submit,
    wait_until,
)
from tests.support.ui import farm, run, user_id
from tests.support.webclient import app_client, csrf, login, logout, register

# A socket read has no timeout of its own: bound every test instead.
pytestmark = pytest.mark.timeout(15)


def _admin_routes() -> list[tuple[str, str]]:
    found = []
    for route in admin.ROUTES:
        assert isinstance(route, Route)
        path = re.sub(r"\{[a-z_]+:int\}", "1", route.path)
        action = "cancel" if path.startswith("/admin/jobs") else "approve"
        path = re.sub(r"\{[a-z_]+\}", "x", path.replace("{action}", action))
        for method in sorted(route.methods or ()):
            if method != "HEAD":
                found.append((method, path))
    return found


def test_admin_every_route_refuses_non_admins(tmp_path: Path) -> None:
    routes = _admin_routes()
    assert ("GET", "/admin") in routes and ("POST", "/admin/jobs/x/cancel") in routes
    with app_client(tmp_path) as client:
        register(client, "alice")
        token = csrf(client, "/")
        for method, path in routes:
            response = client.request(method, path, data={"csrf_token": token})
            assert response.status_code == 403, (method, path, response.status_code)
            assert "administrators" in response.text
        logout(client)
        for method, path in routes:
            response = client.request(method, path, data={})
            assert response.status_code == 303, (method, path)
            assert response.headers["location"].startswith("/login?next=")


def test_admin_pages_render_for_admins(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        as_admin(client)
        for path in ("/admin", "/admin/agents", "/admin/jobs", "/admin/users", "/admin/audit"):
            response = client.get(path)
            assert response.status_code == 200, path
            assert 'aria-label="Admin"' in response.text
        partial = client.get("/admin", headers={"HX-Request": "true"})
        assert "<html" not in partial.text and "Agents online" in partial.text


# -- agents -------------------------------------------------------------------


def test_admin_approve_gives_a_connected_agent_work_at_once(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        agent_id, token = enroll(client)
        job_id = submit(client)
        with agent_socket(client, token) as (ws, welcome):
            assert welcome.approved is False
            assert run(client, farm(client).dispatch_once) == 0
            assert job_row(client, job_id).state == JobState.QUEUED
            logout(client)
            as_admin(client)
            page = client.get("/admin/agents").text
            assert f'action="/admin/agents/{agent_id}/approve"' in page and "RTX Test" in page
            assert post(client, f"/admin/agents/{agent_id}/approve") == 303
            assign = next_message(ws)
            assert isinstance(assign, Assign) and assign.jobs[0].job == job_id
            assert "agent.approve" in audit_actions(client)


def test_admin_drain_stops_new_work_and_survives_a_reconnect(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        as_admin(client)
        agent_id, token = enroll(client)  # an admin's agent is approved at once
        with agent_socket(client, token) as (ws, welcome):
            assert welcome.approved is True
            assert post(client, f"/admin/agents/{agent_id}/drain") == 303
            assert isinstance(next_message(ws), Drain)
            submit(client)
            assert run(client, farm(client).dispatch_once) == 0
            assert "draining" in client.get("/admin/agents").text
            assert post(client, f"/admin/agents/{agent_id}/drain") == 409
        with agent_socket(client, token) as (ws, _):
            assert isinstance(next_message(ws), Drain)
            assert post(client, f"/admin/agents/{agent_id}/resume") == 303
            with pytest.raises(WebSocketDisconnect) as closed:
                next_message(ws)
            assert closed.value.code == 1000
        with agent_socket(client, token) as (ws, _):
            assert isinstance(next_message(ws), Assign)  # ready again after the resume
        assert {"agent.drain", "agent.resume"} <= set(audit_actions(client))


def test_admin_disconnect_keeps_the_job_for_the_reconnect_grace(tmp_path: Path) -> None:
    with app_client(tmp_path, reconnect_grace_s=30.0, lease_s=60.0) as client:
        as_admin(client)
        agent_id, token = enroll(client)
        job_id = submit(client)
        with agent_socket(client, token) as (ws, _):
            assign = next_message(ws)
            assert isinstance(assign, Assign)
            assert post(client, f"/admin/agents/{agent_id}/disconnect") == 303
            with pytest.raises(WebSocketDisconnect) as closed:
                next_message(ws)
            assert closed.value.code == 1001
        wait_until(client, lambda: agent_id not in farm(client).agents)
        assert job_row(client, job_id).state == JobState.ASSIGNED  # the lease decides later
        assert post(client, f"/admin/agents/{agent_id}/disconnect") == 409  # not connected
        assert post(client, f"/admin/agents/{agent_id}/explode") == 404


def test_admin_revoke_cuts_off_the_agent_and_requeues_its_job(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        as_admin(client)
        agent_id, token = enroll(client)
        job_id = submit(client)
        with agent_socket(client, token) as (ws, _):
            assert isinstance(next_message(ws), Assign)
            ws.send_text(encode(Heartbeat(seq=1, running=(job_id,))))
            assert post(client, f"/admin/agents/{agent_id}/revoke") == 303
            with pytest.raises(WebSocketDisconnect) as closed:
                while True:
                    next_message(ws)
            assert closed.value.code == CloseCode.BAD_TOKEN
        job = job_row(client, job_id)
        assert job.state == JobState.QUEUED and job.agent_id is None
        assert job_id in farm(client).queue
        assert post(client, f"/admin/agents/{agent_id}/approve") == 409


# -- users --------------------------------------------------------------------


def test_admin_changes_tier_with_expiry_and_validates_input(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        logout(client)
        as_admin(client)
        alice = user_id(client, "alice")
        assert post(client, f"/admin/users/{alice}/tier", tier="pro", days="30") == 303
        assert farm(client).users[str(alice)].tier == "pro"
        page = client.get("/admin/users?q=ali").text
        assert "alice" in page and "root" not in page.split("<tbody>")[1]
        for data, message in (
            ({"tier": "gold"}, "Unknown tier"),
            ({"tier": "plus", "days": "soon"}, "Days must be a number"),
            ({"tier": "plus", "days": "-1"}, "Days must be between"),
        ):
            response = client.post(
                f"/admin/users/{alice}/tier", data={"csrf_token": csrf(client, "/"), **data}
            )
            assert response.status_code == 422 and message in response.text, data
        assert post(client, "/admin/users/9999/tier", tier="plus") == 404
        assert audit_actions(client).count("user.tier") == 1


def test_admin_ban_ends_sessions_and_unban_restores_login(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        as_admin(client)
        root = user_id(client, "root")
        admin_cookies = dict(client.cookies)
        client.cookies.clear()
        register(client, "bob")
        bob = user_id(client, "bob")
        waiting = submit(client, "a banned lamp")
        bob_cookies = dict(client.cookies)
        client.cookies = admin_cookies  # type: ignore[assignment]
        assert post(client, f"/admin/users/{bob}/ban") == 303
        cancelled = job_row(client, waiting)
        assert cancelled.state == JobState.CANCELLED and "suspended" in (cancelled.error or "")
        assert waiting not in farm(client).queue
        assert post(client, f"/admin/users/{bob}/ban") == 409
        assert post(client, f"/admin/users/{root}/ban") == 409  # not yourself
        client.cookies = bob_cookies  # type: ignore[assignment]
        assert client.get("/contribute").status_code == 303  # the session died with the ban
        client.cookies.clear()
        response = client.post(
            "/login",
            data={
                "csrf_token": csrf(client),
                "username": "bob",
                "password": "a long test password 1",
            },
        )
        assert response.status_code != 303
        client.cookies = admin_cookies  # type: ignore[assignment]
        assert post(client, f"/admin/users/{bob}/unban") == 303
        client.cookies.clear()
        login(client, "bob")
        assert {"user.ban", "user.unban"} <= set(audit_actions(client))


# -- jobs ---------------------------------------------------------------------


def test_admin_jobs_priority_cancel_and_requeue(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        first, second = submit(client, "a cup"), submit(client, "a vase")
        logout(client)
        as_admin(client)
        page = client.get("/admin/jobs").text
        assert "a cup" in page and "a vase" in page and "2 waiting" in page
        assert post(client, f"/admin/jobs/{second}/priority", priority="5") == 303
        assert farm(client).queue[second].priority == 5
        assert farm(client).positions()[second].position == 1
        assert post(client, f"/admin/jobs/{second}/priority", priority="lots") == 422
        assert post(client, f"/admin/jobs/{second}/priority", priority="100000") == 422
        assert post(client, f"/admin/jobs/{first}/requeue") == 409  # still queued
        assert post(client, f"/admin/jobs/{first}/cancel") == 303
        assert job_row(client, first).state == JobState.CANCELLED
        assert first not in farm(client).queue
        assert "cancelled by an administrator" in client.get("/admin/jobs").text
        assert post(client, f"/admin/jobs/{first}/cancel") == 409
        assert post(client, f"/admin/jobs/{first}/requeue") == 303
        job = job_row(client, first)
        assert job.state == JobState.QUEUED and job.attempt == 0 and job.error is None
        assert first in farm(client).queue
        assert post(client, "/admin/jobs/nope/cancel") == 404
        actions = audit_actions(client)
        assert [a for a in actions if a.startswith("job.")] == [
            "job.priority",
            "job.cancel",
            "job.requeue",
        ]


# -- dashboard, audit, public stats -------------------------------------------


def test_admin_percentile_is_nearest_rank() -> None:
    assert stats.percentile([], 50) is None
    assert stats.percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.0
    assert stats.percentile([float(i) for i in range(1, 101)], 95) == 95.0
    assert stats.percentile([7.0], 95) == 7.0


def test_admin_dashboard_shows_waits_per_tier(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        ids = [submit(client, f"thing {i}") for i in range(4)]
        logout(client)
        as_admin(client)

        async def started() -> None:
            async with farm(client).sessions() as db:
                for wait, job_id in zip((10.0, 20.0, 30.0, 40.0), ids, strict=True):
                    job = await db.get(models.Job, job_id)
                    assert job is not None
                    job.started_at = job.created_at + wait
                await db.commit()

        run(client, started)
        page = client.get("/admin", headers={"HX-Request": "true"}).text
        row = page.split('id="tier-free"')[1].split("</tr>")[0]
        assert "20 s" in row and "40 s" in row and "<td>4</td>" in row


def test_admin_audit_log_lists_and_filters_actions(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        as_admin(client)
        enroll(client, "rig")
        alice_id = user_id(client, "root")
        assert post(client, f"/admin/users/{alice_id}/tier", tier="plus") == 303
        page = client.get("/admin/audit").text
        assert "agent.enroll" in page and "user.tier" in page and "root" in page
        filtered = client.get("/admin/audit?action=agent.").text
        assert "agent.enroll" in filtered and "user.tier" not in filtered


def test_admin_public_stats_page_needs_no_login(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        submit(client, "a secret prompt")
        client.cookies.clear()
        response = client.get("/stats")
        assert response.status_code == 200
        assert 'id="stat-queue">1<' in response.text
        assert "alice" not in response.text and "secret prompt" not in response.text
        partial = client.get("/stats", headers={"HX-Request": "true"}).text
        assert "<html" not in partial and 'id="stat-models">0<' in partial


def test_admin_drain_survives_a_coordinator_restart(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        as_admin(client)
        agent_id, token = enroll(client)
        assert post(client, f"/admin/agents/{agent_id}/drain") == 303
    with app_client(tmp_path) as client:  # same data dir: a restarted coordinator
        assert agent_id in farm(client).drained
        with agent_socket(client, token) as (ws, welcome):
            assert welcome.approved is True
            assert isinstance(next_message(ws), Drain)
        as_admin(client, "root2")
        assert post(client, f"/admin/agents/{agent_id}/resume") == 303
    with app_client(tmp_path) as client:
        assert agent_id not in farm(client).drained
