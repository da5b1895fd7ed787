"""Stop the agent on Ctrl-C / SIGTERM on every OS.

``loop.add_signal_handler`` exists only on POSIX event loops: Windows'
Proactor loop raises ``NotImplementedError``, and so does any loop outside the
main thread. The fallbacks, in order:

1. ``loop.add_signal_handler`` (POSIX): the handler runs on the loop;
2. ``signal.signal`` (Windows, and POSIX loops that refuse): the handler runs
   between bytecodes of the main thread and hands the stop to the loop with
   ``call_soon_threadsafe``; on Windows this also catches Ctrl-Break
   (``SIGBREAK``), which is what a service manager sends;
3. neither (not the main thread, or an embedded interpreter): Ctrl-C surfaces
   as ``KeyboardInterrupt`` / a cancelled main task, which :func:`agent.cli.serve`
   turns into the same graceful stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Literal

logger = logging.getLogger(__name__)

STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGBREAK")  # SIGBREAK: Windows only

Via = Literal["loop", "signal"]

# Indirection so a test can take ``signal.signal`` away from the agent alone.
set_handler = signal.signal


@dataclass
class StopHandlers:
    """What :func:`install` set up, so :meth:`remove` can put it back."""

    loop: asyncio.AbstractEventLoop
    installed: list[tuple[Via, int, Any]] = field(default_factory=list)

    @property
    def via(self) -> Via | None:
        """How the first signal was hooked, or None when Ctrl-C only raises."""
        return self.installed[0][0] if self.installed else None

    def remove(self) -> None:
        for via, signum, previous in reversed(self.installed):
            try:
                if via == "loop":
                    self.loop.remove_signal_handler(signum)
                else:
                    set_handler(signum, previous)
            except (NotImplementedError, RuntimeError, ValueError, OSError):
                logger.debug("could not restore the handler of signal %d", signum)
        self.installed.clear()


def install(loop: asyncio.AbstractEventLoop, on_stop: Callable[[], None]) -> StopHandlers:
    """Call ``on_stop`` on the loop when the process is asked to stop; see the module doc."""
    handlers = StopHandlers(loop)

    def from_signal(signum: int, frame: FrameType | None) -> None:
        # RuntimeError: the loop is already closed, nothing is left to stop.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(on_stop)

    for name in STOP_SIGNALS:
        signum = getattr(signal, name, None)
        if signum is None:
            continue
        try:
            loop.add_signal_handler(signum, on_stop)
            handlers.installed.append(("loop", signum, None))
            continue
        except (NotImplementedError, RuntimeError, ValueError, OSError, AttributeError):
            pass
        try:
            previous = set_handler(signum, from_signal)
        except (ValueError, OSError, AttributeError, RuntimeError, NotImplementedError):
            continue  # not the main thread: Ctrl-C raises KeyboardInterrupt instead
        handlers.installed.append(("signal", signum, previous))
    if handlers.via is None:
        logger.info("no signal handlers available here; Ctrl-C stops the agent")
    else:
        logger.debug("stop signals hooked through %s", handlers.via)
    return handlers
