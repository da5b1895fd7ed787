"""The one place that assembles the coordinator application."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http
import logging
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

import scheduler
import webui
from coordinator import i18n
from coordinator.api import errors as api_errors
from coordinator.api import v1 as api
from coordinator.farm.engine import Farm
from coordinator.farm.events import EventHub
from coordinator.link import agentlink
from coordinator.services import (
    admin_agents,
    agentcontrols,
    api_webhooks,
    auth,
    entitlement,
    job_images,
    job_mail,
    payments,
    shared_limits,
    subscriptions,
)
from coordinator.services.mailer import Mailer
from coordinator.settings import Settings, SettingsError
from coordinator.store import models
from coordinator.store.db import make_engine, make_sessionmaker
from coordinator.store.migrations import upgrade
from coordinator.store.storage import make_blob_store
from coordinator.web import (
    account_mail,
    accounts,
    admin,
    api_reference,
    billing,
    contribute,
    gallery,
    history,
    language,
    metrics,
    pages,
    profile,
    share,
    stats,
)
from coordinator.web import webhooks as webhook_views
from coordinator.web.base import (
    LoginRequiredError,
    current_user,
    locale_of,
    login_redirect,
    make_templates,
    render,
)
from coordinator.web.middleware import (
    BodyLimitMiddleware,
    SecurityHeadersMiddleware,
    WebOnlyMiddleware,
)
from coordinator.web.streams import StreamCaps, StreamLimiter

log = logging.getLogger(__name__)

DEFAULT_TIERS = Path(__file__).with_name("tiers.toml")
# The JSON API's routes skip the cookie session and the locale (see WebOnlyMiddleware).
API_PREFIX = "/api/v1/"
# Job submissions may carry an input image: their bodies get a larger limit.
UPLOAD_PATHS = dict.fromkeys(job_images.SUBMIT_PATHS, job_images.MAX_SUBMIT_BODY_BYTES)


def load_tiers(path: Path | None) -> dict[str, scheduler.Tier]:
    """The tiers of ``path`` (default: the shipped file); SettingsError names what is wrong,
    including a tier that allows more than agents can run (``protocol.limits``)."""
    path = path or DEFAULT_TIERS
    try:
        with open(path, "rb") as fh:
            return scheduler.parse_tiers(tomllib.load(fh))
    except (OSError, ValueError) as exc:  # TOMLDecodeError and LimitError are ValueErrors
        raise SettingsError(f"tiers file {path}: {exc}") from exc


async def agent_ws(websocket: WebSocket) -> None:
    await agentlink.serve_agent(websocket.app.state.farm, websocket)


async def healthz(request: Request) -> Response:
    farm: Farm = request.app.state.farm
    body: dict[str, object] = {"ok": True, "agents": len(farm.agents), "queued": len(farm.queue)}
    if farm.cluster is not None:  # replica mode: which replica answered, and whether it leads
        body |= {"replica": farm.cluster.replica, "leader": farm.cluster.leading}
    return JSONResponse(body)


async def favicon(request: Request) -> Response:
    """Browsers and crawlers ask for /favicon.ico whatever the page links."""
    return FileResponse(
        webui.STATIC / "favicon.svg",
        media_type="image/svg+xml",
        headers={"Cache-Control": "public, max-age=86400"},
    )


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if api_errors.is_api(request.url.path):
        return api_errors.http_exception_response(exc)
    if request.headers.get("accept", "").startswith("text/event-stream"):
        return PlainTextResponse(exc.detail, status_code=exc.status_code)
    return render(
        request,
        "error.html",
        await _user_for_error_page(request),
        status_code=exc.status_code,
        code=exc.status_code,
        # Starlette's own errors (an unknown URL, a wrong method) carry the English
        # reason phrase only: the page's heading says it in the page's language.
        message=None if exc.detail == _phrase(exc.status_code) else exc.detail,
    )


def _phrase(code: int) -> str | None:
    try:
        return http.HTTPStatus(code).phrase
    except ValueError:
        return None


async def _user_for_error_page(request: Request) -> models.User | None:
    """The logged-in user, so an error page keeps the right navigation; never raises."""
    farm: Farm | None = getattr(request.app.state, "farm", None)
    if farm is None or "session" not in request.scope:
        return None
    try:
        async with farm.sessions() as db:
            return await current_user(request, db)
    except Exception:
        log.exception("could not load the user for an error page")
        return None


async def login_required(request: Request, exc: Exception) -> Response:
    if api_errors.is_api(request.url.path):
        return api_errors.from_status(401, "Authentication required.").response()
    return login_redirect(request)


async def server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s", request.url.path, exc_info=exc)
    if api_errors.is_api(request.url.path):
        return api_errors.internal_error_response()
    # This handler runs outside the locale middleware: pick the language here.
    i18n.activate(locale_of(request, None))
    return render(
        request,
        "error.html",
        None,
        status_code=500,
        code=500,
        message=i18n.gettext("Something went wrong on our side. It has been logged."),
    )


# Each view module lists its own routes; the app concatenates them here. The JSON API
# first: its paths (all under /api/) match no other route, and its hot requests no
# longer try two dozen page routes before theirs.
VIEW_MODULES = (
    api,
    accounts,
    account_mail,
    pages,
    api_reference,
    history,
    gallery,
    share,
    profile,
    billing,
    contribute,
    admin,
    stats,
    metrics,
    language,
    webhook_views,
)


def routes() -> list[Route | WebSocketRoute | Mount]:
    return [
        *(route for module in VIEW_MODULES for route in module.ROUTES),
        Route("/healthz", healthz),
        Route("/favicon.ico", favicon),
        WebSocketRoute("/agent/ws", agent_ws),
        Mount("/static", StaticFiles(directory=str(webui.STATIC), check_dir=False), name="static"),
    ]


def create_app(settings: Settings) -> Starlette:
    settings = settings.with_secret()
    tiers = load_tiers(settings.tiers_file)  # a bad tiers file stops the start, not a request

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        await upgrade(settings.db_url)
        engine = make_engine(settings.db_url)
        if engine.dialect.name == "postgresql":
            shared_limits.install(app.state, engine, settings)
        store = make_blob_store(settings)
        await asyncio.to_thread(store.check)  # bad credentials stop the start, clearly
        await asyncio.to_thread(store.sweep_partials)
        farm = Farm(
            settings,
            make_sessionmaker(engine),
            EventHub(),
            tiers,
            store,
            tier_of=entitlement.policy(tiers, settings.subscription_grace_s),
        )
        app.state.farm = farm
        mailer: Mailer = app.state.mailer
        farm.on_control(functools.partial(admin_agents.apply_relayed, farm))
        farm.on_control(functools.partial(agentcontrols.apply_relayed, farm))
        await farm.start()
        app.state.webhooks = hooks = api_webhooks.Webhooks(farm)
        await hooks.start()
        app.state.job_mails = job_mails = job_mail.JobMails(farm, mailer)
        await job_mails.start()
        sweeper = asyncio.create_task(subscriptions.run_sweeper(farm), name="subscriptions")
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await hooks.stop()
            await job_mails.stop()
            await farm.stop()
            await mailer.close()
            await engine.dispose()

    app = Starlette(
        routes=routes(),
        lifespan=lifespan,
        middleware=[
            Middleware(
                SecurityHeadersMiddleware,
                secure=settings.secure_cookies,
                frameable=(share.EMBED_PREFIX,),
            ),
            Middleware(
                BodyLimitMiddleware,
                max_bytes=settings.max_body_bytes,
                refusal=api_errors.body_limit_refusal(settings.max_body_bytes, UPLOAD_PATHS),
                larger=UPLOAD_PATHS,
            ),
            Middleware(
                WebOnlyMiddleware,
                bypass=(API_PREFIX,),
                layers=[
                    Middleware(
                        SessionMiddleware,
                        secret_key=settings.secret_key,
                        session_cookie="shapefarm_session",
                        same_site="lax",
                        https_only=settings.secure_cookies,
                        # The cookie only names a session record, which expires on its
                        # own (idle and absolute): the browser may drop it at the
                        # absolute limit.
                        max_age=int(settings.session_max_age_s),
                    ),
                    Middleware(i18n.LocaleMiddleware),
                ],
            ),
        ],
        exception_handlers={
            HTTPException: http_error,
            api_errors.ApiError: api_errors.handle_api_error,
            LoginRequiredError: login_required,
            500: server_error,
        },
    )
    app.state.settings = settings
    i18n.load_catalogs()  # compiles any .mo that is missing or older than its .po
    app.state.templates = make_templates()
    app.state.api_document = api.DOCUMENT  # the reference page at /api renders it
    app.state.auth_limiter = auth.RateLimiter(settings.auth_rate_per_minute)
    app.state.login_throttle = auth.LoginThrottle()
    app.state.mailer = Mailer(settings)
    hour = 3600.0
    app.state.mail_limits = (
        auth.RateLimiter(settings.mail_per_ip_per_hour, hour),
        auth.RateLimiter(settings.mail_per_address_per_hour, hour),
    )
    app.state.streams = StreamLimiter(StreamCaps.from_settings(settings))
    # None without the provider's keys: paid plans show "not available".
    app.state.payments = payments.make_provider(settings)
    app.state.voucher_limiter = auth.RateLimiter(settings.voucher_attempts_per_hour, 3600.0)
    return app
