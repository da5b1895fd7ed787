"""``shapefarm``: run a coordinator, an agent, the demo, or administer users.

Only the standard library is imported at module level so that ``shapefarm
agent`` works on a GPU machine that installed ``shapefarm[agent]`` alone.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _settings(args: argparse.Namespace) -> Any:
    from coordinator.settings import load_settings

    password = _smtp_password(getattr(args, "smtp_password_file", None))
    return load_settings(
        {
            "data_dir": getattr(args, "data_dir", None),
            "database_url": getattr(args, "database_url", None),
            "host": getattr(args, "host", None),
            "port": getattr(args, "port", None),
            "public_url": getattr(args, "public_url", None),
            "tiers_file": getattr(args, "tiers_file", None),
            "secure_cookies": True if getattr(args, "secure_cookies", False) else None,
            "smtp_host": getattr(args, "smtp_host", None),
            "smtp_port": getattr(args, "smtp_port", None),
            "smtp_tls": getattr(args, "smtp_tls", None),
            "smtp_username": getattr(args, "smtp_username", None),
            "smtp_password": password,
            "mail_from": getattr(args, "mail_from", None),
            "notify_after_s": getattr(args, "notify_after", None),
        }
    )


def _smtp_password(path: Path | None) -> Any:
    """The SMTP password from a file (a flag's value would show in ``ps``)."""
    from starlette.datastructures import Secret

    from coordinator.settings import SettingsError

    if path is None:
        return None
    try:
        return Secret(path.read_text().strip())
    except OSError as exc:
        raise SettingsError(f"--smtp-password-file: {exc}") from None


def _add_mail(parser: argparse.ArgumentParser) -> None:
    mail = parser.add_argument_group(
        "e-mail", "SMTP for password reset, address verification and job notices"
    )
    mail.add_argument("--smtp-host", help="SMTP server (env SHAPEFARM_SMTP_HOST; none: no mail)")
    mail.add_argument(
        "--smtp-port", type=int, help="SMTP port (env SHAPEFARM_SMTP_PORT; default by --smtp-tls)"
    )
    mail.add_argument(
        "--smtp-tls",
        choices=["none", "starttls", "tls"],
        help="none (port 25), starttls (587, the default) or tls (465) (env SHAPEFARM_SMTP_TLS)",
    )
    mail.add_argument("--smtp-username", help="SMTP login (env SHAPEFARM_SMTP_USERNAME)")
    mail.add_argument(
        "--smtp-password-file",
        type=Path,
        help="file holding the SMTP password (or env SHAPEFARM_SMTP_PASSWORD)",
    )
    mail.add_argument(
        "--mail-from",
        help='sender, e.g. "shapefarm <noreply@example.org>" (env SHAPEFARM_MAIL_FROM)',
    )
    mail.add_argument(
        "--notify-after",
        type=float,
        metavar="SECONDS",
        help="mail users who opted in when a job that waited this long ends "
        "(env SHAPEFARM_NOTIFY_AFTER_S; default 300)",
    )


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", type=Path, help="data directory (env SHAPEFARM_DATA_DIR; default ./data)"
    )
    parser.add_argument(
        "--database-url",
        help="SQLAlchemy URL (env SHAPEFARM_DATABASE_URL; default SQLite in the data dir)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shapefarm",
        description="Run a shapefarm coordinator, an agent or the demo, or administer users.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "coordinator",
        help="run the coordinator web server",
        description="Serve the web UI, the JSON API and the agent WebSocket.",
    )
    _add_common(serve)
    serve.add_argument("--host", help="bind address (env SHAPEFARM_HOST; default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port (env SHAPEFARM_PORT; default 8000)")
    serve.add_argument(
        "--public-url", help="URL users and agents reach, e.g. https://farm.example.org"
    )
    serve.add_argument("--tiers-file", type=Path, help="tier definitions (TOML)")
    serve.add_argument(
        "--secure-cookies", action="store_true", help="mark cookies Secure (behind TLS)"
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    _add_mail(serve)

    sub.add_parser("agent", help="run a GPU agent (same as shapefarm-agent)", add_help=False)

    demo = sub.add_parser(
        "demo",
        help="coordinator + one local agent on SQLite, for trying it out",
        description="Start a coordinator and a local agent in one process group.",
    )
    demo.add_argument(
        "--data-dir", type=Path, default=Path("data/demo"), help="default ./data/demo"
    )
    demo.add_argument(
        "--port", type=int, help="TCP port on 127.0.0.1 (env SHAPEFARM_PORT; default 8000)"
    )
    demo.add_argument(
        "--model",
        default="tiny",
        help="'tiny' (random weights, seconds on a CPU, shapes are noise), "
        "'openai/shap-e' or a local directory with the weights",
    )
    demo.add_argument(
        "--image-model",
        default="tiny-img2img",
        help="a second local agent for jobs made from a picture: 'tiny-img2img' (random "
        "weights), 'openai/shap-e-img2img', a local directory, or 'none'",
    )
    demo.add_argument("--device", default="auto", help="auto, cpu or cuda")

    admin = sub.add_parser("admin", help="administer users, tiers and agent tokens")
    _add_common(admin)
    admin_sub = admin.add_subparsers(dest="action", required=True, metavar="ACTION")
    admin_sub.add_parser("migrate", help="apply database migrations")
    for name, helptext in (
        ("create-admin", "create an administrator"),
        ("create-user", "create a user"),
        ("reset-password", "set a user's password (ends their sessions, revokes their API keys)"),
    ):
        p = admin_sub.add_parser(name, help=helptext)
        p.add_argument("username")
        if name != "reset-password":
            p.add_argument("--email")
        p.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password from standard input instead of prompting",
        )
    token = admin_sub.add_parser("issue-token", help="enroll an agent and print its token once")
    token.add_argument("owner", help="username owning the agent")
    token.add_argument("--name", default="agent", help="agent name")
    token.add_argument("--token-file", type=Path, help="write the token to this file (mode 600)")
    key = admin_sub.add_parser("api-key", help="create an API key for a user and print it once")
    key.add_argument("username")
    key.add_argument("--name", default="CLI key", help="key name")
    key.add_argument("--key-file", type=Path, help="write the key to this file (mode 600)")
    tier = admin_sub.add_parser("set-tier", help="change a user's tier")
    tier.add_argument("username")
    tier.add_argument("tier")
    tier.add_argument("--days", type=float, help="expires after this many days")
    voucher = admin_sub.add_parser(
        "create-voucher", help="create a voucher code for days of a tier and print it once"
    )
    voucher.add_argument("tier")
    voucher.add_argument("--days", type=float, required=True, help="days of the tier it gives")
    voucher.add_argument("--uses", type=int, default=1, help="how many users may redeem it")
    voucher.add_argument(
        "--valid-days", type=float, help="redeemable for this long (default: ever)"
    )
    voucher.add_argument("--note", help="a note for the admin console and the audit log")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "agent":
        # Hand over to the agent's own CLI without importing it (layering, and
        # an agent-only install lacks the coordinator's dependencies).
        os.execv(sys.executable, [sys.executable, "-m", "agent", *argv[1:]])  # noqa: S606
    args = build_parser().parse_args(argv)
    from coordinator.settings import SettingsError

    try:
        if args.command == "coordinator":
            from coordinator.cli.serve import serve

            return serve(_settings(args), args.log_level)
        if args.command == "demo":
            from coordinator.cli.demo import run_demo

            return run_demo(args.data_dir, args.port, args.model, args.device, args.image_model)
        from coordinator.cli.admin_cli import run_admin

        return run_admin(args, _settings(args))
    except SettingsError as exc:
        print(f"shapefarm: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
