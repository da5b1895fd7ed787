"""``python -m client``: see client/cli.py."""

from __future__ import annotations

from client.cli import main

raise SystemExit(main(prog="python -m client"))
