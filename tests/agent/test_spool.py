from __future__ import annotations

from pathlib import Path

import pytest

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
    spool = Spool(tmp_path)
    spool.put(entry())
    (tmp_path / "job-1.1" / "glb").write_bytes(b"tampered")
    with pytest.raises(SpoolCorruptError):
        spool.load("job-1", 1)
    assert spool.pending() == []
    assert len(list((tmp_path / "quarantine").iterdir())) == 1


def test_spool_missing_manifest_is_quarantined(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put(entry())
    (tmp_path / "job-1.1" / "manifest.json").unlink()
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
