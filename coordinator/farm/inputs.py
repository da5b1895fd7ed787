"""An image job's input image, read for the assign that sends it to an agent."""

from __future__ import annotations

import asyncio
import hashlib
import logging

from coordinator.store.storage import BlobStore
from protocol import Assign

log = logging.getLogger(__name__)

INPUT_KIND = "input.png"  # coordinator/services/job_images.py writes it


async def image_for(store: BlobStore, assign: Assign) -> bytes | None:
    """The input image the assign's image jobs share (None for text jobs).

    A missing or changed file is sent anyway, as the announced number of bytes: the
    agent checks the sha256 and fails the jobs, so their attempts run out and they
    fail with that reason instead of waiting forever.
    """
    ref = assign.image
    if ref is None:
        return None
    job = next(spec.job for spec in assign.jobs if spec.image is not None)
    try:
        data = await asyncio.to_thread(store.read, job, INPUT_KIND)
    except OSError as exc:
        log.error("job %s: its input image cannot be read: %s", job, exc)
        data = b""
    if len(data) != ref.size or hashlib.sha256(data).hexdigest() != ref.sha256:
        log.error("job %s: its input image on disk is not the one it was submitted with", job)
        data = (data + bytes(ref.size))[: ref.size]
    return data
