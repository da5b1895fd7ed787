"""What the runner works with: the generator's interface, links, batches, a throttle.

Split from :mod:`agent.runner` so that module holds the runner's behaviour only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.spool import JobKey, SpooledResult
from protocol import AgentMessage, JobSpec, Limits


class GeneratorLike(Protocol):
    """What the runner needs of :class:`agent.generator.Generator` (and of test fakes)."""

    def batch_key(self, request: Any) -> tuple[Any, ...]: ...

    def generate(
        self,
        requests: Sequence[Any],
        progress: Callable[[Any], None],
        should_stop: Callable[[], bool],
    ) -> list[Any]: ...


@dataclass(frozen=True, slots=True)
class GeneratorTypes:
    """The generator module's request class and exceptions, injected so tests need no torch."""

    request: Callable[..., Any]
    cancelled: type[BaseException]
    error: type[BaseException]
    # Checks one request (ValueError if unfit), so a bad job fails alone, not its batch.
    validate: Callable[[Any], None] | None = None
    # Out of GPU memory: the batch is retried in halves instead of failing.
    oom: tuple[type[BaseException], ...] = ()


def real_generator_types() -> GeneratorTypes:
    import torch

    from agent.generator import (
        GenerationCancelled,
        GenerationError,
        GenerationOutOfMemoryError,
        GenerationRequest,
        validate_request,
    )

    return GeneratorTypes(
        GenerationRequest,
        GenerationCancelled,
        GenerationError,
        validate_request,
        (GenerationOutOfMemoryError, torch.cuda.OutOfMemoryError),
    )


class Link(Protocol):
    """One live, welcomed connection, as the runner sees it.

    A link whose ``controls`` attribute is true speaks protocol version 2 (owner
    controls: ``status`` and ``declined``); older links lack it.
    """

    limits: Limits

    async def send(self, message: AgentMessage) -> None: ...

    async def upload(self, result: SpooledResult) -> None: ...


@dataclass(frozen=True, slots=True)
class _Upload:
    key: JobKey


@dataclass(eq=False)
class _Batch:
    specs: list[JobSpec]
    requests: list[Any]
    cancelled: set[JobKey] = field(default_factory=set)
    stop: threading.Event = field(default_factory=threading.Event)
    declined: bool = False  # stopped by an owner's "pause and cancel": decline, not fail

    def live(self) -> list[JobSpec]:
        return [s for s in self.specs if (s.job, s.attempt) not in self.cancelled]


class _Throttle:
    """At most one progress update per interval per job group, but every stage's first and last."""

    def __init__(self, interval_s: float, clock: Callable[[], float]) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._last: dict[tuple[str, ...], tuple[str, float]] = {}

    def admit(self, jobs: tuple[str, ...], stage: str, step: int, total: int) -> bool:
        now = self._clock()
        previous = self._last.get(jobs)
        edge = previous is None or previous[0] != stage or step >= total or step <= 0
        if not edge and previous is not None and now - previous[1] < self._interval_s:
            return False
        self._last[jobs] = (stage, now)
        return True
