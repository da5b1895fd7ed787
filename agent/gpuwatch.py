"""Yield the GPU to its owner: notice other programs using it, through NVML.

With ``--yield-gpu`` the agent pauses while another process uses the card
(a game, a render, someone else's training run) and resumes after a quiet
period. NVML comes from ``nvidia-ml-py`` (module ``pynvml``) when installed;
without it, or without an NVIDIA driver, the watch is off and the agent says
so once.

"Another process uses the GPU" means either

* processes other than this agent hold at least ``min_other_mb`` of GPU
  memory (NVML reports it on Linux; under Windows' WDDM it is often unknown,
  and unknown amounts do not count), or
* while the agent itself is idle, the GPU is busier than ``busy_percent``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

MB = 1024 * 1024


@dataclass
class GpuWatch:
    nvml: Any  # the pynvml module, or a fake with the same functions
    index: int = 0
    min_other_mb: int = 256
    busy_percent: int = 30
    quiet_s: float = 120.0
    own_pid: int = field(default_factory=os.getpid)
    _handle: Any = None
    _last_busy: float | None = None
    _failed: bool = False

    def __post_init__(self) -> None:
        self._handle = self.nvml.nvmlDeviceGetHandleByIndex(self.index)

    def _others_mb(self) -> int:
        total = 0
        seen: set[int] = set()
        for query in (
            self.nvml.nvmlDeviceGetComputeRunningProcesses,
            self.nvml.nvmlDeviceGetGraphicsRunningProcesses,
        ):
            for process in query(self._handle):
                pid = int(process.pid)
                if pid == self.own_pid or pid in seen:
                    continue
                seen.add(pid)
                used = getattr(process, "usedGpuMemory", None)
                total += int(used) // MB if used else 0
        return total

    def sample(self, *, working: bool) -> str | None:
        """Why the GPU looks busy with other work right now, or None."""
        try:
            others = self._others_mb()
            if others >= self.min_other_mb:
                return f"other programs use {others} MB of GPU memory"
            if not working:
                percent = int(self.nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)
                if percent >= self.busy_percent:
                    return f"the GPU is {percent}% busy with other work"
        except Exception as exc:  # NVMLError and friends: never stop the agent for this
            if not self._failed:
                logger.warning("cannot read the GPU's load through NVML: %s", exc)
                self._failed = True
        return None

    def busy(self, now: float, *, working: bool) -> str | None:
        """Like :meth:`sample`, but stays busy until ``quiet_s`` passed without other work."""
        reason = self.sample(working=working)
        if reason is not None:
            self._last_busy = now
            return reason
        if self._last_busy is not None:
            left = self.quiet_s - (now - self._last_busy)
            if left > 0:
                return f"waiting for the GPU to stay free ({left:.0f} s more)"
            self._last_busy = None
        return None


def open_watch(
    index: int, *, importer: Callable[[], Any] | None = None, **options: Any
) -> GpuWatch | None:
    """A watch on GPU ``index`` through NVML, or None (with a log line) when unavailable."""
    try:
        nvml = importer() if importer is not None else __import__("pynvml")
        nvml.nvmlInit()
        return GpuWatch(nvml, index, **options)
    except ImportError:
        logger.warning(
            "--yield-gpu needs NVML: pip install nvidia-ml-py (the agent runs without yielding)"
        )
    except Exception as exc:
        logger.warning("--yield-gpu: NVML is not usable here (%s); not yielding", exc)
    return None
