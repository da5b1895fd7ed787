from __future__ import annotations

from agent.memory import PER_JOB_MB, RESERVE_MB, fitting_batch


def test_memory_batch_fits_the_free_memory() -> None:
    fit = fitting_batch(8, total_mb=24576, free_mb=RESERVE_MB + 3 * PER_JOB_MB + 10, cap_mb=None)
    assert fit.batch == 3


def test_memory_batch_never_exceeds_max_batch_nor_drops_below_one() -> None:
    assert fitting_batch(2, total_mb=81920, free_mb=80000, cap_mb=None).batch == 2
    assert fitting_batch(4, total_mb=4096, free_mb=100, cap_mb=None).batch == 1


def test_memory_vram_cap_limits_the_batch() -> None:
    # 24 GB card, 4 GB used by the model; the owner lends 8 GB in all.
    fit = fitting_batch(16, total_mb=24576, free_mb=20480, cap_mb=8192)
    assert fit.batch == (8192 - 4096 - RESERVE_MB) // PER_JOB_MB
    assert "capped at 8192 MB" in fit.why


def test_memory_without_cuda_keeps_max_batch() -> None:
    assert fitting_batch(4, total_mb=0, free_mb=None, cap_mb=2048).batch == 4
