"""A finished job with a model in the store, as a result upload leaves it, on a real
coordinator: for the tests of what is made from stored models (conversions, the
viewer's copy)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from coordinator.cli.admin_cli import create_user
from coordinator.meshes.glb import normalise_glb
from coordinator.meshes.glbcheck import GlbLimits
from coordinator.store import models
from scheduler.lifecycle import JobState
from tests.support.coordinators import (
    PASSWORD,
    RunningCoordinator,
    make_settings,
    running_coordinator,
)


async def store_model(coordinator: RunningCoordinator, glb: bytes) -> str:
    """A public succeeded job whose normalised GLB is in the store, as an upload leaves it."""
    farm = coordinator.farm
    stored, info = normalise_glb(glb, GlbLimits())
    async with farm.sessions() as db:
        owner = await db.scalar(models.User.__table__.select().with_only_columns(models.User.id))
        now = farm.clock()
        job = models.Job(
            id=secrets.token_urlsafe(12), user_id=owner, prompt="a wavy sheet", seed=1,
            guidance=15.0, steps=8, state=JobState.SUCCEEDED, public=True, created_at=now,
            enqueued_at=now, finished_at=now,
        )  # fmt: skip
        db.add(job)
        farm.store.write(job.id, "glb", stored)
        db.add(
            models.Result(
                job_id=job.id, attempt=1, agent_id=None, glb_size=len(stored),
                glb_sha256="0" * 64, has_preview=False, vertices=info.vertices,
                faces=info.faces, seconds=1.0, created_at=now,
            )
        )  # fmt: skip
        await db.commit()
        return job.id


async def started(tmp: Path, **overrides: Any) -> Any:
    settings = make_settings(tmp, **overrides)
    await create_user(settings, "alice", PASSWORD, None, is_admin=False)
    return running_coordinator(settings)
