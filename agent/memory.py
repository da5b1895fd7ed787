"""The largest batch that fits the card: from its free memory and the owner's VRAM cap.

Measured after the model is loaded, so the weights are already accounted for.
The per-job figure is an estimate for Shap-E at the default 64³ grid (fp16,
guidance doubling the sampled batch, 65 536-point decoding queries); if it is
wrong for a card, the runner's out-of-memory fallback halves the batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)

PER_JOB_MB = 1536
RESERVE_MB = 512  # the CUDA context, fragmentation, the desktop on a shared card


@dataclass(frozen=True, slots=True)
class BatchFit:
    batch: int
    why: str


def fitting_batch(
    max_batch: int, *, total_mb: int, free_mb: int | None, cap_mb: int | None
) -> BatchFit:
    """How many jobs one GPU pass may carry; ``free_mb`` None means not a CUDA card."""
    if free_mb is None or total_mb <= 0:
        return BatchFit(max_batch, "no CUDA memory to measure: --max-batch as given")
    budget = free_mb - RESERVE_MB
    if cap_mb is not None:
        used = total_mb - free_mb  # the model's weights and anything else on the card
        budget = min(budget, cap_mb - used - RESERVE_MB)
    fits = max(1, budget // PER_JOB_MB)
    batch = min(max_batch, fits)
    cap = f", capped at {cap_mb} MB" if cap_mb is not None else ""
    return BatchFit(batch, f"{free_mb} MB free of {total_mb} MB{cap}: batches of {batch}")


def cuda_memory_mb(device: str) -> tuple[int, int] | None:
    """(free, total) MB of a CUDA device, or None (CPU, mps, no torch)."""
    if not device.startswith("cuda"):
        return None
    try:
        import torch

        index = int(device.partition(":")[2] or 0)
        free, total = torch.cuda.mem_get_info(index)
    except Exception as exc:  # no driver, no such device: fall back to --max-batch
        logger.debug("cannot read CUDA memory: %s", exc)
        return None
    return int(free) // 2**20, int(total) // 2**20
