"""Helpers for the web UI tests: jobs with stored results, API keys, users, tiers."""

from __future__ import annotations

import io
import re
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import trimesh
from starlette.testclient import TestClient

from coordinator.services import apikeys, auth, job_images
from coordinator.store import models
from scheduler.lifecycle import JobState
from tests.support.coordinators import PASSWORD
from tests.support.webclient import csrf

T = TypeVar("T")
NEW_KEY = re.compile(r'id="new-key"[^>]*>([^<]+)<')
# A 1x1 PNG: enough for the preview route and <img>.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63f8cfc0f01f0005000201e2a1dc3d0000000049454e44ae426082"
)

ROOMY_TIERS = """
[tiers.free]
rank = 0
weight = 1.0
daily_quota = 10000
max_concurrent = 1
max_steps = 64
max_variants = 4
max_guidance = 15.0
max_queued = 10000
"""


def roomy_tiers(tmp: Path) -> Path:
    """A tiers file whose quotas no test reaches (the shipped free tier allows 20 a day)."""
    path = tmp / "tiers.toml"
    path.write_text(ROOMY_TIERS)
    return path


def box_glb() -> bytes:
    return bytes(trimesh.creation.box().export(file_type="glb"))


def run(client: TestClient, fn: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine in the app's event loop (the TestClient portal)."""
    assert client.portal is not None, "use the client inside its `with` block"
    return client.portal.call(fn)


def farm(client: TestClient) -> Any:
    return client.app.state.farm  # type: ignore[attr-defined]


def user_id(client: TestClient, username: str) -> int:
    async def find() -> int:
        async with farm(client).sessions() as db:
            from sqlalchemy import select

            found = await db.scalar(select(models.User.id).where(models.User.username == username))
            assert found is not None, username
            return int(found)

    return run(client, find)


def make_admin(client: TestClient, username: str) -> None:
    uid = user_id(client, username)

    async def promote() -> None:
        async with farm(client).sessions() as db:
            user = await db.get(models.User, uid)
            assert user is not None
            user.is_admin = True
            await db.commit()

    run(client, promote)


async def create_job(
    the_farm: Any,
    uid: int,
    prompt: str = "a lamp",
    *,
    state: str = JobState.SUCCEEDED,
    public: bool = False,
    preview: bool = True,
    png: bytes = PNG,
    glb: bytes | None = None,
    image: bytes | None = None,
) -> str:
    """A job row straight in the database; a succeeded one gets a GLB (and PNG) stored.
    ``image``: an image job's picture (PNG, JPEG or WebP), re-encoded and stored."""
    now = the_farm.clock()
    picture = None if image is None else job_images.normalize(image)
    job = models.Job(
        id=secrets.token_urlsafe(12),
        user_id=uid,
        prompt=prompt,
        seed=7,
        guidance=15.0,
        steps=8,
        state=state,
        public=public,
        created_at=now,
        enqueued_at=now,
        model="shap-e" if picture is None else "shap-e-img2img",
        **job_images.columns(picture),
    )
    if picture is not None:
        job_images.store_for(the_farm.store, [job], picture)
    async with the_farm.sessions() as db:
        db.add(job)
        if state == JobState.SUCCEEDED:
            glb = glb or box_glb()
            the_farm.store.write(job.id, "glb", glb)
            if preview:
                the_farm.store.write(job.id, "png", png)
            job.finished_at = now
            db.add(
                models.Result(
                    job_id=job.id,
                    attempt=1,
                    agent_id=None,
                    glb_size=len(glb),
                    glb_sha256="0" * 64,
                    has_preview=preview,
                    vertices=8,
                    faces=12,
                    seconds=3.5,
                    created_at=now,
                )
            )
        await db.commit()
    if state == JobState.QUEUED:
        the_farm.enqueue(job)
    return job.id


def make_job(
    client: TestClient,
    owner: str,
    prompt: str = "a lamp",
    *,
    state: str = JobState.SUCCEEDED,
    public: bool = False,
    preview: bool = True,
    image: bytes | None = None,
) -> str:
    """:func:`create_job` for ``owner`` through a TestClient (``image``: an image job's)."""
    uid = user_id(client, owner)
    return run(
        client,
        lambda: create_job(
            farm(client), uid, prompt, state=state, public=public, preview=preview, image=image
        ),
    )


def job_exists(client: TestClient, job_id: str) -> bool:
    async def check() -> bool:
        async with farm(client).sessions() as db:
            return await db.get(models.Job, job_id) is not None

    return run(client, check)


def api_key(client: TestClient) -> str:
    """Create an API key through the profile page as the logged-in user; the secret."""
    response = client.post(
        "/profile/api-keys",
        data={
            "csrf_token": csrf(client, "/profile"),
            "name": "tests",
        },
    )
    assert response.status_code == 201, response.text
    match = NEW_KEY.search(response.text)
    assert match, "the new key is not shown"
    return match.group(1)


def key_id_of(secret: str) -> str:
    return secret.split(".")[1]


def make_key(client: TestClient, owner: str, name: str = "tests") -> tuple[str, str]:
    """A key for ``owner`` without going through the page: (key id, secret)."""
    uid = user_id(client, owner)

    async def create() -> tuple[str, str]:
        async with farm(client).sessions() as db:
            user = await db.get(models.User, uid)
            assert user is not None
            key, secret = await apikeys.create(db, user, name, farm(client).clock())
            await db.commit()
            return key.id, secret

    return run(client, create)


def password_ok(client: TestClient, username: str, password: str = PASSWORD) -> bool:
    uid = user_id(client, username)

    async def check() -> bool:
        async with farm(client).sessions() as db:
            user = await db.get(models.User, uid)
            assert user is not None
            return auth.verify_password(user.password_hash, password)

    return run(client, check)


def glb_bytes(data: bytes) -> trimesh.Trimesh:
    return trimesh.load(io.BytesIO(data), file_type="glb", force="mesh")


def make_agent(client: TestClient, owner: str, name: str = "a test agent") -> str:
    """An enrolled (not connected) agent of ``owner``; returns its id."""
    from coordinator.services.enrollment import enroll

    uid = user_id(client, owner)

    async def create() -> str:
        async with farm(client).sessions() as db:
            user = await db.get(models.User, uid)
            assert user is not None
            agent, _ = await enroll(db, user, name, farm(client).clock(), True)
            await db.commit()
            return agent.id

    return run(client, create)
