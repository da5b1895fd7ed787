"""History: the user's jobs and models, newest first, searchable, filterable, live."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlencode

from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from coordinator.i18n import gettext
from coordinator.i18n import gettext as _
from coordinator.request_context import MAX_PAGES, farm_of, int_param
from coordinator.services import auth, jobs
from coordinator.web.base import is_htmx, redirect, render, require_user, safe_next, sse_response
from scheduler.lifecycle import JobState

PAGE_SIZE = 20
MAX_QUERY = 200
SSE_KEEPALIVE_S = 15.0
# A running job publishes on every diffusion step; the list re-renders at most this often.
SSE_MIN_INTERVAL_S = 1.0


@dataclass(frozen=True)
class HistoryQuery:
    q: str = ""
    state: str = ""
    page: int = 1

    @classmethod
    def parse(cls, params: QueryParams) -> HistoryQuery:
        """Validate the query string; a bad value is a 400 with a clear message."""
        q = params.get("q", "").strip()
        if len(q) > MAX_QUERY:
            raise HTTPException(
                400,
                gettext("The search text is limited to %(max)s characters.") % {"max": MAX_QUERY},
            )
        state = params.get("state", "")
        if state and state not in {s.value for s in JobState}:
            names = ", ".join(s.value for s in JobState)
            raise HTTPException(
                400,
                gettext("Unknown status %(state)r; use one of: %(names)s.")
                % {"state": state, "names": names},
            )
        return cls(q=q, state=state, page=int_param(params, "page", 1, 1, MAX_PAGES))

    def url(self, **changes: object) -> str:
        values = {"q": self.q, "state": self.state, "page": self.page, **changes}
        kept = {k: v for k, v in values.items() if v not in ("", None, 1)}
        return "/history" + (f"?{urlencode(kept)}" if kept else "")


async def history_page(request: Request) -> Response:
    farm = farm_of(request)
    query = HistoryQuery.parse(request.query_params)
    async with farm.sessions() as db:
        user = await require_user(request, db)
        rows, total = await jobs.list_jobs(
            db,
            user,
            limit=PAGE_SIZE,
            offset=(query.page - 1) * PAGE_SIZE,
            query=query.q,
            state=query.state,
        )
        results = await jobs.results_for(db, [job.id for job in rows])
    pages = max(1, -(-total // PAGE_SIZE))
    return render(
        request,
        "_partials/history_rows.html" if is_htmx(request) else "history.html",
        user,
        jobs=rows,
        results=results,
        total=total,
        query=query,
        pages=pages,
        states=[s.value for s in JobState],
        positions=farm.positions(),
    )


async def history_events(request: Request) -> Response:
    """SSE: one ``changed`` event whenever any of the user's jobs changes (rate-limited)."""
    farm = farm_of(request)
    async with farm.sessions() as db:
        user = await require_user(request, db)

    async def stream() -> AsyncIterator[str]:
        # The stream ends after this long and the browser's EventSource reconnects:
        # no connection (and no subscription) outlives a forgotten tab for ever.
        deadline = time.monotonic() + farm.settings.stream_max_s
        async with farm.hub.subscribe(f"user:{user.id}") as queue:
            yield ": connected\n\n"
            while time.monotonic() < deadline and not await request.is_disconnected():
                try:
                    wait = min(SSE_KEEPALIVE_S, max(0.0, deadline - time.monotonic()))
                    await asyncio.wait_for(queue.get(), wait)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                await asyncio.sleep(SSE_MIN_INTERVAL_S)  # rate limit, not synchronisation
                while not queue.empty():  # coalesce the burst into one refresh
                    queue.get_nowait()
                yield "event: changed\ndata: jobs\n\n"

    return sse_response(request, user, stream)


async def bulk_delete(request: Request) -> Response:
    """Delete the selected models (the user's own only; one confirmation in the page)."""
    farm = farm_of(request)
    async with farm.sessions() as db:
        user = await require_user(request, db)
        await auth.check_csrf(request)
        form = await request.form(max_fields=jobs.MAX_BULK_DELETE + 10)
        ids = [str(value) for value in form.getlist("job")]
        if not ids:
            raise HTTPException(400, _("Select at least one model to delete."))
        if len(ids) > jobs.MAX_BULK_DELETE:
            raise HTTPException(
                400,
                _("At most %(n)d models can be deleted at once.") % {"n": jobs.MAX_BULK_DELETE},
            )
        await jobs.delete_many(farm, db, user, ids)
    back = safe_next(form.get("back"))
    return redirect(request, back if back.startswith("/history") else "/history")


ROUTES = [
    Route("/history", history_page),
    Route("/history/delete", bulk_delete, methods=["POST"]),
    Route("/history/events", history_events),
]
