"""Outgoing mail: messages rendered in the recipient's language, sent over SMTP
(``aiosmtplib``) in the background.

Mail is sent off the request: an answer that waited for the SMTP server would
take longer for an address that exists than for one that does not (see
docs/security.md, "Password reset"). :meth:`Mailer.submit` runs the whole job
(look-up, token, send) in a task of its own, at most ``mail_queue_max`` at
once and a few SMTP connections at a time; beyond that work is dropped and
logged, so nobody can make the coordinator hold unbounded mail.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import Any

import aiosmtplib
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

import webui
from coordinator import i18n, labels
from coordinator.settings import Settings

log = logging.getLogger(__name__)

SMTP_CONNECTIONS = 4  # SMTP sessions open at once


class MailError(Exception):
    """The mail could not be handed to the SMTP server."""


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    text: str
    html: str


def _templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(webui.TEMPLATES / "mail")),
        autoescape=select_autoescape(["html"]),
        extensions=["jinja2.ext.i18n"],
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )
    env.install_gettext_callables(  # type: ignore[attr-defined]
        i18n.gettext, i18n.ngettext, newstyle=True
    )
    env.filters["job_title"] = labels.job_title  # a job's prompt, or words for a picture's
    return env


_env = _templates()


def compose(template: str, to: str, subject: str, lang: str | None, **context: Any) -> Mail:
    """``mail/<template>.txt`` and ``.html`` rendered in ``lang``.

    Call it inside the task that sends the mail: it switches that task's
    language (a context variable, so the request that queued it keeps its own).
    ``subject`` is a msgid, translated here.
    """
    i18n.activate(i18n.valid(lang) or i18n.DEFAULT)
    values = {"subject": i18n.gettext(subject), "lang": i18n.current(), **context}
    return Mail(
        to=to,
        subject=values["subject"],
        text=_env.get_template(f"{template}.txt").render(values),
        html=_env.get_template(f"{template}.html").render(values),
    )


class Mailer:
    """Sends :class:`Mail` through the configured SMTP server."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._tasks: set[asyncio.Task[None]] = set()
        self._connections = asyncio.Semaphore(SMTP_CONNECTIONS)
        self.dropped = 0  # work refused because the queue was full (tests, logs)
        self.failed = 0

    @property
    def enabled(self) -> bool:
        return self.settings.mail_enabled

    def message(self, mail: Mail) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.settings.mail_from
        msg["To"] = mail.to
        msg["Subject"] = mail.subject
        msg["Date"] = formatdate(localtime=False)
        domain = parseaddr(self.settings.mail_from)[1].rpartition("@")[2] or None
        msg["Message-ID"] = make_msgid(domain=domain)
        msg["Auto-Submitted"] = "auto-generated"  # no vacation replies to us
        msg.set_content(mail.text)
        msg.add_alternative(mail.html, subtype="html")
        return msg

    async def send(self, mail: Mail) -> None:
        s = self.settings
        if not s.mail_enabled:
            raise MailError("no SMTP server is configured")
        async with self._connections:
            try:
                await aiosmtplib.send(
                    self.message(mail),
                    # Explicit: never recipients parsed out of a header.
                    sender=parseaddr(s.mail_from)[1],
                    recipients=[mail.to],
                    hostname=s.smtp_host,
                    port=s.smtp_port_or_default,
                    username=s.smtp_username or None,
                    password=str(s.smtp_password) or None,
                    use_tls=s.smtp_tls == "tls",
                    start_tls=s.smtp_tls == "starttls",
                    timeout=s.smtp_timeout_s,
                )
            except (aiosmtplib.SMTPException, OSError) as exc:
                raise MailError(f"{s.smtp_host}:{s.smtp_port_or_default}: {exc}") from exc

    def submit(self, work: Callable[[], Awaitable[object]], what: str) -> bool:
        """Run ``work`` in the background; False (and logged) when too much is waiting."""
        if len(self._tasks) >= self.settings.mail_queue_max:
            self.dropped += 1
            log.warning("mail queue full (%d): dropped %s", len(self._tasks), what)
            return False
        task = asyncio.create_task(self._run(work, what), name=f"mail: {what}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _run(self, work: Callable[[], Awaitable[object]], what: str) -> None:
        try:
            await work()
        except MailError as exc:
            self.failed += 1
            log.warning("could not send %s: %s", what, exc)
        except Exception:
            self.failed += 1
            log.exception("mail work failed: %s", what)

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait until the mail work queued so far is done (tests, shutdown)."""
        async with asyncio.timeout(timeout_s):
            while self._tasks:
                await asyncio.wait(set(self._tasks))

    async def close(self, timeout_s: float = 10.0) -> None:
        """Let queued mail go out (bounded), then cancel what is left."""
        if not self._tasks:
            return
        _done, left = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        for task in left:
            task.cancel()
        if left:
            log.warning("%d mails not sent at shutdown", len(left))
            await asyncio.wait(left)
