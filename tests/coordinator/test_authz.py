"""Authorisation matrix over every route of the app.

The route table is read from ``coordinator.app.routes()``, so a new route is
covered as soon as it exists: it must be classified in ``RULES`` (or live under
``/admin``), otherwise ``test_authz_every_route_is_classified`` fails.

Actors: anonymous, alice (owns the objects), bob (another user), root (admin).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from starlette.routing import Mount, Route, WebSocketRoute
from starlette.testclient import TestClient

from coordinator.app import routes
from coordinator.services import apikeys, login_sessions
from coordinator.store import models
from tests.support.images import encoded
from tests.support.mailserver import free_port
from tests.support.ui import (
    farm,
    make_admin,
    make_agent,
    make_job,
    make_key,
    roomy_tiers,
    run,
    user_id,
)
from tests.support.webclient import CSRF, app_client, login, register

# rule names:
#   public       anyone may GET it
#   public-form  a POST anyone may send, with the session's CSRF token
#   public-link  a page anyone may open with a mailed token (400 without a valid one)
#   user         GET for logged-in users (anonymous: redirect to the login page)
#   user-form    POST for logged-in users, CSRF protected
#   job          GET of one job's page/files: owner and admins; others 404
#   job-form     POST changing one job: owner and admins, CSRF protected; others 404
#   key-form     POST changing one of the user's API keys: the owner only
#   session-form POST ending one of the user's login sessions: the owner only
#   api          /api/v1 with a key, user-wide
#   api-job      /api/v1 on one job: owner's and admins' keys; others 404
#   agent-form   POST changing one of the user's own agents: the owner only
#   listed       GET of a gallery-only view of a job (embed): 404 to all for a private job
#   listed-form  POST on a gallery model (like, report): logged in, CSRF; a private job 404s
#                to everyone, its owner and admins included (it is not in the gallery)
#   admin        administrators only: other users 403, anonymous to the login page
#   admin-scrape administrators (or a direct loopback scraper) only: everyone else 403
#   static       the static files mount
#   agent-socket the agents' WebSocket (token auth, tested in the agent link tests)
#   webhook      a payment provider's signed callback: no session or CSRF token; without
#                the provider's keys (as here) it does not exist (404 for everyone);
#                signatures are tested in test_webhooks
RULES: dict[tuple[str, str], str] = {
    ("GET", "/"): "public",
    ("GET", "/login"): "public",
    ("POST", "/login"): "public-form",
    ("GET", "/register"): "public",
    ("POST", "/register"): "public-form",
    ("POST", "/logout"): "public-form",
    ("POST", "/language"): "public-form",
    ("POST", "/profile/voucher"): "user-form",
    ("POST", "/plans/checkout"): "user-form",
    ("POST", "/plans/portal"): "user-form",
    ("POST", "/plans/cancel"): "user-form",
    ("POST", "/billing/webhook/{provider}"): "webhook",
    ("POST", "/logout/everywhere"): "user-form",
    ("GET", "/forgot-password"): "public",
    ("POST", "/forgot-password"): "public-form",
    ("GET", "/reset-password"): "public-link",
    ("POST", "/reset-password"): "public-form",
    ("GET", "/verify-email"): "public-link",
    ("POST", "/verify-email"): "public-form",
    ("POST", "/profile/email"): "user-form",
    ("POST", "/profile/notifications"): "user-form",
    ("GET", "/plans"): "public",
    ("GET", "/api"): "public",
    ("GET", "/api/v1/openapi.json"): "public",
    ("GET", "/healthz"): "public",
    ("GET", "/stats"): "public",
    ("GET", "/metrics"): "admin-scrape",
    ("GET", "/contribute"): "user",
    ("GET", "/contribute/agents"): "user",
    ("POST", "/contribute/agents"): "user-form",
    ("POST", "/contribute/agents/{agent_id}/revoke"): "agent-form",
    ("POST", "/contribute/agents/{agent_id}/pause"): "agent-form",
    ("POST", "/contribute/agents/{agent_id}/resume"): "agent-form",
    ("POST", "/jobs"): "user-form",
    ("GET", "/history"): "user",
    ("GET", "/history/events"): "user",
    ("POST", "/history/delete"): "user-form",
    ("GET", "/profile"): "user",
    ("POST", "/profile/password"): "user-form",
    ("POST", "/profile/api-keys"): "user-form",
    ("POST", "/profile/delete"): "user-form",
    ("POST", "/profile/language"): "user-form",
    ("POST", "/profile/api-keys/{key_id}/revoke"): "key-form",
    ("POST", "/profile/api-keys/revoke-all"): "user-form",
    ("POST", "/profile/api-keys/{key_id}/webhook"): "key-form",
    ("POST", "/profile/api-keys/{key_id}/webhook/test"): "key-form",
    ("POST", "/profile/api-keys/{key_id}/webhook/secret"): "key-form",
    ("POST", "/profile/sessions/{session_id}/revoke"): "session-form",
    ("GET", "/jobs/{job_id}"): "job",
    ("GET", "/jobs/{job_id}/status"): "job",
    ("GET", "/jobs/{job_id}/events"): "job",
    ("GET", "/jobs/{job_id}/model.glb"): "job",
    ("GET", "/jobs/{job_id}/model.meshopt.glb"): "job",
    ("GET", "/jobs/{job_id}/preview.png"): "job",
    ("GET", "/jobs/{job_id}/download/{fmt}"): "job",
    ("GET", "/jobs/{job_id}/input.png"): "job",
    ("POST", "/jobs/{job_id}/cancel"): "job-form",
    ("POST", "/jobs/{job_id}/delete"): "job-form",
    ("POST", "/jobs/{job_id}/visibility"): "job-form",
    ("POST", "/api/v1/jobs"): "api",
    ("GET", "/api/v1/jobs"): "api",
    ("GET", "/api/v1/jobs/{job_id}"): "api-job",
    ("DELETE", "/api/v1/jobs/{job_id}"): "api-job",
    ("POST", "/api/v1/jobs/{job_id}/cancel"): "api-job",
    ("POST", "/api/v1/jobs/{job_id}/visibility"): "api-job",
    ("GET", "/api/v1/jobs/{job_id}/download/{fmt}"): "api-job",
    ("GET", "/api/v1/jobs/{job_id}/image"): "api-job",
    ("GET", "/explore"): "public",
    ("GET", "/u/{name}"): "public",
    ("POST", "/jobs/{job_id}/like"): "listed-form",
    ("POST", "/jobs/{job_id}/report"): "listed-form",
    ("GET", "/favicon.ico"): "public",
    ("GET", "/embed/{job_id}"): "listed",
    ("GET", "/api/v1/jobs/{job_id}/events"): "api-job",
    ("MOUNT", "/static"): "static",
    ("WS", "/agent/ws"): "agent-socket",
}
PARAM = re.compile(r"\{(\w+)(:\w+)?\}")
ACTORS = ("anonymous", "alice", "bob", "root")
SECRET_PROMPT = "alice-secret-prompt"
SECRET_KEY_NAME = "alice-secret-key-name"


def classify(method: str, path: str) -> str | None:
    if (method, path) in RULES:
        return RULES[method, path]
    if path == "/admin" or path.startswith(("/admin/", "/api/v1/admin")):
        return "admin"
    return None


def _fake_param(path: str, name: str, convertor: str | None) -> str:
    if name == "action":  # a real action name, so the route gets past its action lookup
        return "cancel" if path.startswith("/admin/jobs/") else "drain"
    return "999999" if convertor == ":int" else "nope"


def route_table() -> list[tuple[str, str]]:
    table = []
    for route in routes():
        if isinstance(route, Route):
            methods = sorted((route.methods or {"GET"}) - {"HEAD"})
            table += [(method, route.path) for method in methods]
        elif isinstance(route, WebSocketRoute):
            table.append(("WS", route.path))
        elif isinstance(route, Mount):
            table.append(("MOUNT", route.path))
        else:  # pragma: no cover - a new kind of route needs a rule here
            table.append((type(route).__name__, getattr(route, "path", "?")))
    return table


def test_authz_every_route_is_classified() -> None:
    table = route_table()
    unknown = [f"{method} {path}" for method, path in table if classify(method, path) is None]
    assert not unknown, f"classify these routes in tests/coordinator/test_authz.py: {unknown}"
    stale = sorted(set(RULES) - set(table))
    assert not stale, f"RULES lists routes the app no longer has: {stale}"


@dataclass
class World:
    client: TestClient
    cookies: dict[str, dict[str, str]] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    spare_keys: list[str] = field(default_factory=list)  # alice's keys made for key-forms

    def act_as(self, actor: str) -> None:
        self.client.cookies.clear()
        self.client.cookies.update(self.cookies[actor])


def _world(client: TestClient) -> World:
    world = World(client)
    world.cookies["anonymous"] = {}
    client.get("/login")  # the anonymous session gets a CSRF token too
    world.cookies["anonymous"] = dict(client.cookies)
    for actor in ("alice", "bob", "root"):
        client.cookies.clear()
        register(client, actor)
        world.cookies[actor] = dict(client.cookies)
        world.keys[actor] = make_key(client, actor, f"{actor}'s key")[1]
    make_admin(client, "root")
    for actor in ACTORS:
        world.act_as(actor)
        match = CSRF.search(client.get("/login" if actor == "anonymous" else "/").text)
        assert match, actor
        world.tokens[actor] = match.group(1)
        world.cookies[actor] = dict(client.cookies)
    make_key(client, "alice", SECRET_KEY_NAME)
    return world


def _expected(rule: str, method: str, actor: str, with_csrf: bool) -> str:
    """What ``actor`` must get: ok, admin-ok, login, csrf/forbidden (403), hidden (404), 401."""
    is_form = rule.endswith("-form") or (rule == "admin" and method != "GET")
    if is_form and not with_csrf:
        # Anonymous may be sent to the login page first; the action is refused either way.
        return "csrf-or-login" if actor == "anonymous" else "csrf"
    if rule in ("public", "public-form", "static"):
        return "ok"
    if rule == "webhook":
        return "hidden"
    if rule == "public-link":
        return "link"
    if rule == "admin-scrape":
        return "ok" if actor == "root" else "forbidden"
    if rule.startswith("api"):
        if actor == "anonymous":
            return "401"
        return "hidden" if rule == "api-job" and actor == "bob" else "ok"
    if rule == "job":  # public jobs are readable by anyone, so no login redirect
        return "ok" if actor in ("alice", "root") else "hidden"
    if rule == "listed":
        return "hidden"
    if actor == "anonymous":
        return "login"
    if rule == "admin":
        return "admin-ok" if actor == "root" else "forbidden"
    if rule == "job-form":
        return "ok" if actor in ("alice", "root") else "hidden"
    if rule == "listed-form":
        return "hidden"
    if rule in ("key-form", "agent-form", "session-form"):
        return "ok" if actor == "alice" else "hidden"
    return "ok"  # user, user-form


def _check(method: str, status: int, location: str, body: str, expected: str) -> str | None:
    """None if the response matches ``expected``, else what went wrong."""
    if status >= 500:
        return f"server error {status}"
    to_login = status == 303 and location.startswith("/login?next=")
    allowed = status not in (401, 403, 404) and not to_login
    good = {
        # A refused value (400/409/422) still means the actor was let in; a page must render.
        "ok": allowed and (status in (200, 303) if method == "GET" else True),
        "admin-ok": status not in (401, 403) and not to_login,  # 404: the id we sent is fake
        "login": to_login,
        "csrf": status == 403,
        "csrf-or-login": status == 403 or to_login,
        "forbidden": status == 403,
        "hidden": status == 404,
        "link": status in (200, 400),
        "401": status == 401,
    }[expected]
    if not good:
        return f"expected {expected}, got {status} {location}".strip()
    return None


def _request(world: World, method: str, path: str, actor: str, with_csrf: bool) -> str | None:
    rule = classify(method, path)
    assert rule is not None
    client = world.client
    url = path.replace("{fmt}", "glb").replace("{name}", "alice")
    if "{job_id}" in url:
        # A fresh private job for every request: the owner may delete or cancel it.
        # Routes of a job's input image get an image job.
        image = encoded("PNG") if path.endswith(("/input.png", "/image")) else None
        url = url.replace("{job_id}", make_job(client, "alice", SECRET_PROMPT, image=image))
    if "{key_id}" in url:
        url = url.replace("{key_id}", _spare_key(world))
    if "{session_id}" in url:
        url = url.replace("{session_id}", _spare_session(client, "alice"))
    if "{agent_id}" in url and rule != "admin":
        url = url.replace("{agent_id}", make_agent(client, "alice"))
    # Admin routes get ids of nothing: a non-admin must be refused before any lookup,
    # and an admin must get a clear answer (not a server error).
    url = PARAM.sub(lambda m: _fake_param(path, m.group(1), m.group(2)), url)
    world.act_as(actor)
    headers = {"X-Forwarded-For": "203.0.113.9"}  # never the trusted local scraper
    if rule.startswith("api") and actor != "anonymous":
        headers["Authorization"] = f"Bearer {world.keys[actor]}"
    data = {"csrf_token": world.tokens[actor]} if with_csrf else {}
    if method == "MOUNT":
        response = client.get(url + "/app.css")
    elif method == "WS":
        response = client.get(url)
        return None if response.status_code != 200 else "a plain GET of the socket answered 200"
    elif method == "GET":
        response = client.get(url, headers=headers)
    elif rule.startswith("api"):
        response = client.request(method, url, headers=headers, json={})
    else:
        response = client.request(method, url, headers=headers, data=data)
    body = response.text
    if actor in ("anonymous", "bob") and SECRET_PROMPT in body:
        return "leaks alice's private prompt"
    if actor != "alice" and SECRET_KEY_NAME in body:
        return "leaks alice's API key name"
    if path in ENDS_CREDENTIALS:
        _renew(world, actor)
    expected = _expected(rule, method, actor, with_csrf)
    return _check(
        method, response.status_code, response.headers.get("location", ""), body, expected
    )


# Routes that end the actor's own session or API keys when they work: the actor
# gets fresh ones afterwards, so the rest of the matrix still acts as them.
ENDS_CREDENTIALS = {"/logout", "/logout/everywhere", "/profile/api-keys/revoke-all"}


def _renew(world: World, actor: str) -> None:
    if actor == "anonymous":
        return
    client = world.client
    client.cookies.clear()
    login(client, actor)
    match = CSRF.search(client.get("/").text)
    assert match, actor
    world.tokens[actor] = match.group(1)
    world.cookies[actor] = dict(client.cookies)
    world.keys[actor] = make_key(client, actor, f"{actor}'s key")[1]


def _spare_key(world: World) -> str:
    """A fresh key of alice's for a key form; older spares are revoked (at most 20 keys)."""
    client, uid = world.client, user_id(world.client, "alice")
    while len(world.spare_keys) >= 10:
        old = world.spare_keys.pop(0)

        async def revoke(key_id: str = old) -> None:
            async with farm(client).sessions() as db:
                user = await db.get(models.User, uid)
                assert user is not None
                await apikeys.revoke(db, user, key_id)
                await db.commit()

        run(client, revoke)
    key_id = make_key(client, "alice")[0]
    world.spare_keys.append(key_id)
    return key_id


def _spare_session(client: TestClient, username: str) -> str:
    """The id of another login session of ``username`` (as from a second browser)."""
    uid = user_id(client, username)

    async def start() -> str:
        async with farm(client).sessions() as db:
            lifetime = login_sessions.Lifetime(3600.0, 3600.0)
            token = await login_sessions.start(
                db, uid, farm(client).clock(), "192.0.2.1", "spare", lifetime
            )
            await db.commit()
        return token.split(".")[0]

    return run(client, start)


def test_authz_matrix(tmp_path: Path) -> None:
    failures: list[str] = []
    checked = 0
    with app_client(
        tmp_path,
        tiers_file=roomy_tiers(tmp_path),
        auth_rate_per_minute=10_000,
        stream_max_s=0.001,  # live streams end at once
        # Mail on, so that its routes exist; nothing listens there (sending fails, logged).
        smtp_host="127.0.0.1",
        smtp_port=free_port(),
        smtp_tls="none",
        mail_from="farm <noreply@farm.test>",
        public_url="http://127.0.0.1",
        mail_per_ip_per_hour=10_000,
    ) as client:
        world = _world(client)
        for method, path in route_table():
            if classify(method, path) is None:
                continue  # reported by test_authz_every_route_is_classified
            for actor in ACTORS:
                for with_csrf in (True, False) if method in ("POST", "DELETE") else (True,):
                    try:
                        problem = _request(world, method, path, actor, with_csrf)
                    except Exception as exc:  # a server error: report it with the others
                        problem = f"server error {type(exc).__name__}: {exc}"[:300]
                    checked += 1
                    if problem:
                        csrf_note = "" if with_csrf else " without CSRF"
                        failures.append(f"{method} {path} as {actor}{csrf_note}: {problem}")
    assert checked > 100
    assert not failures, "\n".join(failures)


def test_authz_public_job_is_visible_but_not_editable(tmp_path: Path) -> None:
    with app_client(tmp_path, auth_rate_per_minute=10_000) as client:
        world = _world(client)
        job = make_job(client, "alice", "a public teapot", public=True)
        for actor in ACTORS:
            world.act_as(actor)
            for suffix in (
                "",
                "/status",
                "/model.glb",
                "/model.meshopt.glb",
                "/preview.png",
                "/download/obj",
            ):
                assert client.get(f"/jobs/{job}{suffix}").status_code == 200, (actor, suffix)
        for actor in ("anonymous", "bob"):
            world.act_as(actor)
            for action in ("delete", "visibility", "cancel"):
                response = client.post(
                    f"/jobs/{job}/{action}",
                    data={"csrf_token": world.tokens[actor], "visibility": "private"},
                )
                assert response.status_code in (303, 404), (actor, action)
                assert response.headers.get("location", "").startswith(("/login", "")), action
            api = {"Authorization": f"Bearer {world.keys['bob']}"}
            assert client.delete(f"/api/v1/jobs/{job}", headers=api).status_code == 404
        world.act_as("alice")
        assert "a public teapot" in client.get(f"/jobs/{job}").text
