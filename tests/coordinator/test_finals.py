"""The farm's brief memory of finished jobs: bounded in time, count and bytes."""

from __future__ import annotations

from coordinator.farm import finals
from coordinator.farm.finals import FinalRow, FinalRows


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _row(at: float, job_id: str = "j") -> FinalRow:
    return FinalRow({"id": job_id, "state": "succeeded"}, {"job_id": job_id}, at)


def test_finals_rows_expire_after_keep_s_and_a_forget_drops_them() -> None:
    clock = Clock()
    rows = FinalRows(clock)
    rows.keep("a", _row(clock.now, "a"), b"glTF-a")
    rows.keep("b", _row(clock.now, "b"))
    assert rows.get("a") is not None and rows.get("b") is not None
    rows.forget("b")
    assert rows.get("b") is None
    clock.now += finals.KEEP_S
    assert rows.get("a") is None and rows.take_model("a") is None  # too old: read it
    assert rows.model_bytes == 0


def test_finals_models_given_out_once_within_their_bounds(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(finals, "MODELS_BYTES", 10)
    monkeypatch.setattr(finals, "MODEL_MAX_BYTES", 6)
    clock = Clock()
    rows = FinalRows(clock)
    rows.keep("big", _row(clock.now), b"x" * 7)  # over the per-model bound: not kept
    assert rows.take_model("big") is None and rows.get("big") is not None
    rows.keep("a", _row(clock.now), b"a" * 6)
    rows.keep("b", _row(clock.now), b"b" * 6)  # over the total: the oldest model goes
    assert rows.model_bytes == 6
    assert rows.take_model("a") is None and rows.get("a") is not None
    assert rows.take_model("b") == b"b" * 6
    assert rows.take_model("b") is None  # once
    assert rows.model_bytes == 0


def test_finals_at_most_keep_max_jobs(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(finals, "KEEP_MAX", 3)
    clock = Clock()
    rows = FinalRows(clock)
    for i in range(5):
        rows.keep(str(i), _row(clock.now, str(i)), b"m")
    assert [rows.get(str(i)) is not None for i in range(5)] == [False, False, True, True, True]
    assert rows.model_bytes == 3
