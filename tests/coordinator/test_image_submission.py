"""Image jobs from outside: the API and the generate form over HTTP, what is stored (and
what is not when a picture is refused), who may see the picture, which agents count."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from starlette.testclient import TestClient

from coordinator.farm.live import AgentConn
from coordinator.services.job_images import MAX_SUBMIT_BODY_BYTES
from coordinator.store import models
from protocol import IMAGE_MODEL, TEXT_MODEL, Capabilities, CoordinatorSession, Hello
from protocol.limits import MAX_IMAGE_UPLOAD_BYTES
from tests.support.images import encoded
from tests.support.protocol import hello
from tests.support.ui import api_key, farm, run
from tests.support.webclient import app_client, csrf, login, register


def _alice(client: TestClient) -> dict[str, str]:
    register(client, "alice")
    headers = {"Authorization": f"Bearer {api_key(client)}"}
    return headers


def _stored(client: TestClient) -> tuple[int, list[str]]:
    """Jobs in the database, and the input pictures in the blob store."""

    async def count() -> int:
        async with farm(client).sessions() as db:
            return int(await db.scalar(select(func.count()).select_from(models.Job)) or 0)

    pictures = sorted(p.name for p in farm(client).store.root.glob("*/*.input.png"))
    return run(client, count), pictures


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_image_api_submission_stores_our_png_per_job(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        alice = _alice(client)
        body = {"image": b64(encoded("WEBP", (640, 480))), "variants": 2, "steps": 8}
        created = client.post("/api/v1/jobs", json=body, headers=alice)
        assert created.status_code == 201, created.text
        jobs = created.json()["jobs"]
        assert [job["kind"] for job in jobs] == ["image", "image"]
        assert jobs[0]["image"]["sha256"] == jobs[1]["image"]["sha256"]
        assert (jobs[0]["image"]["width"], jobs[0]["image"]["height"]) == (640, 480)
        assert jobs[0]["prompt"] == "" and jobs[0]["progress"]["agents_online"] == 0
        count, pictures = _stored(client)
        assert count == 2 and pictures == sorted(f"{job['id']}.input.png" for job in jobs)
        png = client.get(jobs[0]["image"]["url"], headers=alice)
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert png.content[:8] == b"\x89PNG\r\n\x1a\n"

        async def model() -> str:
            async with farm(client).sessions() as db:
                job = await db.get(models.Job, jobs[0]["id"])
                assert job is not None
                return str(job.model)

        assert run(client, model) == IMAGE_MODEL
        text = client.post("/api/v1/jobs", json={"prompt": "a mug"}, headers=alice).json()
        assert text["jobs"][0]["kind"] == "text" and "image" not in text["jobs"][0]
        no_image = client.get(f"/api/v1/jobs/{text['jobs'][0]['id']}/image", headers=alice)
        assert no_image.status_code == 404


def _refused(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    return error


def test_image_api_refusals_store_nothing(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        alice = _alice(client)
        polyglot = encoded("PNG", (64, 64)) + b"PK\x03\x04hidden archive"
        for data, code, words in (
            (b"GIF89a" + b"\0" * 64, "image_unsupported", "not a PNG, JPEG or WebP"),
            (polyglot, "image_invalid", "after the end of the image"),
            (encoded("JPEG", (200, 200), noisy=True)[:3000], "image_invalid", "truncated"),
            (encoded("PNG", (4100, 20)), "image_too_large", "4096×4096"),
        ):
            response = client.post("/api/v1/jobs", json={"image": b64(data)}, headers=alice)
            error = _refused(response, 422, code)
            assert words in error["message"]
            assert error["details"][0]["loc"] == ["body", "image"]
        # Over 10 MB of picture: the schema's bound (the body itself is within its limit).
        big = b64(b"\x89PNG\r\n\x1a\n" + bytes(MAX_IMAGE_UPLOAD_BYTES))
        error = _refused(client.post("/api/v1/jobs", json={"image": big}, headers=alice), 422,
                         "validation_failed")  # fmt: skip
        assert error["details"][0]["loc"] == ["body", "image"]
        # A body past the submission limit is not even read.
        huge = b"x" * (MAX_SUBMIT_BODY_BYTES + 1)
        _refused(client.post("/api/v1/jobs", content=huge, headers=alice), 413, "body_too_large")
        # No prompt and no picture: the prompt is missing.
        error = _refused(client.post("/api/v1/jobs", json={}, headers=alice), 422,
                         "validation_failed")  # fmt: skip
        assert error["details"][0]["loc"] == ["body", "prompt"]
        assert _stored(client) == (0, [])


def test_image_form_upload_and_refusal(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        token = csrf(client, "/")
        htmx = {"HX-Request": "true", "X-CSRF-Token": token}
        bad = client.post(
            "/jobs",
            data={"prompt": ""},
            files={"image": ("cat.png", b"<svg/>", "image/png")},
            headers=htmx,
        )
        assert bad.status_code == 422
        assert 'hx-swap-oob="innerHTML:#image-error"><p class="error">' in bad.text
        assert "not a PNG, JPEG or WebP" in bad.text
        assert _stored(client) == (0, [])
        good = client.post(
            "/jobs",
            data={"prompt": "my chair", "steps": "8"},
            files={"image": ("chair.jpg", encoded("JPEG", (300, 200)), "image/jpeg")},
            headers=htmx,
        )
        assert good.status_code == 200, good.text
        assert "my chair" in good.text and "/input.png" in good.text  # thumbnail in the row
        count, pictures = _stored(client)
        assert count == 1 and len(pictures) == 1
        job_id = pictures[0].removesuffix(".input.png")
        page = client.get(f"/jobs/{job_id}")
        assert f'src="/jobs/{job_id}/input.png"' in page.text
        assert 'width="300" height="200"' in page.text
        assert "No agent that makes models from pictures is online" in page.text  # it waits
        assert client.get(f"/jobs/{job_id}/input.png").status_code == 200
        # Neither another user nor a stranger sees a private job's picture.
        client.post("/logout", data={"csrf_token": csrf(client, "/")})
        assert client.get(f"/jobs/{job_id}/input.png").status_code == 404
        register(client, "bob")
        assert client.get(f"/jobs/{job_id}/input.png").status_code == 404
        client.post("/logout", data={"csrf_token": csrf(client, "/")})
        login(client, "alice")
        empty = client.post(
            "/jobs", data={"prompt": "  "}, headers={**htmx, "X-CSRF-Token": csrf(client, "/")}
        )
        assert empty.status_code == 422 and "or choose a picture" in empty.text


def _conn(versions: tuple[int, ...], models: tuple[str, ...]) -> AgentConn:
    session = CoordinatorSession(1 << 20)
    message = hello(versions=versions, capabilities=Capabilities(models=models))
    assert isinstance(session.receive(message), Hello)

    async def nothing(*args: object) -> None:
        return None

    return AgentConn("a1", 1, "a", session, nothing, nothing, message.capabilities, True)


def test_image_model_only_counts_over_protocol_3() -> None:
    both = (TEXT_MODEL, IMAGE_MODEL)
    assert _conn((1, 2, 3), both).models == frozenset(both)
    assert _conn((1, 2), both).models == frozenset({TEXT_MODEL})  # could not read image jobs
    assert _conn((1, 2), both).snapshot(free=True).models == frozenset({TEXT_MODEL})
    assert _conn((3,), (IMAGE_MODEL,)).snapshot(free=True).models == frozenset({IMAGE_MODEL})
