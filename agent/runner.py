"""The job runner: runs assigned batches one at a time on a worker thread.

The runner outlives connections. A connection ``attach``es a :class:`Link`
after its welcome and runs :meth:`Runner.pump`, which sends the runner's
outbox (:class:`agent.outbox.Outbox`) in order (accepted, progress, failed,
result uploads). Results are held by the spool, written to disk only if no
``result_ack`` came within a second (:class:`agent.keeper.Keeper`), and leave it only
on a ``result_ack``, so a dropped connection loses no finished work: ``attach`` queues
every spooled result again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Literal

from agent.batches import (
    GeneratorLike,
    GeneratorTypes,
    Link,
    _Batch,
    _Throttle,
    real_generator_types,
)
from agent.blocklist import EMPTY as EMPTY_BLOCKLIST
from agent.blocklist import Blocklist
from agent.keeper import Keeper
from agent.outbox import Outbox
from agent.spool import JobKey, Spool, SpooledResult
from agent.statusline import StatusLine
from protocol import (
    Accepted,
    AgentMessage,
    Assign,
    Cancel,
    Declined,
    Drain,
    Failed,
    JobSpec,
    Progress,
    ResultAck,
)

__all__ = ["Runner"]

logger = logging.getLogger(__name__)

_STAGES = frozenset({"loading", "queued", "sampling", "decoding", "exporting", "uploading"})


class Runner:
    def __init__(
        self,
        generator: GeneratorLike,
        spool: Spool,
        *,
        max_batch: int = 4,
        types: GeneratorTypes | None = None,
        progress_interval_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.generator = generator
        self.spool = spool
        self.max_batch = max_batch
        self.configured_batch = max_batch  # max_batch only goes down, after an OOM
        self.blocklist: Blocklist = EMPTY_BLOCKLIST
        self.paused = False
        # Called when something the owner's ``status`` reports changed (max_batch).
        self.on_change: Callable[[], None] | None = None
        self.status: StatusLine | None = None  # the terminal's live line, if any
        self.types = types or real_generator_types()
        self._progress_interval_s = progress_interval_s
        self._clock = clock
        self._queue: deque[_Batch] = deque()
        self._current: _Batch | None = None
        self._wakeup = asyncio.Event()
        self._keeper = Keeper(spool)
        self._outbox = Outbox(self._keeper)
        self._accepting = True
        self._stopping = False
        self._stopped = asyncio.Event()

    # ------------------------------------------------------------------ connection side

    def attach(self, link: Link) -> None:
        """Use a freshly welcomed connection; queue every spooled result for upload."""
        self._outbox.attach(link)

    def detach(self) -> None:
        self._outbox.detach()

    async def pump(self, link: Link) -> None:
        """Send the outbox over ``link`` until the connection fails (then it raises)."""
        await self._outbox.pump(link)

    @property
    def busy(self) -> bool:
        return self._current is not None

    @property
    def controls(self) -> bool:
        """Whether the current link speaks protocol v2 (``status``, ``declined``)."""
        return self._outbox.controls

    def post(self, message: AgentMessage) -> None:
        """Send a message on the current link, if any (the owner controls' ``status``)."""
        self._post(message)

    def pause(self, *, cancel: bool) -> None:
        """Take no new work; give back queued jobs; with ``cancel`` the running batch too."""
        self.paused = True
        while self._queue:
            self._decline(self._queue.popleft().live(), "paused")
        if cancel and self._current is not None:
            self._current.declined = True
            self._current.stop.set()

    def resume(self) -> None:
        self.paused = False

    def _decline(self, specs: Sequence[JobSpec], reason: Literal["blocked", "paused"]) -> None:
        for spec in specs:
            logger.info("job %s/%d declined: %s", spec.job, spec.attempt, reason)
            if self.controls:
                self._post(Declined(job=spec.job, attempt=spec.attempt, reason=reason))
            else:  # a version-1 coordinator knows no decline: give it back, one try spent
                why = "the agent's owner paused it" if reason == "paused" else "declined"
                self._post(Failed(job=spec.job, attempt=spec.attempt, reason=why))

    async def handle(self, message: Assign | Cancel | Drain | ResultAck) -> None:
        if isinstance(message, Assign):
            self._assign(message)
        elif isinstance(message, Cancel):
            await self._cancel((message.job, message.attempt), message.reason)
        elif isinstance(message, Drain):
            logger.info("coordinator asked to drain: %s", message.reason or "no reason given")
        else:
            logger.info(
                "result %s/%d %s %s", message.job, message.attempt, message.status, message.reason
            )
            self._outbox.acked((message.job, message.attempt))
            # In the background: the next assign may be right behind this ack.
            self._keeper.discard_later((message.job, message.attempt))
            if self.status is not None:
                self.status.finished(message.job, message.status == "stored")

    def running_jobs(self) -> tuple[str, ...]:
        batches = ([self._current] if self._current else []) + list(self._queue)
        return tuple(spec.job for batch in batches for spec in batch.live())

    def holding(self) -> tuple[JobKey, ...]:
        """Jobs to name in ``hello``: spooled results, then running and queued jobs."""
        keys = list(self.spool.pending())
        batches = ([self._current] if self._current else []) + list(self._queue)
        keys += [
            (s.job, s.attempt) for b in batches for s in b.live() if (s.job, s.attempt) not in keys
        ]
        return tuple(keys)

    async def wait_settled(self) -> None:
        """Until the outbox is sent, every uploaded result acknowledged and the spool's
        writes and deletes done."""
        await self._outbox.wait_settled()
        await self.wait_spooled()

    async def wait_spooled(self) -> None:
        """Until every spool write and delete started so far has ended."""
        await self._keeper.flush()

    # ------------------------------------------------------------------ lifecycle

    def request_stop(self, *, cancel: bool) -> None:
        """Take no more jobs; fail queued ones; with ``cancel`` stop the running batch too."""
        self._accepting = False
        self._stopping = True
        while self._queue:
            self._fail(self._queue.popleft().live(), "agent is shutting down", retryable=True)
        if cancel and self._current is not None:
            self._current.stop.set()
        self._wakeup.set()

    async def run(self) -> None:
        """Run batches until :meth:`request_stop` and the current batch is done."""
        try:
            while True:
                while not self._queue:
                    if self._stopping:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                await self._run_batch(self._queue.popleft())
        finally:
            try:
                await self._keeper.flush()  # a result being written gets to the disk
            finally:
                self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    # ------------------------------------------------------------------ internals

    def _post(self, message: AgentMessage) -> None:
        self._outbox.post(message)

    def _fail(self, specs: Sequence[JobSpec], reason: str, *, retryable: bool) -> None:
        for spec in specs:
            logger.warning("job %s/%d failed: %s", spec.job, spec.attempt, reason)
            self._post(
                Failed(
                    job=spec.job, attempt=spec.attempt, reason=reason[:2000], retryable=retryable
                )
            )

    async def handle_image_assign(self, message: Assign, image: bytes | None) -> None:
        """(v3) An assign whose input image has arrived (``None``: the bytes were not the
        announced image): run its jobs with it, or fail them for another try."""
        if image is None:
            reason = "the input image arrived damaged (its sha256 does not match)"
            self._fail(message.jobs, reason, retryable=True)
            return
        self._assign(message, image)

    def _assign(self, message: Assign, image: bytes | None = None) -> None:
        if not self._accepting:
            self._fail(message.jobs, "agent is shutting down", retryable=True)
            return
        if self.paused:  # the assign crossed our "paused" status on the wire
            self._decline(message.jobs, "paused")
            return
        if self.status is not None:
            self.status.assigned([(spec.job, spec.steps) for spec in message.jobs])
        groups: dict[tuple[Any, ...], _Batch] = {}
        for spec in message.jobs:
            blocked_by = self.blocklist.match(spec.prompt)
            if blocked_by is not None:
                logger.info("job %s matches the blocklist entry %r", spec.job, blocked_by)
                self._decline([spec], "blocked")
                continue
            self._post(Accepted(job=spec.job, attempt=spec.attempt))
            # An image job's request carries its verified image (protocol v3).
            extra = {"image": image} if spec.image is not None else {}
            request = self.types.request(
                job_id=spec.job,
                prompt=spec.prompt,
                seed=spec.seed,
                guidance_scale=spec.guidance,
                steps=spec.steps,
                **extra,
                mesh=spec.mesh,  # protocol v3; the export decimates to its face budget
            )
            try:
                if self.types.validate is not None:
                    self.types.validate(request)
                key = self.generator.batch_key(request)
            except ValueError as exc:
                self._fail([spec], f"invalid job: {exc}", retryable=False)
                continue
            batch = groups.get(key)
            if batch is None or len(batch.specs) >= self.max_batch:
                batch = groups[key] = _Batch([], [])
                self._queue.append(batch)
            batch.specs.append(spec)
            batch.requests.append(request)
        logger.info("assigned %s", ", ".join(f"{s.job}/{s.attempt}" for s in message.jobs))
        self._wakeup.set()

    async def _cancel(self, key: JobKey, reason: str) -> None:
        logger.info("job %s/%d cancelled by the coordinator: %s", *key, reason or "no reason")
        for batch in list(self._queue):
            batch.cancelled.add(key)
            if not batch.live():
                self._queue.remove(batch)
        current = self._current
        if current is not None and any((s.job, s.attempt) == key for s in current.specs):
            current.cancelled.add(key)
            if not current.live():
                current.stop.set()  # nobody wants this GPU pass any more
        elif key in self.spool:
            await self._keeper.discard(key)

    async def _run_batch(self, batch: _Batch) -> None:
        if not batch.live():
            return
        if len(batch.live()) > self.max_batch:  # queued before an out-of-memory shrank batches
            self._split(batch, self.max_batch)
            return
        self._current = batch
        loop = asyncio.get_running_loop()
        throttle = _Throttle(self._progress_interval_s, self._clock)

        def progress(event: Any) -> None:  # called on the worker thread
            jobs = tuple(event.job_ids)
            if throttle.admit(jobs, event.stage, event.step, event.total):
                loop.call_soon_threadsafe(self._relay, batch, event)

        live = batch.live()
        requests = [r for s, r in zip(batch.specs, batch.requests, strict=True) if s in live]
        try:
            results = await asyncio.to_thread(
                self.generator.generate, requests, progress, batch.stop.is_set
            )
        except self.types.oom as exc:
            self._retry_smaller(batch, exc)
        except self.types.cancelled:
            if batch.declined:  # the owner paused and chose to cancel the batch
                self._decline(batch.live(), "paused")
            else:  # jobs still live were stopped by our own shutdown, not by the coordinator
                self._fail(batch.live(), "agent is shutting down", retryable=True)
        except self.types.error as exc:
            self._fail(batch.live(), f"generation failed: {exc}", retryable=True)
        except ValueError as exc:
            self._fail(batch.live(), f"invalid job: {exc}", retryable=False)
        except Exception as exc:
            logger.exception("generator crashed")
            self._fail(
                batch.live(), f"generator crashed: {type(exc).__name__}: {exc}", retryable=True
            )
        else:
            await self._store(batch, results)
        finally:
            self._current = None

    def _retry_smaller(self, batch: _Batch, exc: BaseException) -> None:
        """Out of GPU memory: run the jobs again in halves; fail only a lone job that OOMs."""
        live = batch.live()
        release = getattr(self.generator, "release_memory", None)
        if callable(release):
            release()
        if len(live) <= 1:
            self._fail(live, f"out of GPU memory even for one job: {exc}", retryable=True)
            return
        size = max(1, (len(live) + 1) // 2)
        if size < self.max_batch:
            self.max_batch = size
            logger.warning("out of GPU memory: batches of at most %d from now on", size)
            if self.on_change is not None:
                self.on_change()
        self._split(batch, size)

    def _split(self, batch: _Batch, size: int) -> None:
        """Queue ``batch``'s live jobs again, first, in batches of at most ``size``."""
        live = batch.live()
        pairs = [(s, r) for s, r in zip(batch.specs, batch.requests, strict=True) if s in live]
        parts = [pairs[i : i + size] for i in range(0, len(pairs), size)]
        for part in reversed(parts):  # in order, ahead of anything queued later
            self._queue.appendleft(
                _Batch([s for s, _ in part], [r for _, r in part], set(batch.cancelled))
            )

    async def _store(self, batch: _Batch, results: Sequence[Any]) -> None:
        by_job = {result.job_id: result for result in results}
        for spec in batch.live():
            result = by_job.get(spec.job)
            if result is None:
                self._fail([spec], "the generator returned no result", retryable=True)
                continue
            artifacts = [("glb", bytes(result.glb))]
            if result.preview_png:
                artifacts.append(("preview", bytes(result.preview_png)))
            entry = SpooledResult(
                spec.job,
                spec.attempt,
                tuple(artifacts),
                int(result.vertices),
                int(result.faces),
                float(result.seconds),
            )
            await self._keeper.keep(entry)  # uploadable now; on disk unless acked in time
            if (spec.job, spec.attempt) in batch.cancelled:  # cancelled while we stored it
                await self._keeper.discard(entry.key)
            else:
                self._outbox.upload(entry.key)

    def _relay(self, batch: _Batch, event: Any) -> None:
        if event.stage not in _STAGES:
            return
        eta = None if event.eta_s is None else min(max(float(event.eta_s), 0.0), 1e7)
        attempts = {s.job: s.attempt for s in batch.live()}
        if self.status is not None:
            live = [job for job in event.job_ids if job in attempts]
            self.status.progress(live, event.stage, int(event.step), int(event.total), eta)
        for job in event.job_ids:
            if job in attempts:
                self._post(
                    Progress(
                        job=job,
                        attempt=attempts[job],
                        stage=event.stage,
                        step=max(int(event.step), 0),
                        total=max(int(event.total), 0),
                        eta_s=eta,
                    )
                )
