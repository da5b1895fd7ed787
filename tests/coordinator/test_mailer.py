"""The mailer: mail in the recipient's language, a bounded background queue, and an
SMTP server that is down costs a log line, not the coordinator."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from coordinator import i18n
from coordinator.services.mailer import Mail, Mailer, MailError, compose
from tests.support.coordinators import make_settings
from tests.support.mailserver import free_port, smtp_server


def test_compose_in_the_recipients_language_with_text_and_html() -> None:
    async def in_a_task() -> tuple[Mail, str]:
        mail = compose(
            "reset",
            "olga@example.org",
            "Reset your shapefarm password",
            "ru",
            username="olga <b>",
            link="https://farm.example.org/reset-password?token=sfr.a.b",
            minutes=60,
        )
        return mail, i18n.current()

    async def main() -> tuple[Mail, str, str]:
        mail, inside = await asyncio.create_task(in_a_task())
        return mail, inside, i18n.current()

    mail, inside, outside = asyncio.run(main())
    assert mail.subject == "Восстановление пароля shapefarm"
    assert "Здравствуйте, olga <b>!" in mail.text  # plain text: not escaped
    assert "olga &lt;b&gt;" in mail.html and "<b>" not in mail.html  # HTML: escaped
    assert "60 минут" in mail.text
    assert (inside, outside) == ("ru", "en"), "the task's language leaked out"


def test_unknown_language_falls_back_to_english() -> None:
    mail = compose(
        "verify", "a@example.org", "Confirm your e-mail address for shapefarm", "xx",
        username="a", link="https://f/verify-email?token=sfv.a.b", hours=1,
    )  # fmt: skip
    assert mail.subject == "Confirm your e-mail address for shapefarm"
    assert "The link works once, for 1 hour." in mail.text


async def test_send_through_smtp_and_refuse_work_beyond_the_queue(tmp_path: Path) -> None:
    with smtp_server() as inbox:
        settings = make_settings(
            tmp_path, mail_queue_max=1, **inbox.settings("https://farm.example.org")
        )
        mailer = Mailer(settings)
        gate = asyncio.Event()
        mail = Mail("a@example.org", "Subject", "text body", "<p>html body</p>")

        async def blocked() -> None:
            await gate.wait()
            await mailer.send(mail)

        assert mailer.submit(blocked, "first")
        assert not mailer.submit(blocked, "second"), "the queue holds one"
        assert mailer.dropped == 1
        gate.set()
        await mailer.drain()
        received = await inbox.next()
        assert received.envelope_to == ["a@example.org"]
        assert received.message["Auto-Submitted"] == "auto-generated"
        assert received.text.strip() == "text body" and "html body" in received.html


async def test_smtp_down_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(
        tmp_path,
        smtp_host="127.0.0.1",
        smtp_port=free_port(),  # nothing listens
        smtp_tls="none",
        smtp_timeout_s=5.0,
        mail_from="farm <noreply@example.org>",
        public_url="https://farm.example.org",
    )
    mailer = Mailer(settings)
    with pytest.raises(MailError, match=r"127\.0\.0\.1"):
        await mailer.send(Mail("a@example.org", "s", "t", "h"))
    mailer.submit(lambda: mailer.send(Mail("a@example.org", "s", "t", "h")), "a test mail")
    await mailer.drain()
    assert mailer.failed == 1
    assert "could not send a test mail" in caplog.text
