"""The systemd unit examples name only settings, commands and exit codes that exist."""

from __future__ import annotations

import re
from dataclasses import fields

import pytest

from agent.cli import EXIT_AUTH
from agent.settings import ENV_PREFIX, build_parser
from coordinator.settings import PREFIX, Settings
from tests.support.coordinators import ROOT

DEPLOY = ROOT / "deploy"
ENV = re.compile(r"^Environment=([A-Z0-9_]+)=", re.MULTILINE)


def _unit(name: str) -> str:
    return (DEPLOY / name).read_text()


def test_units_coordinator_environment_names_real_settings() -> None:
    known = {PREFIX + f.name.upper() for f in fields(Settings)}
    named = set(ENV.findall(_unit("shapefarm-coordinator.service")))
    assert named and named <= known, named - known


def test_units_agent_environment_names_real_options() -> None:
    known = {ENV_PREFIX + a.dest.upper() for a in build_parser()._actions} | {"HF_HOME"}
    named = set(ENV.findall(_unit("shapefarm-agent.service")))
    assert named and named <= known, named - known
    assert f"RestartPreventExitStatus={EXIT_AUTH}" in _unit("shapefarm-agent.service")


@pytest.mark.parametrize(
    ("unit", "script"),
    [
        ("shapefarm-coordinator.service", "shapefarm"),
        ("shapefarm-agent.service", "shapefarm-agent"),
    ],
)
def test_units_exec_start_runs_a_project_script(unit: str, script: str) -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'\n{script} = "' in pyproject
    assert re.search(rf"^ExecStart=\S+/bin/{re.escape(script)}( |$)", _unit(unit), re.MULTILINE)


def test_units_nginx_example_keeps_the_proxy_essentials() -> None:
    text = (DEPLOY / "nginx.conf").read_text()
    for needed in ("location = /agent/ws", "proxy_buffering off", "client_max_body_size",
                   "Strict-Transport-Security", "X-Forwarded-For $remote_addr"):  # fmt: skip
        assert needed in text, needed
