"""``shapefarm demo``: a coordinator on SQLite plus local agents, in one process group.

The first run creates an administrator ``admin`` with a random password (printed
and kept in the data directory) and enrolls the local agents owned by it: one for
text prompts and (unless ``--image-model none``) one for pictures.
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
from coordinator.settings import Settings, load_settings


def agent_command(
    port: int, token_file: Path, data_dir: Path, model: str, device: str, spool: str = "agent-spool"
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
        str(data_dir / spool),
        "--max-batch",
        "4",
    ]


def _token(settings: Settings, path: Path, name: str) -> Path:
    if not path.exists():
        _, token = asyncio.run(issue_token(settings, "admin", name))
        write_secret_file(path, token)
    return path


def run_demo(
    data_dir: Path, port: int | None, model: str, device: str, image_model: str = "tiny-img2img"
) -> int:
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
    _token(settings, token_file, "local demo agent")
    commands = [agent_command(port, token_file, data_dir, model, device)]
    if image_model != "none":
        image_token = _token(settings, data_dir / "image-agent-token", "local demo image agent")
        commands.append(
            agent_command(port, image_token, data_dir, image_model, device, "image-agent-spool")
        )
    url = f"http://127.0.0.1:{port}/"
    print(
        f"\n  shapefarm demo: open {url}\n"
        f"  log in as 'admin' with the password in {password_file} "
        f"({password_file.read_text().strip()}), or register a new account.\n"
        f"  local agents: model {model!r}"
        + (f" and {image_model!r} (pictures)" if image_model != "none" else "")
        + f" on {device}; stop everything with Ctrl-C.\n",
        flush=True,
    )
    agents = [subprocess.Popen(command) for command in commands]  # noqa: S603
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        return serve(settings)
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        for agent in agents:
            agent.terminate()
        for agent in agents:
            try:
                agent.wait(15)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
