"""The owner's controls on the agent's side: pause/resume, working hours, yielding the GPU.

The agent is the one keeper of its owner's decisions. ``shapefarm-agent pause``
/ ``resume`` (any OS: no signals, no sockets) and the Contribute page's
buttons (protocol ``pause``/``resume``) both write the **control file**
``DATA_DIR/control.json``; the running agent reads it every ``poll_s``
seconds, so a pause survives restarts and reconnects. Working hours
(``--schedule``) and other programs on the GPU (``--yield-gpu``) pause the
agent by themselves. Whatever the cause, the agent tells the coordinator with
a ``status`` message and stops taking work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from agent.blocklist import load_blocklist
from agent.gpuwatch import GpuWatch, open_watch
from agent.runner import Runner
from agent.schedule import Schedule, parse_schedule
from agent.settings import AgentSettings
from protocol import Pause, Resume, Status

logger = logging.getLogger(__name__)

CONTROL_FILE = "control.json"
Origin = Literal["cli", "web"]
REASONS: dict[str, str] = {
    "cli": "paused by its owner (shapefarm-agent pause)",
    "web": "paused from the Contribute page",
}


@dataclass(frozen=True, slots=True)
class OwnerPause:
    paused: bool = False
    cancel: bool = False
    by: Origin = "cli"


class ControlFile:
    """``control.json`` in the agent's data directory, written atomically."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / CONTROL_FILE
        self._last = OwnerPause()

    def read(self) -> OwnerPause:
        """The owner's pause; an unreadable file keeps the last good state (and says so)."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            self._last = OwnerPause()
            return self._last
        except (OSError, ValueError) as exc:
            logger.warning("ignoring the unreadable control file %s: %s", self.path, exc)
            return self._last
        if not isinstance(raw, dict) or not isinstance(raw.get("paused"), bool):
            logger.warning("ignoring the control file %s: no 'paused' true/false", self.path)
            return self._last
        by: Origin = "web" if raw.get("by") == "web" else "cli"
        self._last = OwnerPause(raw["paused"], raw.get("cancel") is True, by)
        return self._last

    def write(self, state: OwnerPause) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"paused": state.paused, "cancel": state.cancel, "by": state.by, "at": time.time()}
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".control-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle)
            os.replace(tmp, self.path)  # atomic on Windows too
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._last = state


@dataclass(frozen=True, slots=True)
class Verdict:
    paused: bool
    reason: str = ""
    cancel: bool = False


class Controls:
    """Decides whether the agent runs, tells the runner and the coordinator."""

    def __init__(
        self,
        runner: Runner,
        control_file: ControlFile,
        *,
        schedule: Schedule | None = None,
        gpu: GpuWatch | None = None,
        cancel_on_auto_pause: bool = False,
        prefer_own: bool = False,
        prefer_users: tuple[str, ...] = (),
        clock: Callable[[], float] = time.monotonic,
        local_now: Callable[[], datetime] = datetime.now,
        poll_s: float = 1.0,
    ) -> None:
        self.runner = runner
        self.file = control_file
        self.schedule = schedule
        self.gpu = gpu
        self.cancel_on_auto_pause = cancel_on_auto_pause
        self.prefer_own = prefer_own
        self.prefer_users = prefer_users
        self.clock = clock
        self.local_now = local_now
        self.poll_s = poll_s
        self.verdict = Verdict(False)
        self._poke = asyncio.Event()
        runner.on_change = self.announce

    def evaluate(self) -> Verdict:
        owner = self.file.read()
        if owner.paused:
            return Verdict(True, REASONS[owner.by], owner.cancel)
        if self.schedule is not None and not self.schedule.is_open(self.local_now()):
            return Verdict(True, f"outside working hours ({self.schedule.text})"[:200], False)
        if self.gpu is not None:
            busy = self.gpu.busy(self.clock(), working=self.runner.busy)
            if busy is not None:
                return Verdict(True, busy[:200], self.cancel_on_auto_pause)
        return Verdict(False)

    def status(self) -> Status:
        lowered = self.runner.max_batch < self.runner.configured_batch
        return Status(
            paused=self.verdict.paused,
            reason=self.verdict.reason,
            max_batch=self.runner.max_batch if lowered else None,
            prefer_own=self.prefer_own,
            prefer_users=self.prefer_users,
        )

    def announce(self) -> None:
        """Send the current ``status`` (after a welcome, and on every change)."""
        if self.runner.controls:
            self.runner.post(self.status())

    def apply(self) -> bool:
        """Re-evaluate; on a change act on it and tell the coordinator. True if it changed."""
        verdict = self.evaluate()
        if (verdict.paused, verdict.reason) == (self.verdict.paused, self.verdict.reason):
            return False
        was_paused, self.verdict = self.verdict.paused, verdict
        if self.runner.status is not None:
            self.runner.status.pause(verdict.reason if verdict.paused else "")
        if verdict.paused:
            logger.info("pausing: %s", verdict.reason)
            if not was_paused or verdict.cancel:
                self.runner.pause(cancel=verdict.cancel)
        else:
            logger.info("resuming work")
            self.runner.resume()
        self.announce()
        return True

    def handle(self, message: Pause | Resume) -> None:
        """The Contribute page's buttons, relayed by the coordinator."""
        if isinstance(message, Pause):
            self.file.write(OwnerPause(True, message.cancel, "web"))
        else:
            self.file.write(OwnerPause(False, False, "web"))
        if not self.apply():
            self.announce()  # unchanged (e.g. still outside working hours): answer anyway
        self._poke.set()

    async def run(self) -> None:
        """Check every ``poll_s`` seconds until cancelled."""
        while True:
            try:
                self.apply()
            except Exception:  # never let a bad check stop the agent
                logger.exception("checking the owner's controls failed")
            self._poke.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_s):
                    await self._poke.wait()


def write_owner_pause(data_dir: Path, *, paused: bool, cancel: bool = False) -> Path:
    """What ``shapefarm-agent pause`` / ``resume`` do; returns the control file's path."""
    control = ControlFile(data_dir)
    control.write(OwnerPause(paused, cancel, "cli"))
    return control.path


def build_controls(
    settings: AgentSettings,
    runner: Runner,
    *,
    nvml_importer: Callable[[], Any] | None = None,
    local_now: Callable[[], datetime] = datetime.now,
    clock: Callable[[], float] = time.monotonic,
    poll_s: float = 1.0,
) -> Controls:
    """The owner's controls from the settings; raises :class:`BlocklistError` on a bad list."""
    if settings.blocklist is not None:
        runner.blocklist = load_blocklist(settings.blocklist)
        logger.info("blocklist %s: %d entries", settings.blocklist, len(runner.blocklist))
    gpu = None
    if settings.yield_gpu:
        index = int(settings.device.partition(":")[2] or 0)
        gpu = open_watch(
            index,
            importer=nvml_importer,
            min_other_mb=settings.gpu_other_mb,
            busy_percent=settings.gpu_busy_percent,
            quiet_s=settings.gpu_quiet_s,
        )
    return Controls(
        runner,
        ControlFile(settings.data_dir),
        schedule=parse_schedule(settings.schedule) if settings.schedule else None,
        gpu=gpu,
        cancel_on_auto_pause=settings.pause_batch == "cancel",
        prefer_own=settings.prefer_own,
        prefer_users=settings.prefer_users,
        clock=clock,
        local_now=local_now,
        poll_s=poll_s,
    )
