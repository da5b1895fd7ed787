"""load_settings(): every field read from its SHAPEFARM_* variable by its real type."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from starlette.datastructures import Secret

from coordinator.settings import FIELD_TYPES, PARSERS, Settings, SettingsError, load_settings
from tests.support.coordinators import make_settings


def test_settings_every_field_has_a_parser() -> None:
    assert {f.name for f in fields(Settings)} == set(FIELD_TYPES)
    assert all(kind in PARSERS for kind in FIELD_TYPES.values()), FIELD_TYPES


def test_settings_environment_values_get_their_field_types() -> None:
    settings = load_settings(
        environ={
            "SHAPEFARM_PORT": "8123",
            "SHAPEFARM_LEASE_S": "90.5",
            "SHAPEFARM_SECURE_COOKIES": "yes",
            "SHAPEFARM_TIERS_FILE": "/etc/shapefarm/tiers.toml",
            "SHAPEFARM_DATA_DIR": "/var/lib/shapefarm",
            "SHAPEFARM_SECRET_KEY": "s3cret",
            "SHAPEFARM_TRUSTED_PROXIES": " 10.0.0.1, ,10.0.0.2 ",
            "SHAPEFARM_PUBLIC_URL": "https://farm.example.org",
        }
    )
    assert settings.port == 8123 and settings.lease_s == 90.5
    assert settings.secure_cookies is True
    assert settings.tiers_file == Path("/etc/shapefarm/tiers.toml")
    assert settings.data_dir == Path("/var/lib/shapefarm")
    assert isinstance(settings.secret_key, Secret) and str(settings.secret_key) == "s3cret"
    assert settings.trusted_proxies == ("10.0.0.1", "10.0.0.2")
    assert settings.public_url == "https://farm.example.org"


@pytest.mark.parametrize(
    ("name", "raw"),
    [("PORT", "80.5"), ("LEASE_S", "long"), ("SECURE_COOKIES", "maybe")],
)
def test_settings_bad_environment_value_names_the_variable(name: str, raw: str) -> None:
    with pytest.raises(SettingsError, match=f"SHAPEFARM_{name}={raw!r}"):
        load_settings(environ={f"SHAPEFARM_{name}": raw})


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
