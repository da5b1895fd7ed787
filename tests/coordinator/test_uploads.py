"""Where a held result upload's bytes wait until the intake stores them: memory for a
small one within the farm's budget, a temp file for anything else."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from coordinator.store.storage import LocalBlobStore
from coordinator.store.uploads import (
    INCOMING,
    MEMORY_UPLOAD_MAX,
    MemoryUpload,
    UploadFile,
    UploadMemory,
    open_upload,
)
from protocol import Artifact, Result


def header(*parts: tuple[str, bytes]) -> Result:
    artifacts = tuple(
        Artifact(kind, len(data), hashlib.sha256(data).hexdigest())  # type: ignore[arg-type]
        for kind, data in parts
    )
    return Result(job="job1", attempt=1, stream=1, artifacts=artifacts)


def fill(sink: MemoryUpload | UploadFile, data: bytes, chunk: int = 1000) -> None:
    for at in range(0, len(data), chunk):
        sink.write(data[at : at + chunk])
    sink.close()


def incoming(store: LocalBlobStore) -> list[Path]:
    folder = store.scratch / INCOMING
    return sorted(folder.iterdir()) if folder.is_dir() else []


def test_a_small_upload_is_held_in_memory_and_read_back_by_artifact(tmp_path: Path) -> None:
    store, memory = LocalBlobStore(tmp_path / "models"), UploadMemory()
    glb, png = b"g" * 5000, b"p" * 1234
    sink = open_upload(store, memory, header(("glb", glb), ("preview", png)))
    assert isinstance(sink, MemoryUpload)
    assert memory.used == len(glb) + len(png)
    fill(sink, glb + png)
    assert sink.read_parts() == {"glb": glb, "preview": png}
    assert incoming(store) == []
    sink.remove()
    sink.remove()  # idempotent: given back once
    assert memory.used == 0


def test_a_large_upload_or_a_spent_budget_goes_to_a_temp_file(tmp_path: Path) -> None:
    store, memory = LocalBlobStore(tmp_path / "models"), UploadMemory(budget=10_000)
    large = open_upload(store, memory, header(("glb", b"x" * (MEMORY_UPLOAD_MAX + 1))))
    assert isinstance(large, UploadFile) and memory.used == 0
    large.remove()
    held = open_upload(store, memory, header(("glb", b"a" * 6000)))
    spilled = open_upload(store, memory, header(("glb", b"b" * 6000)))  # 12,000 > budget
    assert isinstance(held, MemoryUpload) and isinstance(spilled, UploadFile)
    assert memory.used == 6000 and len(incoming(store)) == 1
    fill(spilled, b"b" * 6000)
    assert spilled.read_parts() == {"glb": b"b" * 6000}
    spilled.remove()
    held.abort()  # a dropped connection
    assert memory.used == 0 and incoming(store) == []
    again = open_upload(store, memory, header(("glb", b"c" * 9000)))
    assert isinstance(again, MemoryUpload)  # the budget came back
    again.remove()


def test_a_memory_upload_takes_no_more_than_its_header_declared(tmp_path: Path) -> None:
    memory = UploadMemory()
    sink = open_upload(LocalBlobStore(tmp_path / "models"), memory, header(("glb", b"12345")))
    assert isinstance(sink, MemoryUpload)
    sink.write(b"1234")
    with pytest.raises(ValueError, match="more than its header declared"):
        sink.write(b"56")
    sink.abort()
    with pytest.raises(ValueError, match="removed"):
        sink.write(b"5")
    assert memory.used == 0


def test_the_budget_holds_across_threads_removing_uploads(tmp_path: Path) -> None:
    """Reserved on the event loop, released by the intake's threads: the count stays exact."""
    store, memory = LocalBlobStore(tmp_path / "models"), UploadMemory(budget=10**9)
    sinks = [open_upload(store, memory, header(("glb", b"z" * 100))) for _ in range(2000)]
    assert memory.used == 200_000

    def remove_all() -> None:
        for sink in sinks:
            sink.remove()  # every sink removed by four threads at once: released once

    threads = [threading.Thread(target=remove_all) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert memory.used == 0
