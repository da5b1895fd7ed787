from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from agent import spool as spool_module
from agent.spool import Spool, SpoolCorruptError, SpooledResult, SpoolError


def entry(job: str = "job-1", attempt: int = 1, glb: bytes = b"glTF-bytes") -> SpooledResult:
    return SpooledResult(job, attempt, (("glb", glb), ("preview", b"\x89PNG")), 8, 12, 1.5)


def test_spool_put_then_load_round_trips(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put(entry())
    assert spool.load("job-1", 1) == entry()
    assert ("job-1", 1) in spool


def test_spool_pending_lists_every_entry_and_survives_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put(entry("a", 1))
    spool.put(entry("b", 2))
    assert sorted(Spool(tmp_path).pending()) == [("a", 1), ("b", 2)]


def test_spool_delete_forgets_the_entry(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put(entry())
    assert spool.delete("job-1", 1) is True
    assert spool.pending() == []
    assert spool.delete("job-1", 1) is False
    with pytest.raises(SpoolError):
        spool.load("job-1", 1)


def test_spool_put_replaces_an_earlier_copy(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put(entry(glb=b"old"))
    spool.put(entry(glb=b"new"))
    assert spool.load("job-1", 1).artifacts[0] == ("glb", b"new")
    assert spool.pending() == [("job-1", 1)]


def test_spool_corrupt_artifact_is_quarantined_never_returned(tmp_path: Path) -> None:
    Spool(tmp_path).put(entry())
    (tmp_path / "job-1.1" / "glb").write_bytes(b"tampered")
    spool = Spool(tmp_path)  # after a restart: read back from disk and verified
    with pytest.raises(SpoolCorruptError):
        spool.load("job-1", 1)
    assert spool.pending() == []
    assert len(list((tmp_path / "quarantine").iterdir())) == 1


def test_spool_missing_manifest_is_quarantined(tmp_path: Path) -> None:
    Spool(tmp_path).put(entry())
    (tmp_path / "job-1.1" / "manifest.json").unlink()
    spool = Spool(tmp_path)
    with pytest.raises(SpoolCorruptError):
        spool.load("job-1", 1)
    assert ("job-1", 1) not in spool


def test_spool_unrecognised_entries_are_quarantined_on_listing(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    (tmp_path / "stray.txt").write_text("?")
    (tmp_path / "bad name.x").mkdir()
    spool.put(entry())
    assert spool.pending() == [("job-1", 1)]
    assert len(list((tmp_path / "quarantine").iterdir())) == 2


def test_spool_interrupted_write_is_discarded_at_start(tmp_path: Path) -> None:
    Spool(tmp_path)
    partial = tmp_path / "tmp" / "abc"
    partial.mkdir()
    (partial / "glb").write_bytes(b"half")
    spool = Spool(tmp_path)
    assert spool.pending() == []
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.parametrize("job", ["../etc", "a/b", "", "x" * 65, "a.b"])
def test_spool_refuses_job_ids_that_are_not_safe_names(tmp_path: Path, job: str) -> None:
    with pytest.raises(SpoolError):
        Spool(tmp_path).put(entry(job=job))


def test_spool_refuses_unknown_or_duplicate_artifact_kinds(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    with pytest.raises(SpoolError):
        spool.put(SpooledResult("j", 1, (("exe", b"x"),)))
    with pytest.raises(SpoolError):
        spool.put(SpooledResult("j", 1, (("glb", b"x"), ("glb", b"y"))))
    assert spool.pending() == []
    assert list((tmp_path / "tmp").iterdir()) == []


def test_spool_loads_what_it_put_from_memory_with_the_manifests_digests(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put(entry())
    # The disk copy goes bad behind the spool's back: the upload still gets the bytes
    # that were put, never the tampered ones; a restart reads the disk and refuses it.
    (tmp_path / "job-1.1" / "glb").write_bytes(b"tampered")
    loaded = spool.load("job-1", 1)
    assert loaded == entry()
    manifest = json.loads((tmp_path / "job-1.1" / "manifest.json").read_text())
    assert loaded.digests == tuple(a["sha256"] for a in manifest["artifacts"])
    assert loaded.digests[0] == hashlib.sha256(b"glTF-bytes").hexdigest()
    with pytest.raises(SpoolCorruptError):
        Spool(tmp_path).load("job-1", 1)


def test_spool_verified_load_from_disk_carries_digests(tmp_path: Path) -> None:
    Spool(tmp_path).put(entry())
    loaded = Spool(tmp_path).load("job-1", 1)
    assert loaded == entry()
    assert loaded.digests == (
        hashlib.sha256(b"glTF-bytes").hexdigest(),
        hashlib.sha256(b"\x89PNG").hexdigest(),
    )


def test_spool_memory_is_bounded_and_forgets_deleted_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "MEMORY_BYTES", 40)
    spool = Spool(tmp_path)
    spool.put(entry("a", glb=b"x" * 20))
    spool.put(entry("b", glb=b"y" * 20))  # 2 x 24 bytes > 40: "a" leaves memory
    (tmp_path / "a.1" / "glb").write_bytes(b"z" * 20)  # so "a" is read from disk
    with pytest.raises(SpoolCorruptError):
        spool.load("a", 1)
    assert spool.load("b", 1).artifacts[0] == ("glb", b"y" * 20)
    assert spool.delete("b", 1) is True
    with pytest.raises(SpoolError):
        spool.load("b", 1)  # not served from memory after its delete
    spool.put(entry("big", glb=b"w" * 100))  # larger than the memory: disk only
    (tmp_path / "big.1" / "glb").write_bytes(b"v" * 100)
    with pytest.raises(SpoolCorruptError):
        spool.load("big", 1)


def test_spool_held_entry_is_listed_and_loadable_before_it_is_written(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put(entry("older"))
    held = spool.hold(entry())
    assert held.digests[0] == hashlib.sha256(b"glTF-bytes").hexdigest()
    assert not (tmp_path / "job-1.1").exists()
    assert ("job-1", 1) in spool
    assert spool.pending() == [("older", 1), ("job-1", 1)]  # on disk first, then held
    assert spool.load("job-1", 1) == entry() and spool.recall(("job-1", 1)) == entry()
    assert Spool(tmp_path).pending() == [("older", 1)]  # a restart knows only the disk
    spool.put(held)
    assert Spool(tmp_path).load("job-1", 1) == entry()
    assert spool.pending() == [("older", 1), ("job-1", 1)]


def test_spool_held_entries_are_never_evicted_and_delete_forgets_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "MEMORY_BYTES", 40)
    spool = Spool(tmp_path)
    spool.hold(entry("a", glb=b"x" * 100))  # larger than the memory bound: still held
    spool.put(entry("b", glb=b"y" * 20))
    spool.put(entry("c", glb=b"z" * 20))
    assert spool.load("a", 1).artifacts[0] == ("glb", b"x" * 100)
    assert spool.delete("a", 1) is False  # never reached the disk
    assert ("a", 1) not in spool
    with pytest.raises(SpoolError):
        spool.load("a", 1)


def test_spool_hold_refuses_what_put_refuses(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    with pytest.raises(SpoolError):
        spool.hold(entry(job="../escape"))
    with pytest.raises(SpoolError):
        spool.hold(SpooledResult("job-1", 1, (("glb", b"a"), ("glb", b"b"))))
    assert spool.pending() == []
