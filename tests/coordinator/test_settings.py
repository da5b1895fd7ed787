"""load_settings(): every field read from its SHAPEFARM_* variable by its real type."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
from starlette.datastructures import Secret

from coordinator.settings import FIELD_TYPES, PARSERS, Settings, SettingsError, load_settings


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
