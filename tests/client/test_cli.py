"""``python -m client`` against a real coordinator and agent, and its usage errors."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from client import cli
from tests.support.coordinators import (
    ROOT,
    make_settings,
    provision,
    running_coordinator,
    start_agent,
    stop_agent,
)


async def test_cli_generates_downloads_and_shows_a_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path / "data")
    key, token_file = await provision(settings, tmp_path)
    key_file = tmp_path / "key"
    key_file.write_text(key + "\n")
    out = tmp_path / "chair.glb"
    async with running_coordinator(settings) as coord:
        agent = start_agent(coord.ws, token_file, tmp_path / "spool", model="instant")
        try:
            common = ["--url", coord.http, "--key-file", str(key_file), "--timeout", "60"]
            code = await asyncio.to_thread(
                cli.main, [*common, "generate", "a red chair", "--steps", "4", "-o", str(out)]
            )
            assert code == 0, capsys.readouterr().err
            job_id = capsys.readouterr().err.split()[1]  # "job ID queued"
            assert out.read_bytes()[:4] == b"glTF"
            # The same file again: refused before anything is queued.
            again = [*common, "generate", "another", "-o", str(out)]
            assert await asyncio.to_thread(cli.main, again) == cli.EXIT_USAGE
            assert "exists" in capsys.readouterr().err
            stl = tmp_path / "chair.stl"
            download = [*common, "download", job_id, "--format", "stl", "-o", str(stl)]
            assert await asyncio.to_thread(cli.main, download) == 0
            assert stl.stat().st_size > 84  # a binary STL's header and count, then faces
            # The viewer's compressed copy, named as the GLB it is.
            monkeypatch.chdir(tmp_path)
            download = [*common, "download", job_id, "--format", "meshopt"]
            assert await asyncio.to_thread(cli.main, download) == 0
            copy = tmp_path / f"{job_id}.meshopt.glb"
            assert capsys.readouterr().out.split()[-1] == copy.name
            assert copy.read_bytes()[:4] == b"glTF"
            assert b'"EXT_meshopt_compression"' in copy.read_bytes()[:4096]
            assert await asyncio.to_thread(cli.main, [*common, "status", job_id]) == 0
            shown = json.loads(capsys.readouterr().out)
            assert (shown["id"], shown["state"]) == (job_id, "succeeded")
            bad_key = tmp_path / "bad-key"
            bad_key.write_text("sfk.not.valid")
            refused = ["--url", coord.http, "--key-file", str(bad_key), "status", job_id]
            assert await asyncio.to_thread(cli.main, refused) == cli.EXIT_FAILED
            assert "401 unauthorized" in capsys.readouterr().err
        finally:
            await stop_agent(agent)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".part")]  # no temp file left


def test_cli_usage_errors_are_clear(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHAPEFARM_KEY", raising=False)
    monkeypatch.delenv("SHAPEFARM_URL", raising=False)
    with pytest.raises(SystemExit) as no_url:
        cli.main(["status", "abc"])
    assert no_url.value.code == 2 and "SHAPEFARM_URL" in capsys.readouterr().err
    assert cli.main(["--url", "http://127.0.0.1:9", "status", "abc"]) == cli.EXIT_USAGE
    assert "no API key" in capsys.readouterr().err
    big = tmp_path / "big"
    big.write_bytes(b"x" * 10_000)
    assert cli.main(["--url", "http://127.0.0.1:9", "--key-file", str(big), "status", "a"]) == 2
    assert "too large" in capsys.readouterr().err
    assert cli.main(["--url", "ftp://x", "--key-file", str(big), "status", "a"]) == 2
    with pytest.raises(SystemExit) as bad_timeout:
        cli.main(["--timeout", "-1", "status", "abc"])
    assert bad_timeout.value.code == 2
    monkeypatch.setenv("SHAPEFARM_KEY", "sfk.a.b")
    assert cli.main(["--url", "http://127.0.0.1:9", "status", "../x"]) == cli.EXIT_USAGE
    assert "not a job id" in capsys.readouterr().err
    # Nobody listens on port 9 (discard): unreachable, exit 3.
    assert cli.main(["--url", "http://127.0.0.1:9", "status", "abc"]) == cli.EXIT_UNREACHABLE


def test_python_dash_m_client_runs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "client", "--help"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and "generate" in done.stdout
    assert done.stdout.startswith("usage: python -m client ")


def test_installed_command_names_itself_in_its_usage(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run as the installed ``shapefarm-client``, the usage line says so (not ``python -m
    client``, which is what ``__main__`` passes)."""
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/shapefarm-client"])
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert capsys.readouterr().out.startswith("usage: shapefarm-client ")
