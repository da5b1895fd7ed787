"""Downloads of converted models over a real uvicorn server: once, cached, limited."""

from __future__ import annotations

import asyncio
import io
import secrets
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import pytest
import trimesh

from coordinator.meshes.glb import Mesh
from coordinator.meshes.glbcheck import GlbLimits
from coordinator.store import modelfiles
from coordinator.store.storage import READ_BYTES, FileReader, LocalBlobStore
from tests.support import glbbombs
from tests.support.coordinators import (
    wait_for,
)
from tests.support.stored_models import started, store_model


async def test_modelfiles_conversion_runs_once_then_comes_from_the_disk_cache(
    tmp_path: Path,
) -> None:
    async with (
        await started(tmp_path) as coordinator,
        httpx.AsyncClient(base_url=coordinator.http, timeout=60) as http,
    ):
        job = await store_model(coordinator, glbbombs.mesh_glb(*glbbombs.grid(2000)))
        first = await http.get(f"/jobs/{job}/download/obj")
        cached = coordinator.farm.store.path(job, "obj")
        made_at = cached.stat().st_mtime_ns
        second = await http.get(f"/jobs/{job}/download/obj")
        api = await http.get(f"/api/v1/jobs/{job}/download/obj")  # not the owner: no key
        assert first.status_code == second.status_code == 200 and api.status_code == 401
        assert first.content == second.content == cached.read_bytes()
        assert first.headers["content-length"] == str(len(first.content))
        assert cached.stat().st_mtime_ns == made_at
        assert coordinator.farm.models.conversions == 1
        mesh = trimesh.load(io.BytesIO(second.content), file_type="obj", process=False)
        assert len(mesh.faces) == len(glbbombs.grid(2000)[1])  # type: ignore[attr-defined]
        # Deleting the job deletes its conversions with it.
        await asyncio.to_thread(coordinator.farm.store.delete, job)
        assert not cached.exists()


async def test_modelfiles_concurrent_downloads_wait_for_one_conversion(tmp_path: Path) -> None:
    async with (
        await started(tmp_path) as coordinator,
        httpx.AsyncClient(base_url=coordinator.http, timeout=60) as http,
    ):
        job = await store_model(coordinator, glbbombs.huge_mesh(100_000))
        replies = await asyncio.gather(
            *(http.get(f"/jobs/{job}/download/{fmt}") for fmt in ["stl", "ply"] * 5)
        )
        assert {r.status_code for r in replies} == {200}
        assert len({r.content for r in replies}) == 2  # one STL and one PLY, each made once
        assert coordinator.farm.models.conversions == 2


async def test_modelfiles_conversions_run_at_most_the_limit_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock, release = threading.Lock(), threading.Event()
    running: list[int] = [0, 0]  # now, most at once

    def slow_write(mesh: Mesh, fmt: str, out: BinaryIO) -> None:
        with lock:
            running[0] += 1
            running[1] = max(running)
        release.wait(30)
        out.write(b"converted")
        with lock:
            running[0] -= 1

    monkeypatch.setattr(modelfiles, "write_mesh", slow_write)
    async with (
        await started(tmp_path, max_conversions=2) as coordinator,
        httpx.AsyncClient(base_url=coordinator.http, timeout=60) as http,
    ):
        glb = glbbombs.mesh_glb(*glbbombs.grid(50))
        jobs = [await store_model(coordinator, glb) for _ in range(3)]
        downloads = [
            asyncio.create_task(http.get(f"/jobs/{job}/download/{fmt}"))
            for job in jobs
            for fmt in ("obj", "stl")
        ]

        async def all_waiting() -> bool:
            return running[0] == 2 and len(coordinator.farm.models._pending) == 6

        await wait_for(all_waiting, 30, "two conversions running and six wanted", 0.01)
        # Six conversions wanted, two slots: two run and the rest wait for one.
        assert running[0] == 2 and coordinator.farm.models.conversions == 2
        release.set()
        replies = await asyncio.gather(*downloads)
        assert [r.content for r in replies] == [b"converted"] * 6
        assert running[1] == 2 and coordinator.farm.models.conversions == 6


async def test_modelfiles_healthz_answers_during_four_big_conversions(tmp_path: Path) -> None:
    async with (
        await started(tmp_path) as coordinator,
        httpx.AsyncClient(base_url=coordinator.http, timeout=120) as http,
    ):
        glb = glbbombs.huge_mesh(400_000)
        jobs = [await store_model(coordinator, glb) for _ in range(4)]
        downloads = [asyncio.create_task(http.get(f"/jobs/{job}/download/obj")) for job in jobs]

        async def converting() -> bool:
            return bool(coordinator.farm.models.conversions)

        await wait_for(converting, 30, "a conversion to start", 0.01)
        slowest, answered, began = 0.0, 0, time.perf_counter()
        async with httpx.AsyncClient(base_url=coordinator.http, timeout=30) as probe:
            while not all(d.done() for d in downloads):
                start = time.perf_counter()
                assert (await probe.get("/healthz")).status_code == 200
                slowest = max(slowest, time.perf_counter() - start)
                answered += 1
        converting_s = time.perf_counter() - began
        replies = await asyncio.gather(*downloads)
        assert {r.status_code for r in replies} == {200}
        assert coordinator.farm.models.conversions == 4
        print(f"slowest /healthz {slowest:.3f} s of {answered} during {converting_s:.2f} s")
        # Relative, not a wall-clock budget (the machine may be loaded): a conversion on
        # the event loop would hold /healthz for as long as that conversion runs, i.e. at
        # least a third of the time the four take at this conversion limit.
        assert answered >= 3, f"/healthz answered {answered} times in {converting_s:.2f} s"
        assert slowest < max(0.5, converting_s / 3), (
            f"/healthz took {slowest:.2f} s during {converting_s:.2f} s of conversions"
        )


@pytest.mark.parametrize("size", [0, 10, READ_BYTES, 2 * READ_BYTES + 7])
async def test_modelfiles_stream_the_whole_file_with_one_read_per_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    store = LocalBlobStore(tmp_path / "models")
    data = secrets.token_bytes(size)
    store.write("job-1", "glb", data)
    files = modelfiles.ModelFiles(store, GlbLimits(), 1)
    hops = 0
    to_thread = asyncio.to_thread

    async def counted(func: Any, /, *args: Any) -> Any:
        nonlocal hops
        hops += 1
        return await to_thread(func, *args)

    monkeypatch.setattr(modelfiles.asyncio, "to_thread", counted)
    model = await files.open("job-1", "glb")
    got = b"".join([chunk async for chunk in model.chunks()])
    assert got == data and model.size == size
    if size <= READ_BYTES:  # read whole and closed in the hop that opened it
        assert model.reader is None and model.first == data
    else:
        assert isinstance(model.reader, FileReader) and model.reader.file.closed
    # Opening reads the first chunk; no read past the end to find it.
    assert hops == max(1, -(-size // READ_BYTES))
