from __future__ import annotations

from pathlib import Path

from starlette.testclient import TestClient

from scheduler.lifecycle import JobState
from tests.support.ui import api_key, farm, glb_bytes, job_exists, make_job
from tests.support.webclient import app_client, login, register


def _keys(client: TestClient) -> tuple[dict[str, str], dict[str, str]]:
    """Bearer headers for alice and bob (bob is logged in afterwards)."""
    register(client, "alice")
    alice = {"Authorization": f"Bearer {api_key(client)}"}
    register(client, "bob")
    bob = {"Authorization": f"Bearer {api_key(client)}"}
    client.cookies.clear()  # the API must not need (or use) the session cookie
    return alice, bob


def test_api_submit_list_get_cancel(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        alice, bob = _keys(client)
        created = client.post(
            "/api/v1/jobs",
            json={"prompt": "a mug", "steps": 8, "variants": 2, "seed": 5},
            headers=alice,
        )
        assert created.status_code == 201, created.text
        ids = [job["id"] for job in created.json()["jobs"]]
        assert [job["seed"] for job in created.json()["jobs"]] == [5, 6]
        listed = client.get("/api/v1/jobs?q=mug", headers=alice).json()
        assert listed["total"] == 2 and {job["id"] for job in listed["jobs"]} == set(ids)
        assert client.get("/api/v1/jobs", headers=bob).json()["total"] == 0
        one = client.get(f"/api/v1/jobs/{ids[0]}", headers=alice).json()
        assert one["state"] == "queued" and one["progress"]["agents_online"] == 0
        cancelled = client.post(f"/api/v1/jobs/{ids[0]}/cancel", headers=alice)
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
        again = client.post(f"/api/v1/jobs/{ids[0]}/cancel", headers=alice)
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "job_finished"
        assert "cancelled already" in again.json()["error"]["message"]


def test_api_refuses_bad_input_clearly(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        alice, _ = _keys(client)
        assert client.get("/api/v1/jobs").status_code == 401
        wrong = client.get("/api/v1/jobs", headers={"Authorization": "Bearer sfk.no.pe"})
        assert wrong.status_code == 401 and "Invalid" in wrong.json()["error"]["message"]
        bad_json = client.post("/api/v1/jobs", content=b"[1,2", headers=alice)
        assert bad_json.status_code == 400 and bad_json.json()["error"]["code"] == "invalid_json"
        blank = client.post("/api/v1/jobs", json={"prompt": " \t "}, headers=alice)
        assert blank.status_code == 422 and blank.json()["error"]["code"] == "validation_failed"
        assert blank.json()["error"]["details"] == [
            {
                "loc": ["body", "prompt"],
                "message": "Expected `str` with something other than spaces and no control "
                "characters",
            }
        ]
        over_plan = client.post("/api/v1/jobs", json={"prompt": "a", "steps": 200}, headers=alice)
        assert over_plan.status_code == 422 and over_plan.json()["error"]["code"] == "job_rejected"
        assert "at most 64 steps" in over_plan.json()["error"]["message"]
        paging = client.get("/api/v1/jobs?limit=x", headers=alice)
        assert paging.status_code == 422
        assert paging.json()["error"]["details"][0]["loc"] == ["query", "limit"]


def test_api_delete_removes_rows_and_files(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        alice, bob = _keys(client)
        done = make_job(client, "alice")
        store = farm(client).store
        assert client.delete(f"/api/v1/jobs/{done}", headers=bob).status_code == 404
        assert job_exists(client, done)
        response = client.delete(f"/api/v1/jobs/{done}", headers=alice)
        assert response.status_code == 204
        assert not job_exists(client, done)
        assert not store.exists(done, "glb") and not store.exists(done, "png")
        assert client.get(f"/api/v1/jobs/{done}", headers=alice).status_code == 404
        assert client.delete(f"/api/v1/jobs/{done}", headers=alice).status_code == 404


def test_api_delete_of_queued_job_takes_it_out_of_the_queue(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        alice, _ = _keys(client)
        waiting = make_job(client, "alice", state=JobState.QUEUED)
        assert waiting in farm(client).queue
        assert client.delete(f"/api/v1/jobs/{waiting}", headers=alice).status_code == 204
        assert waiting not in farm(client).queue
        assert not job_exists(client, waiting)


def test_api_visibility_makes_job_public_and_private(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        alice, bob = _keys(client)
        job = make_job(client, "alice", "a shared teapot")
        assert client.get(f"/jobs/{job}").status_code == 404  # anonymous, private
        denied = client.post(f"/api/v1/jobs/{job}/visibility", json={"public": True}, headers=bob)
        assert denied.status_code == 404
        made_public = client.post(
            f"/api/v1/jobs/{job}/visibility", json={"public": True}, headers=alice
        )
        assert made_public.status_code == 200 and made_public.json()["public"] is True
        page = client.get(f"/jobs/{job}")
        assert page.status_code == 200 and "a shared teapot" in page.text
        assert client.get(f"/jobs/{job}/download/glb").status_code == 200
        # Public means visible, not editable: no owner actions for strangers.
        assert "Make private" not in page.text and "/delete" not in page.text
        private = client.post(
            f"/api/v1/jobs/{job}/visibility", json={"public": False}, headers=alice
        )
        assert private.json()["public"] is False
        assert client.get(f"/jobs/{job}").status_code == 404
        for body in ({}, {"public": "maybe"}, {"public": 3}, {"public": "true"}):
            bad = client.post(f"/api/v1/jobs/{job}/visibility", json=body, headers=alice)
            assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_failed"
            assert bad.json()["error"]["details"][0]["loc"][:2] == ["body", "public"]


def test_api_download_formats(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        alice, bob = _keys(client)
        job = make_job(client, "alice")
        glb = client.get(f"/api/v1/jobs/{job}/download/glb", headers=alice)
        assert glb.status_code == 200 and len(glb_bytes(glb.content).faces) == 12
        stl = client.get(f"/api/v1/jobs/{job}/download/stl", headers=alice)
        assert (
            stl.status_code == 200 and f"shapefarm-{job}.stl" in stl.headers["content-disposition"]
        )
        assert client.get(f"/api/v1/jobs/{job}/download/fbx", headers=alice).status_code == 404
        assert client.get(f"/api/v1/jobs/{job}/download/glb", headers=bob).status_code == 404
        waiting = make_job(client, "alice", state=JobState.QUEUED)
        early = client.get(f"/api/v1/jobs/{waiting}/download/glb", headers=alice)
        assert early.status_code == 409 and "no model yet" in early.json()["error"]["message"]
        assert early.json()["error"]["code"] == "model_not_ready"


def test_api_delete_does_not_give_quota_back(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        alice, _ = _keys(client)
        # Submitted the way users do (the profile shows the count admission checks).
        ids = []
        for _ in range(3):
            made = client.post("/api/v1/jobs", json={"prompt": "a cup"}, headers=alice)
            assert made.status_code == 201, made.text
            ids += [job["id"] for job in made.json()["jobs"]]
        for job in ids[:2]:
            assert client.delete(f"/api/v1/jobs/{job}", headers=alice).status_code == 204
        client.cookies.clear()
        login(client, "alice")
        assert "3 of 20 models" in client.get("/profile").text


def test_api_submit_estimates_the_queue_once_per_request(tmp_path: Path) -> None:
    # queue_positions plans over every queued job; once per variant held the event
    # loop (and dispatch) for tens of ms per request under load (bench/dispatch.py).
    with app_client(tmp_path) as client:
        alice, _ = _keys(client)
        state = farm(client)
        calls = []
        original = state.positions
        state.positions = lambda: calls.append(1) or original()
        created = client.post(
            "/api/v1/jobs", json={"prompt": "a mug", "steps": 8, "variants": 2}, headers=alice
        )
        assert created.status_code == 201, created.text
        assert len(calls) == 1
        assert all("position" in job["progress"] for job in created.json()["jobs"])


def test_api_routes_come_first_and_share_no_path_with_the_pages() -> None:
    # The API's routes are tried first (its hot requests skip the page routes); that
    # changes no answer only as long as no other route matches an /api/ path, nor an
    # API route any other path.
    from starlette.routing import Match

    from coordinator import app
    from coordinator.api import v1

    ours = {id(route) for route in v1.ROUTES}
    every = app.routes()
    assert {id(route) for route in every[: len(ours)]} == ours
    job = "/api/v1/jobs/j1"
    probes = ["/api/v1/jobs", job, f"{job}/events", f"{job}/download/glb", f"{job}/visibility",
              f"{job}/image", "/api/v1/openapi.json", "/api/v1/nope", "/api/x"]  # fmt: skip
    for route in every[len(ours) :]:
        path = getattr(route, "path", "")
        assert not path.startswith("/api/"), path
        for probe in probes:
            for method in ("GET", "POST", "DELETE"):
                scope = {"type": "http", "path": probe, "method": method, "root_path": ""}
                assert route.matches(scope)[0] == Match.NONE, (probe, path)
    for route in v1.ROUTES:
        assert route.path.startswith("/api/v1/")
