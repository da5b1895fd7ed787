from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import EXIT_AUTH, EXIT_USAGE, main, serve
from agent.settings import (
    AgentSettings,
    Secret,
    SettingsError,
    build_parser,
    load_settings,
)
from protocol import CloseCode
from tests.support.agent_fakes import FAKE_TYPES, FakeGenerator, ScriptedCoordinator

ROOT = Path(__file__).resolve().parents[2]
URL = "ws://127.0.0.1:9/agent/ws"


def test_cli_help_names_every_flag_and_variable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for action in build_parser()._actions:
        if action.dest != "help":
            assert action.option_strings[0] in text
            assert f"SHAPEFARM_AGENT_{action.dest.upper()}" in text


def test_cli_module_help_runs_without_importing_torch() -> None:
    code = (
        "import sys, runpy; sys.argv = ['agent', '--help']\n"
        "try:\n    runpy.run_module('agent', run_name='__main__')\n"
        "except SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "--token-file" in proc.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["--url", "http://farm.example/agent/ws", "--token", "t"],
        ["--url", f"{URL},http://farm.example/agent/ws", "--token", "t"],
        ["--url", " , ", "--token", "t"],
        ["--url", ",".join([URL] * 17), "--token", "t"],
        ["--url", URL, "--token", "t", "--max-batch", "0"],
        ["--url", URL, "--token", "t", "--max-batch", "lots"],
        ["--url", URL],
        ["--token", "t"],
        ["--url", URL, "--token", "t", "--log-level", "chatty"],
        ["--url", URL, "--token", "t", "--no-such-flag"],
    ],
)
def test_cli_usage_errors_exit_2(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("URL", "TOKEN", "TOKEN_FILE"):
        monkeypatch.delenv(f"SHAPEFARM_AGENT_{name}", raising=False)
    assert main(argv) == EXIT_USAGE
    assert "error" in capsys.readouterr().err


def test_settings_several_replica_urls(tmp_path: Path) -> None:
    other = "wss://b.farm.example/agent/ws"
    settings = load_settings(["--url", f"{URL}, {other}", "--token", "t"], {})
    assert settings.urls == (URL, other)


def test_settings_flags_win_over_environment_over_defaults(tmp_path: Path) -> None:
    env = {
        "SHAPEFARM_AGENT_URL": "wss://env.example/agent/ws",
        "SHAPEFARM_AGENT_TOKEN": "env-token",
        "SHAPEFARM_AGENT_MAX_BATCH": "2",
        "SHAPEFARM_AGENT_OFFLINE": "yes",
        "SHAPEFARM_AGENT_DATA_DIR": str(tmp_path),
    }
    settings = load_settings(["--max-batch", "3"], env)
    assert settings.url == "wss://env.example/agent/ws"
    assert settings.token.get_secret_value() == "env-token"
    assert settings.max_batch == 3
    assert settings.offline is True
    assert settings.spool_dir == tmp_path / "spool"
    assert settings.model == "openai/shap-e"


def test_settings_token_file_is_read_and_the_token_never_shows(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    settings = load_settings(["--url", URL, "--token-file", str(token_file)], {})
    assert settings.token.get_secret_value() == "s3cret-token"
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings)


def test_settings_refuse_token_and_token_file_together(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not both"):
        load_settings(["--url", URL, "--token", "a", "--token-file", str(tmp_path / "t")], {})


def test_settings_refuse_ca_file_without_tls() -> None:
    with pytest.raises(SettingsError, match="wss"):
        AgentSettings(url=URL, token=Secret("t"), ca_file=Path("ca.pem"))


async def test_cli_serve_exits_3_when_the_token_is_refused(tmp_path: Path) -> None:
    async with ScriptedCoordinator() as server:
        settings = AgentSettings(url=server.url, token=Secret("wrong"), spool_dir=tmp_path)
        running = serve(settings, FakeGenerator(), FAKE_TYPES)
        task = asyncio.create_task(running)
        peer = await server.next_peer()
        await peer.next()
        await peer.ws.close(CloseCode.BAD_TOKEN, "unknown token")
        async with asyncio.timeout(10):
            assert await task == EXIT_AUTH


@pytest.mark.parametrize(
    ("platform", "env", "expected"),
    [
        ("win32", {"LOCALAPPDATA": "C:/Users/v/AppData/Local"}, "C:/Users/v/AppData/Local"),
        ("darwin", {}, str(Path.home() / "Library" / "Application Support")),
        ("linux", {"XDG_DATA_HOME": "/srv/data"}, "/srv/data"),
    ],
)
def test_settings_default_data_dir_follows_the_platform(
    platform: str, env: dict[str, str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.settings import _default_data_dir

    for name in ("LOCALAPPDATA", "XDG_DATA_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert _default_data_dir(platform) == Path(expected) / "shapefarm-agent"
