"""Push for API clients: ``GET /api/v1/jobs/{id}/events`` (SSE) and the ``wait`` long-poll.

Both follow a job from memory while it is live (the farm's queue, leases and
progress; no database read per change) and read it once when it has left the farm
(finished), so a client that waits costs one read per job, not one per poll.
Streams and waits hold a socket each: they take a slot under the same caps as the
HTML live streams (per user, per address, in all) and end after
``stream_max_s`` (SSE; the client reconnects) or ``MAX_WAIT_S`` (long-poll).

SSE events, each ``data`` one JSON object:

- ``queued``: ``{"id", "state": "queued", "position", "eta_s", "agents_online"}``,
  again whenever the place in line changes (checked at most once a second);
- ``progress``: ``{"id", "state", "stage", "step", "total", "eta_s"}`` while an agent
  has it;
- ``finished``: the job as ``GET /api/v1/jobs/{id}`` answers it (state ``succeeded``,
  ``failed`` or ``cancelled``; ``result.downloads`` when there is a model); the stream
  ends after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from coordinator.api.errors import ApiError, ErrorCode
from coordinator.api.views import bearer, job_json, refusal
from coordinator.farm.engine import Farm
from coordinator.request_context import client_ip, farm_of
from coordinator.services import api_reads, jobs
from coordinator.store import models

MAX_WAIT_S = 60
KEEPALIVE_S = 15.0
QUEUE_RECHECK_S = 1.0  # how often a queued job's place in line is looked at again
PROGRESS_MIN_S = 0.2  # progress events at most five a second (a stream's writes)
FINAL = frozenset({"succeeded", "failed", "cancelled"})


class _Slot(Protocol):
    def release(self) -> None: ...


def _slot(request: Request, user_id: int) -> _Slot | None:
    """A place under the stream caps (``app.state.streams``, shared with the HTML streams)."""
    try:
        slot: _Slot = request.app.state.streams.acquire(None, user_id, client_ip(request))
    except Exception:  # web.streams.StreamLimitError (api may not import web)
        return None
    return slot


def _refused() -> ApiError:
    return ApiError(
        ErrorCode.RATE_LIMITED,
        "Too many open event streams or waits; close some, or use webhooks.",
    )


def live_view(farm: Farm, job_id: str) -> tuple[str, dict[str, Any]] | None:
    """The event a live job's state in memory makes; None once the job left the farm."""
    if job_id in farm.queue:
        estimate = farm.positions().get(job_id)
        return "queued", {
            "id": job_id,
            "state": "queued",
            "position": estimate.position if estimate else None,
            "eta_s": estimate.eta_s if estimate else None,
            "agents_online": jobs.agents_for(farm, farm.queue[job_id].model),
        }
    # Replica mode: a job another replica's agent runs has the progress its notes carry.
    if job_id in farm.leases or job_id in farm.progress:
        live = farm.progress.get(job_id)
        stage = live.stage if live else "assigned"
        return "progress", {
            "id": job_id,
            "state": "assigned" if stage == "assigned" else "running",
            "stage": stage,
            "step": live.step if live else 0,
            "total": live.total if live else 0,
            "eta_s": live.eta_s if live else None,
        }
    return None


def _elsewhere(farm: Farm, job: models.Job) -> tuple[str, dict[str, Any]]:
    """Replica mode: the event of a live job this replica knows only from the database
    (claimed by the leader for another replica's agent, no progress note yet)."""
    if job.state == "queued":
        return "queued", {
            "id": job.id, "state": "queued", "position": None, "eta_s": None,
            "agents_online": jobs.agents_for(farm, job.model),
        }  # fmt: skip
    return "progress", {
        "id": job.id,
        "state": "assigned" if job.state == "assigned" else "running",
        "stage": job.state,
        "step": 0,
        "total": 0,
        "eta_s": None,
    }


async def _still_live(farm: Farm, caller: api_reads.Caller, job_id: str) -> bool:
    """Is the caller's job live? From memory; in replica mode, a job this replica does
    not hold (another's agent runs it) from the database."""
    owner = farm.owner_of(job_id)
    if owner is not None:
        return caller.is_admin or owner == caller.user_id
    if farm.cluster is None:
        return False
    found = await farm.reader.run(lambda db: api_reads.read_job(db, job_id))
    if found is None or found[0].state in FINAL:
        return False
    return caller.is_admin or found[0].user_id == caller.user_id


async def wait_until_settled(
    farm: Farm, caller: api_reads.Caller, job_id: str, limit_s: float
) -> None:
    """Return once the caller's live job left the farm (or after ``limit_s``); at once
    for a job that is finished, unknown or not theirs (the normal read answers)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(limit_s):
            async with farm.hub.subscribe(f"job:{job_id}") as queue:
                while await _still_live(farm, caller, job_id):
                    # Changes wake us; a lost bus note only delays the answer a little.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(QUEUE_RECHECK_S * 2):
                            await queue.get()


async def wait_param(request: Request) -> None:
    """``GET /api/v1/jobs/{id}?wait=S``: hold the answer until the job finished, S ≤ 60 s."""
    raw = request.query_params.get("wait")
    if raw is None or raw == "":
        return
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3 and int(raw) <= MAX_WAIT_S):
        raise ApiError(
            ErrorCode.VALIDATION_FAILED,
            f"wait must be a whole number of seconds from 0 to {MAX_WAIT_S}.",
        )
    farm = farm_of(request)
    caller = await api_reads.identify(farm, bearer(request))
    if caller is None or int(raw) == 0:
        return  # the normal path answers (401 for a bad key)
    slot = _slot(request, caller.user_id)
    if slot is None:
        raise _refused()
    try:
        # A wait lives no longer than a stream may (the same caps hold its socket).
        limit_s = min(float(raw), farm.settings.stream_max_s)
        await wait_until_settled(farm, caller, request.path_params["job_id"], limit_s)
    finally:
        slot.release()


def _sse(event: str, data: dict[str, Any], number: int) -> str:
    return f"id: {number}\nevent: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _events(
    farm: Farm,
    caller: api_reads.Caller,
    job_id: str,
    found: tuple[models.Job, models.Result | None] | None,
) -> AsyncGenerator[tuple[str, bool], None]:
    """The stream's text, each piece with whether it is the last (the finished event).

    ``found``: the job as read when the stream opened; None when it was live in this
    farm's memory then (nothing read). Progress events follow each other at most every
    ``PROGRESS_MIN_S`` (a change in between is sent when that time is up, as the state
    is then); the first event and the finished one go out at once."""
    job, result = found if found is not None else (None, None)
    number = 0
    deadline = time.monotonic() + farm.settings.stream_max_s
    last: tuple[str, dict[str, Any]] | None = None
    quiet_since = progress_at = time.monotonic()
    prefix = "retry: 2000\n\n"  # sent with the first event: one write for both
    async with farm.hub.subscribe(f"job:{job_id}") as queue:
        while True:
            view = live_view(farm, job_id)
            if view is None:
                if job is None or job.state not in FINAL:  # it left the farm since: look again
                    # Finished here: its rows as the finishing transaction committed them.
                    again = api_reads.finished_job(farm, job_id)
                    if again is None:
                        again = await farm.reader.run(lambda db: api_reads.read_job(db, job_id))
                    if again is None:
                        return  # deleted meanwhile
                    job, result = again
                if job.state in FINAL:
                    yield prefix + _sse("finished", job_json(farm, job, result), number + 1), True
                    return
                view = _elsewhere(farm, job)  # live on another replica
            now = time.monotonic()
            held = 0.0  # how long a progress change waits for its turn
            if view != last:
                if last is not None and last[0] == view[0] == "progress":
                    held = progress_at + PROGRESS_MIN_S - now
                if held <= 0:
                    number, last, quiet_since = number + 1, view, now
                    progress_at = now if view[0] == "progress" else progress_at
                    yield prefix + _sse(*view, number), False
                    prefix = ""
            left = deadline - time.monotonic()
            if left <= 0:
                return
            wait = min(left, KEEPALIVE_S, QUEUE_RECHECK_S if view else KEEPALIVE_S)
            if held > 0:
                wait = min(wait, held)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await queue.get()
                    while not queue.empty():  # a burst of changes: one look at the state
                        queue.get_nowait()
            if time.monotonic() - quiet_since >= KEEPALIVE_S:
                quiet_since = time.monotonic()
                yield ": keep-alive\n\n", False


class _EventStream(Response):
    """An event stream without StreamingResponse's task group (an anyio task, a cancel
    scope and a task repr per stream): one plain task waits for the client to go away
    and cancels the stream, and the finished event ends the chunked body in the same
    write (StreamingResponse sends an empty last chunk after it)."""

    media_type = "text/event-stream"

    def __init__(
        self, chunks: AsyncGenerator[tuple[str, bool], None], on_close: Callable[[], None]
    ):
        # As StreamingResponse does: no body, so no Content-Length (chunked).
        self.status_code, self.background = 200, None
        self.init_headers({"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        self.chunks, self.on_close = chunks, on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = asyncio.current_task()
        assert stream is not None
        gone = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            stream.cancel()

        watcher = asyncio.create_task(watch())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async for text, ends in self.chunks:
                await send(
                    {"type": "http.response.body", "body": text.encode(), "more_body": not ends}
                )
                if ends:
                    return
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not gone or stream.uncancel() > 0:
                raise  # not (only) the client going away
        finally:
            watcher.cancel()
            await self.chunks.aclose()
            self.on_close()


async def _followed(
    farm: Farm, token: str, job_id: str
) -> tuple[api_reads.Caller, tuple[models.Job, models.Result | None] | None]:
    """The caller and the job to follow: None for a job of theirs live in this farm's
    memory (no read: the farm knows its owner), else as read (404 if not theirs)."""
    caller = await api_reads.identify(farm, token)
    owner = farm.owner_of(job_id)
    if caller is not None and owner is not None and (caller.is_admin or owner == caller.user_id):
        return caller, None
    try:
        caller, found = await api_reads.owned_job(farm, token, job_id)
    except api_reads.NotAllowedError:
        raise await refusal(farm, token) from None
    if found is None:
        raise ApiError(ErrorCode.JOB_NOT_FOUND, "No such job.")
    return caller, found


async def job_events(request: Request) -> Response:
    farm, token = farm_of(request), bearer(request)
    job_id = str(request.path_params["job_id"])
    caller, found = await _followed(farm, token, job_id)
    slot = _slot(request, caller.user_id)
    if slot is None:
        raise _refused()

    return _EventStream(_events(farm, caller, job_id, found), slot.release)
