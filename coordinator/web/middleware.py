"""Pure ASGI middleware: security headers, a request body limit, web-only layers."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from starlette.middleware import Middleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# 'wasm-unsafe-eval' lets <model-viewer> compile its WebAssembly mesh decoders;
# it does not allow eval() of JavaScript.
CSP = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self' blob: data:; worker-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


# Pages under these prefixes are made to be framed by other sites (the embed viewer).
FRAMEABLE_CSP = CSP.replace("frame-ancestors 'none'", "frame-ancestors *")


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, secure: bool = False, frameable: tuple[str, ...] = ()) -> None:
        self.app = app
        self.frameable = frameable
        common = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"same-origin"),
            (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
        ]
        if secure:
            common.append((b"strict-transport-security", b"max-age=31536000"))
        self.headers = [
            (b"content-security-policy", CSP.encode()),
            (b"x-frame-options", b"DENY"),
            *common,
        ]
        # No X-Frame-Options at all: it has no "allow everyone" value.
        self.frameable_headers = [(b"content-security-policy", FRAMEABLE_CSP.encode()), *common]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        path: str = scope.get("path", "")
        frameable = bool(self.frameable) and path.startswith(self.frameable)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # Only the embed page itself: its error pages carry the navigation.
                ok = frameable and message["status"] == 200
                headers = self.frameable_headers if ok else self.headers
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in headers if k not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyTooLargeError(Exception):
    pass


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` (413) before the app buffers them.

    ``refusal(path)`` may give the 413 response for a path (the JSON API answers
    in its own error shape); otherwise it is plain text."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        refusal: Callable[[str], Response | None] | None = None,
        larger: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.refusal = refusal
        # Paths that take an upload (an image job's input image) and their own limit.
        self.larger = dict(larger or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope.get("path", ""), self.max_bytes)
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await self._refuse(scope, receive, send)
                return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLargeError
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLargeError:
            if not started:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = self.refusal(scope.get("path", "")) if self.refusal is not None else None
        if response is not None:
            await response(scope, receive, send)
            return
        body = b"Request body too large."
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class WebOnlyMiddleware:
    """Runs ``layers`` (cookie session, locale) for everything but paths under ``bypass``.

    The JSON API takes no cookies and answers in English: the session middleware's
    cookie check and the locale negotiation were per-request work for nothing on its
    hot routes, each also wrapping ``send``. Those requests go straight to the app.
    """

    def __init__(self, app: ASGIApp, layers: Sequence[Middleware], bypass: tuple[str, ...]) -> None:
        self.app = app
        self.bypass = bypass
        web = app
        for cls, args, kwargs in reversed(layers):
            web = cls(web, *args, **kwargs)
        self.web = web

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path", "").startswith(self.bypass):
            await self.app(scope, receive, send)
        else:
            await self.web(scope, receive, send)
