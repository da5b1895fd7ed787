"""bench/outbox.py: it measures a real claim over a backlog and refuses impossible flags."""

from __future__ import annotations

import pytest

from bench import outbox


def test_outbox_bench_claims_four_rows_of_idle_keys_each_time() -> None:
    times = outbox.measure(rows=300, keys=30, busy=3, repeat=3)
    assert len(times) == 3 and all(t > 0 for t in times)


def test_outbox_bench_refuses_fewer_idle_keys_than_senders(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        outbox.main(["--rows", "10", "--keys", "5", "--busy", "5"])
    assert exit_.value.code == 2
    assert "need 0 <= --busy <= --keys - 4" in capsys.readouterr().err
