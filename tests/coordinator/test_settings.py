"""Settings: what the mail settings refuse, and how the CLI flags reach them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import make_settings

MAIL_ON = {"smtp_host": "mx", "public_url": "https://f", "mail_from": "a@b"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"smtp_tls": "ssl"}, "smtp_tls must be one of"),
        ({"smtp_host": "mx", "mail_from": "x@y", "public_url": ""}, "public_url"),
        ({"smtp_host": "mx", "public_url": "https://f"}, "mail_from"),
        ({**MAIL_ON, "smtp_tls": "tls"}, ""),
        (
            {"smtp_host": "mx", "public_url": "https://f", "mail_from": "a@b\r\nBcc: c@d"},
            "mail_from",
        ),
        (
            {
                "smtp_host": "mx",
                "public_url": "https://f",
                "mail_from": "a@b",
                "smtp_username": "u",
            },
            "go together",
        ),
        ({"smtp_port": 70000}, "not a TCP port"),
        ({"mail_per_address_per_hour": 0}, ">= 1"),
    ],
)
def test_mail_settings_refuse_what_cannot_work(
    tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    from coordinator.settings import SettingsError

    if not message:  # a valid combination
        assert make_settings(tmp_path, **overrides).smtp_port_or_default == 465
        return
    with pytest.raises(SettingsError, match=re.escape(message)):
        make_settings(tmp_path, **overrides)


def test_cli_flags_and_password_file_reach_the_settings(tmp_path: Path) -> None:
    from coordinator.cli.main import _settings, build_parser, main

    secret = tmp_path / "smtp-password"
    secret.write_text("s3cret\n")
    flags = [
        "coordinator",
        "--data-dir",
        str(tmp_path),
        "--public-url",
        "https://farm.example.org",
        "--smtp-host",
        "mail.example.org",
        "--smtp-tls",
        "tls",
        "--smtp-username",
        "farm",
        "--smtp-password-file",
        str(secret),
        "--mail-from",
        "farm <noreply@example.org>",
        "--notify-after",
        "600",
    ]
    settings = _settings(build_parser().parse_args(flags))
    assert (settings.smtp_host, settings.smtp_port_or_default, settings.smtp_tls) == (
        "mail.example.org",
        465,
        "tls",
    )
    assert str(settings.smtp_password) == "s3cret" and "s3cret" not in repr(settings)
    assert settings.notify_after_s == 600.0 and settings.mail_enabled
    missing = [*flags[:-6], "--smtp-password-file", str(tmp_path / "nope"), *flags[-4:]]
    assert main(missing) == 2
