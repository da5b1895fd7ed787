"""A finished job's rows (and its model) as the commit that finished it wrote them, for
the moments after: the event streams woken by its end and the download that follows.

Kept in memory only briefly (``KEEP_S``, as long as the API-key cache trusts a row
another process may change) and within fixed bounds (``KEEP_MAX`` jobs; models of at
most ``MODEL_MAX_BYTES`` each, ``MODELS_BYTES`` in all, the oldest dropped first, each
given out once); a local change to a kept job (visibility, deletion) drops it first.
Plain values: nothing here touches the database.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

KEEP_S = 5.0  # as keycache.TTL_S
KEEP_MAX = 4096  # jobs (a burst of results)
MODEL_MAX_BYTES = 4 * 2**20  # a larger model is read from the store
MODELS_BYTES = 64 * 2**20  # all kept models together


@dataclass(frozen=True, slots=True)
class FinalRow:
    """A finished job's row and its result's (None: no model) as plain column values, as
    the transaction that finished the job committed them; ``at``: when (the farm's clock)."""

    job: Mapping[str, Any]
    result: Mapping[str, Any] | None
    at: float


class FinalRows:
    """The kept rows and models, by job id; the oldest come first (insertion order)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._rows: dict[str, FinalRow] = {}
        self._models: dict[str, bytes] = {}
        self.model_bytes = 0

    def keep(self, job_id: str, final: FinalRow, model: bytes | None = None) -> None:
        self.forget(job_id)
        self._rows[job_id] = final
        while self._rows:
            oldest = next(iter(self._rows))
            if len(self._rows) <= KEEP_MAX and final.at - self._rows[oldest].at < KEEP_S:
                break
            self.forget(oldest)
        if model is not None and len(model) <= MODEL_MAX_BYTES:
            self._models[job_id] = model
            self.model_bytes += len(model)
            while self.model_bytes > MODELS_BYTES:
                self._drop_model(next(iter(self._models)))

    def get(self, job_id: str) -> FinalRow | None:
        final = self._rows.get(job_id)
        if final is None or not 0 <= self._clock() - final.at < KEEP_S:
            return None
        return final

    def take_model(self, job_id: str) -> bytes | None:
        """The job's stored model (GLB) if kept, given out once (a second download reads
        the store)."""
        fresh = self.get(job_id) is not None
        model = self._drop_model(job_id)
        return model if fresh else None

    def forget(self, job_id: str) -> None:
        self._rows.pop(job_id, None)
        self._drop_model(job_id)

    def _drop_model(self, job_id: str) -> bytes | None:
        model = self._models.pop(job_id, None)
        if model is not None:
            self.model_bytes -= len(model)
        return model
