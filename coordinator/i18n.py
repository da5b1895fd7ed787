"""The web UI's languages: gettext catalogs (Babel), the request's locale, negotiation.

Catalogs live in ``webui/locale/<lang>/LC_MESSAGES/messages.po``; a language is
a catalog, not a code change (see docs/operations.md, "Adding a language").
``scripts/install`` compiles the ``.mo`` files; :func:`load_catalogs` compiles
any that are missing or older than their ``.po`` (in memory when the package
directory is read-only), so a checkout runs without an install step.

The locale of the request being served is a context variable: the
:class:`LocaleMiddleware` sets it from the switcher's cookie or
``Accept-Language``, and :func:`activate` refines it once the user (and their
saved preference) is known. ``gettext``/``ngettext`` here read it, for
templates and Python alike. The JSON API always answers in English.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from babel import Locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations
from starlette.types import ASGIApp, Receive, Scope, Send

import webui

log = logging.getLogger(__name__)

LOCALE_DIR: Path = webui.ROOT / "locale"
DOMAIN = "messages"
DEFAULT = "en"
COOKIE = "shapefarm_lang"
COOKIE_MAX_AGE = 365 * 24 * 3600
MAX_ACCEPT_LANGUAGE = 1000  # characters of the header that are read at all
MAX_LANGUAGE_RANGES = 20

_current: ContextVar[str] = ContextVar("shapefarm_locale", default=DEFAULT)
_catalogs: dict[str, NullTranslations] = {}


def _po_path(lang: str, root: Path) -> Path:
    return root / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


def compile_catalog(po: Path) -> NullTranslations:
    """The translations of one ``.po``: its ``.mo`` when fresh, else compiled now
    (written next to it when the directory allows, kept in memory regardless)."""
    mo = po.with_suffix(".mo")
    if mo.exists() and mo.stat().st_mtime >= po.stat().st_mtime:
        with mo.open("rb") as fh:
            return Translations(fh, domain=DOMAIN)
    with po.open("rb") as fh:
        catalog = read_po(fh)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)  # fuzzy entries are left out, as pybabel compile does
    data = buffer.getvalue()
    try:
        # Atomically: another process may be loading the same catalog right now.
        partial = mo.with_name(f".{mo.name}.{os.getpid()}.tmp")
        partial.write_bytes(data)
        os.replace(partial, mo)
    except OSError as exc:
        log.info("catalog %s compiled in memory only (%s)", po, exc)
    return Translations(io.BytesIO(data), domain=DOMAIN)


def load_catalogs(root: Path = LOCALE_DIR) -> dict[str, NullTranslations]:
    """Load (compiling as needed) every catalog under ``root``; English always exists."""
    found: dict[str, NullTranslations] = {DEFAULT: NullTranslations()}
    if root.is_dir():
        for po in sorted(root.glob(f"*/LC_MESSAGES/{DOMAIN}.po")):
            lang = po.parent.parent.name
            found[lang] = compile_catalog(po)
    _catalogs.clear()
    _catalogs.update(found)
    return dict(found)


def _ensure_loaded() -> dict[str, NullTranslations]:
    if not _catalogs:
        load_catalogs()
    return _catalogs


def available() -> tuple[str, ...]:
    """The languages the UI speaks, English first."""
    langs = _ensure_loaded()
    return (DEFAULT, *sorted(lang for lang in langs if lang != DEFAULT))


def language_name(lang: str) -> str:
    """The language's own name for itself ("English", "Русский")."""
    name = Locale.parse(lang).get_display_name(lang) or lang
    return name[:1].upper() + name[1:]


def languages() -> list[tuple[str, str]]:
    """(code, own name) of every language, for switchers and the profile form."""
    return [(lang, language_name(lang)) for lang in available()]


def valid(lang: object) -> str | None:
    """``lang`` if it names a language the UI speaks, else None."""
    return lang if isinstance(lang, str) and lang in _ensure_loaded() else None


def current() -> str:
    """The locale of the request being served (English outside a request)."""
    return _current.get()


def activate(lang: str | None) -> None:
    """Serve the rest of this request in ``lang`` (ignored unless it is available)."""
    chosen = valid(lang)
    if chosen is not None:
        _current.set(chosen)


@contextlib.contextmanager
def using(lang: str | None) -> Iterator[str]:
    """Run a block in ``lang`` (e.g. an e-mail in its recipient's saved language,
    whatever the request's is), then restore the language before it."""
    token = _current.set(valid(lang) or DEFAULT)
    try:
        yield _current.get()
    finally:
        _current.reset(token)


def _translations() -> NullTranslations:
    return _ensure_loaded().get(current()) or _catalogs[DEFAULT]


def gettext(message: str) -> str:
    """``message`` in the current language (itself if there is no translation)."""
    return _translations().gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    """The form of ``singular``/``plural`` for ``n`` under the language's plural rules."""
    return _translations().ngettext(singular, plural, n)


def pgettext(context: str, message: str) -> str:
    return str(_translations().pgettext(context, message))


def npgettext(context: str, singular: str, plural: str, n: int) -> str:
    return _translations().npgettext(context, singular, plural, n)


_ = gettext


def gettext_noop(message: str) -> str:
    """Mark ``message`` for extraction only; translate it later with :func:`gettext`."""
    return message


N_ = gettext_noop


def parse_accept_language(header: str) -> list[str]:
    """Language tags of an ``Accept-Language`` header, most wanted first (q=0 dropped)."""
    ranked: list[tuple[float, int, str]] = []
    parts = header[:MAX_ACCEPT_LANGUAGE].split(",")[:MAX_LANGUAGE_RANGES]
    for index, part in enumerate(parts):
        tag, _sep, params = part.strip().partition(";")
        tag = tag.strip().lower()
        if not tag or tag == "*":
            continue
        quality = 1.0
        for param in params.split(";"):
            key, _eq, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if 0.0 < quality <= 1.0:
            ranked.append((-quality, index, tag))
    return [tag for _q, _i, tag in sorted(ranked)]


def from_accept_language(header: str) -> str | None:
    """The first available language the header asks for ("ru-RU" matches "ru")."""
    langs = _ensure_loaded()
    for tag in parse_accept_language(header):
        for candidate in (tag.replace("-", "_"), tag.split("-")[0]):
            if candidate in langs:
                return candidate
    return None


def negotiate(
    saved: str | None, cookie: str | None, accept_language: str | None, path: str = "/"
) -> str:
    """The request's language: saved preference, the switcher's cookie,
    ``Accept-Language``, English. The JSON API is always English."""
    if path.startswith("/api/"):
        return DEFAULT
    return (
        valid(saved)
        or valid(cookie)
        or (from_accept_language(accept_language) if accept_language else None)
        or DEFAULT
    )


def _cookie_value(raw_cookie: str) -> str | None:
    for item in raw_cookie.split(";"):
        name, _eq, value = item.strip().partition("=")
        if name == COOKIE:
            return value.strip().strip('"')
    return None


class LocaleMiddleware:
    """Sets the request's locale from the cookie and ``Accept-Language`` (the
    saved preference, which needs the database, is applied by :func:`activate`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {}
        for name, value in scope.get("headers", []):
            headers.setdefault(name.lower(), value)
        cookie = _cookie_value(headers.get(b"cookie", b"").decode("latin-1"))
        lang = negotiate(
            None,
            cookie,
            headers.get(b"accept-language", b"").decode("latin-1"),
            scope.get("path", "/"),
        )
        token = _current.set(lang)
        try:
            await self.app(scope, receive, send)
        finally:
            _current.reset(token)


_LATIN = re.compile(r"[A-Za-z]")
_LETTER = re.compile(r"[^\W\d_]")


def needs_english_hint(prompt: object) -> bool:
    """True for a prompt with letters but none of them Latin: Shap-E's text
    encoder (CLIP) was trained on English, so such a prompt gives poor shapes."""
    return isinstance(prompt, str) and bool(_LETTER.search(prompt)) and not _LATIN.search(prompt)


def jinja_globals() -> dict[str, Any]:
    """What templates need besides ``_``: the current locale, the language list and
    the prompt hint's test."""
    return {
        "current_locale": current,
        "languages": languages,
        "needs_english_hint": needs_english_hint,
    }
