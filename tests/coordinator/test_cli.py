from __future__ import annotations

import asyncio
import io
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from coordinator.cli.admin_cli import admin_db
from coordinator.cli.main import main
from coordinator.services import login_sessions
from coordinator.services.auth import verify_password
from coordinator.services.enrollment import MAX_ACTIVE_AGENTS
from coordinator.settings import SettingsError, load_settings
from coordinator.store import models
from tests.support.coordinators import PASSWORD, make_settings

NEW_PASSWORD = "a brand new long passphrase"


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["coordinator", "--help"],
        ["demo", "--help"],
        ["admin", "--help"],
        ["admin", "issue-token", "--help"],
        ["admin", "reset-password", "--help"],
    ],
)
def test_cli_help_exits_zero(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    assert "usage: shapefarm" in capsys.readouterr().out


def test_cli_agent_subcommand_hands_over_to_agent_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "coordinator.cli", "agent", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and "usage: shapefarm-agent" in done.stdout


def test_cli_rejects_bad_setting_from_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SHAPEFARM_LEASE_S", "lots")
    assert main(["coordinator"]) == 2
    assert "SHAPEFARM_LEASE_S='lots'" in capsys.readouterr().err


def test_settings_lease_must_exceed_heartbeat() -> None:
    with pytest.raises(SettingsError, match="lease_s"):
        load_settings({"heartbeat_s": 30.0, "lease_s": 10.0}, environ={})


def test_settings_environment_then_overrides() -> None:
    settings = load_settings(
        {"port": 9001},
        environ={
            "SHAPEFARM_PORT": "9000",
            "SHAPEFARM_SECURE_COOKIES": "yes",
            "SHAPEFARM_TRUSTED_PROXIES": "10.0.0.1, ::1",
        },
    )
    assert settings.port == 9001 and settings.secure_cookies
    assert settings.trusted_proxies == ("10.0.0.1", "::1")
    assert "SECRET" not in repr(load_settings(environ={"SHAPEFARM_SECRET_KEY": "SECRET"}))


def test_cli_admin_creates_user_and_token_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["admin", *data, "create-admin", "root", "--password-stdin"]) == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["admin", *data, "create-admin", "root", "--password-stdin"]) == 1
    assert "exists already" in capsys.readouterr().err
    token_file = tmp_path / "token"
    assert main(["admin", *data, "issue-token", "root", "--token-file", str(token_file)]) == 0
    assert token_file.read_text().startswith("sfa.")
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert main(["admin", *data, "set-tier", "root", "platinum"]) == 1
    assert "unknown tier 'platinum'" in capsys.readouterr().err
    assert main(["admin", *data, "set-tier", "nobody", "plus"]) == 1


def test_cli_admin_refuses_weak_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    assert (
        main(["admin", "--data-dir", str(tmp_path), "create-user", "bob", "--password-stdin"]) == 1
    )
    assert "at least 10 characters" in capsys.readouterr().err


def test_cli_admin_reset_password_ends_sessions_and_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["admin", *data, "create-user", "bob", "--password-stdin"]) == 0
    assert main(["admin", *data, "api-key", "bob", "--key-file", str(tmp_path / "key")]) == 0
    settings = make_settings(tmp_path / "data")
    lifetime = login_sessions.Lifetime(3600.0, 3600.0)

    async def log_in() -> None:
        async with admin_db(settings) as db:
            uid = await db.scalar(select(models.User.id))
            assert uid is not None
            await login_sessions.start(db, uid, 1.0, "192.0.2.1", "ua", lifetime)
            await db.commit()

    async def left() -> tuple[int, int, bool]:
        async with admin_db(settings) as db:
            counts = [
                int(await db.scalar(select(func.count()).select_from(table)) or 0)
                for table in (models.LoginSession, models.ApiKey)
            ]
            user = await db.scalar(select(models.User))
            assert user is not None
            return counts[0], counts[1], verify_password(user.password_hash, NEW_PASSWORD)

    asyncio.run(log_in())
    monkeypatch.setattr(sys, "stdin", io.StringIO(NEW_PASSWORD + "\n"))
    assert main(["admin", *data, "reset-password", "bob", "--password-stdin"]) == 0
    assert "sessions and API keys are revoked" in capsys.readouterr().out
    assert asyncio.run(left()) == (0, 0, True)
    monkeypatch.setattr(sys, "stdin", io.StringIO(NEW_PASSWORD + "\n"))
    assert main(["admin", *data, "reset-password", "nobody", "--password-stdin"]) == 1


@pytest.mark.slow
def test_cli_demo_listens_on_shapefarm_port_with_its_agents(tmp_path: Path) -> None:
    import json
    import os
    import signal
    import socket
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "SHAPEFARM_PORT": str(port), "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "-m", "coordinator.cli", "demo", "--data-dir", str(tmp_path / "d")]
    argv += ["--device", "cpu"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline, health = time.monotonic() + 90, {}
        while time.monotonic() < deadline and health.get("agents") != 2:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    health = json.loads(r.read())
            except OSError:
                pass
            time.sleep(0.2)
        # The text agent and the image agent (--image-model tiny-img2img by default).
        assert health.get("agents") == 2, f"demo on SHAPEFARM_PORT={port}: {health}"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert f"open http://127.0.0.1:{port}/" in out.decode(), out.decode()[-2000:]


def test_cli_refuses_a_tier_above_the_generation_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tier that admits jobs no agent may run stops the start with a message naming it."""
    shipped = Path(__file__).resolve().parents[2] / "coordinator" / "tiers.toml"
    tiers = tmp_path / "tiers.toml"
    tiers.write_text(shipped.read_text().replace("max_steps = 256", "max_steps = 512"))
    monkeypatch.setenv("SHAPEFARM_TIERS_FILE", str(tiers))
    monkeypatch.setenv("SHAPEFARM_DATA_DIR", str(tmp_path / "data"))
    assert main(["coordinator"]) == 2
    err = capsys.readouterr().err
    assert f"tiers file {tiers}" in err
    assert "max_steps = 512 is more than agents can run" in err


def test_cli_admin_set_tier_and_issue_token_go_through_the_web_services(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same validation, limits and audit entries as the admin console and /contribute."""
    data = ["--data-dir", str(tmp_path / "data")]
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["admin", *data, "create-user", "bob", "--password-stdin"]) == 0
    capsys.readouterr()
    for days in ("0", "-1", "3651", "nan"):
        assert main(["admin", *data, "set-tier", "bob", "plus", "--days", days]) == 1
        assert "days must be between 0 and 3650" in capsys.readouterr().err
    assert main(["admin", *data, "set-tier", "bob", "plus", "--days", "30"]) == 0
    assert main(["admin", *data, "issue-token", "bob", "--name", " "]) == 1
    assert "give the agent a name of 1–64 characters" in capsys.readouterr().err
    for i in range(MAX_ACTIVE_AGENTS):
        assert main(["admin", *data, "issue-token", "bob", "--name", f"gpu {i}"]) == 0
    assert main(["admin", *data, "issue-token", "bob", "--name", "one too many"]) == 1
    assert f"you have {MAX_ACTIVE_AGENTS} active agents" in capsys.readouterr().err

    async def recorded() -> tuple[list[tuple[str, str, str, int | None]], list[bool], str]:
        async with admin_db(make_settings(tmp_path / "data")) as db:
            entries = await db.scalars(select(models.AuditEntry).order_by(models.AuditEntry.id))
            agents = await db.scalars(select(models.Agent.approved))
            user = await db.scalar(select(models.User))
            assert user is not None
            rows = [(e.action, e.target, e.detail, e.actor_id) for e in entries]
            return rows, list(agents), user.tier

    entries, approved, tier = asyncio.run(recorded())
    assert tier == "plus"
    assert entries[0] == ("user.tier", "bob", "plus for 30 days via CLI", None)
    enrolls = [e for e in entries if e[0] == "agent.enroll"]
    assert len(enrolls) == MAX_ACTIVE_AGENTS
    assert enrolls[0][2] == "'gpu 0' for bob via CLI" and enrolls[0][3] is None
    assert approved == [False] * MAX_ACTIVE_AGENTS  # a user's agents wait for an admin


def test_settings_subscription_values_are_checked() -> None:
    with pytest.raises(SettingsError, match="payment_provider"):
        load_settings({"payment_provider": "paypal"}, environ={})
    with pytest.raises(SettingsError, match="subscription_grace_s"):
        load_settings(environ={"SHAPEFARM_SUBSCRIPTION_GRACE_S": "-1"})
    settings = load_settings(environ={"SHAPEFARM_STRIPE_SECRET_KEY": "sk_test_hidden"})
    assert "sk_test_hidden" not in repr(settings)
