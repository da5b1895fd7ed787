"""A live status line in the terminal: connection, current job, step bar, jobs done, credit.

Drawn on stderr only when it is a terminal (a service's log file gets log
lines only). Log records are printed above it: the line is cleared before a
record and redrawn after. The credit shown is the agent's own count by the
coordinator's rule (one per 64 diffusion steps of a stored result), hence "≈".
"""

from __future__ import annotations

import logging
import shutil
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

CREDIT_PER_STEP = 1 / 64  # coordinator/link/results.py
BAR_WIDTH = 20


def bar(step: int, total: int, width: int = BAR_WIDTH) -> str:
    filled = 0 if total <= 0 else min(width, max(0, round(width * step / total)))
    return "[" + "#" * filled + "." * (width - filled) + "]"


class StatusLine:
    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        enabled: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        min_interval_s: float = 0.1,
    ) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.clock = clock
        self.min_interval_s = min_interval_s
        self.state = "starting"
        self.paused = ""
        self.job: str | None = None
        self.stage = ""
        self.step = 0
        self.total = 0
        self.eta_s: float | None = None
        self.done = 0
        self.credit = 0.0
        self._steps: dict[str, int] = {}
        self._shown = ""
        self._drawn_at = 0.0
        self._lock = threading.Lock()

    # -- what happened ---------------------------------------------------------------

    def connection(self, state: str) -> None:
        self.state = state
        self.draw(force=True)

    def pause(self, reason: str) -> None:
        """The owner's controls paused the agent (``reason``) or resumed it (``""``)."""
        self.paused = reason
        self.draw(force=True)

    def assigned(self, jobs: Sequence[tuple[str, int]]) -> None:
        """``jobs``: (job id, steps) of an assignment."""
        for job, steps in jobs:
            self._steps[job] = steps
            if len(self._steps) > 4096:  # bounded: forget the oldest
                self._steps.pop(next(iter(self._steps)))

    def progress(
        self, jobs: Sequence[str], stage: str, step: int, total: int, eta_s: float | None
    ) -> None:
        self.job = jobs[0] + (f" +{len(jobs) - 1}" if len(jobs) > 1 else "") if jobs else None
        self.stage, self.step, self.total, self.eta_s = stage, step, total, eta_s
        self.draw()

    def finished(self, job: str, stored: bool) -> None:
        steps = self._steps.pop(job, 0)
        if stored:
            self.done += 1
            self.credit += steps * CREDIT_PER_STEP
        self.job = None
        self.draw(force=True)

    # -- drawing ---------------------------------------------------------------------

    def render(self) -> str:
        parts = [self.state + (f" (paused: {self.paused})" if self.paused else "")]
        if self.job is not None:
            eta = f" ETA {self.eta_s:.0f}s" if self.eta_s is not None else ""
            parts.append(
                f"job {self.job} {self.stage} {bar(self.step, self.total)} "
                f"{self.step}/{self.total}{eta}"
            )
        else:
            parts.append("idle")
        parts.append(f"done {self.done}")
        parts.append(f"credit ≈ {self.credit:.1f}")
        return " | ".join(parts)

    def draw(self, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if not force and now - self._drawn_at < self.min_interval_s:
            return
        width = shutil.get_terminal_size((100, 20)).columns - 1
        line = self.render()[:width]
        with self._lock:
            self._drawn_at = now
            self._shown = line
            self.stream.write("\r" + line + "\x1b[K")
            self.stream.flush()

    def clear(self) -> None:
        if self.enabled and self._shown:
            with self._lock:
                self.stream.write("\r\x1b[K")
                self.stream.flush()

    def close(self) -> None:
        """Leave the last line on screen and move below it."""
        if self.enabled and self._shown:
            with self._lock:
                self.stream.write("\n")
                self.stream.flush()
                self._shown = ""

    def redraw(self) -> None:
        if self.enabled and self._shown:
            self.draw(force=True)


class StatusAwareHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Prints log records above the status line."""

    def __init__(self, status: StatusLine, stream: Any = None) -> None:
        super().__init__(stream or status.stream)
        self.status = status

    def emit(self, record: logging.LogRecord) -> None:
        self.status.clear()
        super().emit(record)
        self.status.redraw()
