"""``shapefarm demo``: a coordinator on SQLite plus one local agent, in one process group.

The first run creates an administrator ``admin`` with a random password (printed
and kept in the data directory) and enrolls a local agent owned by it.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from coordinator.cli.admin_cli import create_user, issue_token, write_secret_file
from coordinator.cli.serve import serve
from coordinator.settings import load_settings


def agent_command(
    port: int, token_file: Path, data_dir: Path, model: str, device: str
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "agent",
        "--url",
        f"ws://127.0.0.1:{port}/agent/ws",
        "--token-file",
        str(token_file),
        "--model",
        model,
        "--device",
        device,
        "--spool-dir",
        str(data_dir / "agent-spool"),
        "--max-batch",
        "4",
    ]


def run_demo(data_dir: Path, port: int | None, model: str, device: str) -> int:
    """``port`` None: ``SHAPEFARM_PORT`` or the default (the same rule as every setting)."""
    chosen = load_settings({"data_dir": data_dir, "port": port, "host": "127.0.0.1"})
    port = chosen.port
    settings = replace(chosen, public_url=chosen.public_url or f"http://127.0.0.1:{port}")
    data_dir.mkdir(parents=True, exist_ok=True)
    password_file = data_dir / "admin-password"
    token_file = data_dir / "agent-token"
    if not password_file.exists():
        password = secrets.token_urlsafe(12)
        asyncio.run(create_user(settings, "admin", password, None, is_admin=True))
        write_secret_file(password_file, password)
    if not token_file.exists():
        _, token = asyncio.run(issue_token(settings, "admin", "local demo agent"))
        write_secret_file(token_file, token)
    url = f"http://127.0.0.1:{port}/"
    print(
        f"\n  shapefarm demo: open {url}\n"
        f"  log in as 'admin' with the password in {password_file} "
        f"({password_file.read_text().strip()}), or register a new account.\n"
        f"  local agent: model {model!r} on {device}; stop everything with Ctrl-C.\n",
        flush=True,
    )
    agent = subprocess.Popen(agent_command(port, token_file, data_dir, model, device))  # noqa: S603
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        return serve(settings)
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        agent.terminate()
        try:
            agent.wait(15)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
