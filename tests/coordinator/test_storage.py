"""The local blob store: files appear whole or not at all, stale conversions go."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from coordinator.store import storage
from coordinator.store.storage import LocalBlobStore

JOB = "Xq3vN0aBcDeFgHiJ"


def temp_files(store: LocalBlobStore) -> list[Path]:
    return sorted(store.root.glob("*/.incoming-*.part"))


def test_storage_write_makes_the_folder_and_leaves_no_temp_file(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "models")
    store.write(JOB, "glb", b"glTF one")
    path = store.path(JOB, "glb")
    assert path.read_bytes() == b"glTF one"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # as mkstemp made them before
    assert temp_files(store) == []


def test_storage_folder_removed_behind_the_store_is_made_again(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "models")
    store.write(JOB, "glb", b"first")
    store.delete(JOB)
    store.path(JOB, "glb").parent.rmdir()  # an operator cleaned up the empty folder
    store.write(JOB, "glb", b"second")
    assert store.read(JOB, "glb") == b"second"


def test_storage_new_model_drops_the_conversions_of_the_old_one(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "models")
    store.write(JOB, "glb", b"old model")
    for kind in storage.DERIVED:
        store.write(JOB, kind, b"converted from the old model")
    store.write(JOB, "png", b"preview")
    store.write(JOB, "glb", b"new model")
    assert [store.exists(JOB, kind) for kind in storage.DERIVED] == [False] * 4
    assert store.read(JOB, "glb") == b"new model"
    assert store.read(JOB, "png") == b"preview"  # not a conversion: kept


def test_storage_conversion_written_after_its_model_was_deleted_is_removed(
    tmp_path: Path,
) -> None:
    store = LocalBlobStore(tmp_path / "models")
    store.write(JOB, "stl", b"converted while the job was deleted")
    assert not store.exists(JOB, "stl")
    assert temp_files(store) == []


def test_storage_temp_name_taken_by_another_writer_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalBlobStore(tmp_path / "models")
    store.write(JOB, "glb", b"x")  # the folder exists
    folder = store.path(JOB, "glb").parent
    names = iter([7, 7, 8])
    monkeypatch.setattr(storage, "_TEMP_NAMES", names)
    taken = folder / f".incoming-{os.getpid()}-7.part"
    taken.write_bytes(b"another writer's half-written file")
    store.write(JOB, "png", b"preview")
    assert taken.read_bytes() == b"another writer's half-written file"  # not clobbered
    assert store.read(JOB, "png") == b"preview"
    assert temp_files(store) == [taken]


def test_storage_failed_write_leaves_neither_file_nor_temp(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "models")
    store.write(JOB, "glb", b"kept")

    def produce(out: object) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        store.write_with(JOB, "glb", produce)
    assert store.read(JOB, "glb") == b"kept"
    assert temp_files(store) == []
    assert store.sweep_partials() == 0
