"""A real SMTP server on 127.0.0.1 for tests (aiosmtpd), and reading what it received."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

LINK = re.compile(r"https?://\S+/(?:reset-password|verify-email)\?token=[A-Za-z0-9_.\-]+")


def free_port() -> int:
    """A TCP port nothing listens on right now (for servers whose URL must be known first)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Received:
    envelope_to: list[str]
    message: EmailMessage

    @property
    def text(self) -> str:
        part = self.message.get_body(("plain",))
        assert part is not None, "no text/plain part"
        return str(part.get_content())

    @property
    def html(self) -> str:
        part = self.message.get_body(("html",))
        assert part is not None, "no text/html part"
        return str(part.get_content())

    def link(self) -> str:
        found = LINK.search(self.text)
        assert found, f"no link in the mail:\n{self.text}"
        return found.group(0)


@dataclass
class Inbox:
    """What the server accepted, in order; :meth:`next` waits for the next mail."""

    host: str = "127.0.0.1"
    port: int = 0
    refuse: int = 0  # the next this many mails are refused with 451 (try again later)
    _mails: queue.Queue[Received] = field(default_factory=queue.Queue)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse > 0:
            self.refuse -= 1
            return "451 4.3.0 try again later"
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self._mails.put(Received(list(envelope.rcpt_tos), message))
        return "250 OK"

    async def next(self, timeout_s: float = 15.0) -> Received:
        """The next mail, waiting for it at most ``timeout_s`` (AssertionError after)."""
        try:
            return await asyncio.to_thread(self._mails.get, True, timeout_s)
        except queue.Empty:
            raise AssertionError(f"no mail arrived within {timeout_s} s") from None

    def wait(self, timeout_s: float = 15.0) -> Received:
        """:meth:`next` for synchronous tests (the TestClient's)."""
        try:
            return self._mails.get(True, timeout_s)
        except queue.Empty:
            raise AssertionError(f"no mail arrived within {timeout_s} s") from None

    def empty(self) -> bool:
        return self._mails.empty()

    def settings(self, public_url: str) -> dict[str, Any]:
        """Coordinator setting overrides that send mail here."""
        return {
            "smtp_host": self.host,
            "smtp_port": self.port,
            "smtp_tls": "none",
            "mail_from": "shapefarm <noreply@farm.test>",
            "public_url": public_url,
        }


@contextlib.contextmanager
def smtp_server(port: int | None = None, refuse: int = 0) -> Iterator[Inbox]:
    """aiosmtpd on ``port`` (default: a free one) of 127.0.0.1, stopped on exit."""
    inbox = Inbox(port=port or free_port(), refuse=refuse)
    controller = Controller(inbox, hostname=inbox.host, port=inbox.port)
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()
