"""``python -m client``: make a model from a terminal, look at a job, download one.

    export SHAPEFARM_URL=https://farm.example.org
    export SHAPEFARM_KEY=sfk.…            # or --key-file FILE; never on the command line
    python -m client generate "a red chair" --steps 32 -o chair.glb
    python -m client status JOB_ID
    python -m client download JOB_ID --format stl

Exit codes: 0 done, 1 the API refused or the job failed, 2 usage (bad flags, no key,
an output file that exists), 3 the server could not be reached or did not answer in
time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from client.api import FORMATS, ApiError, Client, ClientError

EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3
MAX_KEY_FILE = 4096


class UsageError(Exception):
    pass


def _parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="A client of a shapefarm coordinator's API."
    )
    parser.add_argument("--url", default=os.environ.get("SHAPEFARM_URL"),
                        help="the coordinator (default: $SHAPEFARM_URL)")  # fmt: skip
    parser.add_argument("--key-file", type=Path,
                        help="a file holding the API key (default: $SHAPEFARM_KEY)")  # fmt: skip
    parser.add_argument("--timeout", type=_seconds, default=600.0,
                        help="seconds to wait for a job (default 600)")  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser("generate", help="submit a prompt, wait, download the model")
    generate.add_argument("prompt")
    generate.add_argument("--steps", type=int)
    generate.add_argument("--seed", type=int)
    generate.add_argument("--guidance", type=float)
    _output_flags(generate)
    status = commands.add_parser("status", help="a job as JSON")
    status.add_argument("job_id")
    download = commands.add_parser("download", help="a finished job's model")
    download.add_argument("job_id")
    _output_flags(download)
    return parser


def _output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=sorted(FORMATS), default="glb")
    parser.add_argument("-o", "--output", type=Path, help="default: JOB_ID.FORMAT here")
    parser.add_argument("--force", action="store_true", help="replace an existing file")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 86_400:
        raise argparse.ArgumentTypeError("between 0 and 86400 seconds")
    return value


def _key(args: argparse.Namespace) -> str:
    if args.key_file is not None:
        try:
            with Path(args.key_file).open("rb") as fh:
                raw: bytes = fh.read(MAX_KEY_FILE + 1)
        except OSError as exc:
            raise UsageError(f"cannot read the key file: {exc}") from None
        if len(raw) > MAX_KEY_FILE:
            raise UsageError(f"{args.key_file} is not a key file (too large)")
        key: str = raw.decode("utf-8", "replace").strip()
    else:
        key = os.environ.get("SHAPEFARM_KEY", "").strip()
    if not key:
        raise UsageError("no API key: set SHAPEFARM_KEY or give --key-file")
    return key


def _target(args: argparse.Namespace, job_id: str) -> Path:
    suffix = "meshopt.glb" if args.format == "meshopt" else args.format  # still a GLB
    path: Path = args.output or Path(f"{job_id}.{suffix}")
    if path.exists() and not args.force:
        raise UsageError(f"{path} exists (--force replaces it)")
    return path


def _write(path: Path, data: bytes) -> None:
    """All or nothing: a temp file beside it, renamed over it."""
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _run(args: argparse.Namespace, farm: Client) -> int:
    if args.command == "status":
        print(json.dumps(farm.job(args.job_id), indent=2, ensure_ascii=False))
        return 0
    if args.command == "download":
        path = _target(args, args.job_id)
        _write(path, farm.download(args.job_id, args.format))
        print(path)
        return 0
    fields: dict[str, Any] = {
        name: getattr(args, name)
        for name in ("steps", "seed", "guidance")
        if getattr(args, name) is not None
    }
    if args.output is not None:
        _target(args, "")  # refuse an existing file before the job is queued
    job = farm.submit(args.prompt, **fields)[0]
    print(f"job {job['id']} queued", file=sys.stderr)
    done = farm.wait(job["id"], timeout=args.timeout)
    if done.get("state") != "succeeded":
        print(f"job {job['id']} {done.get('state')}: {done.get('error') or ''}", file=sys.stderr)
        return EXIT_FAILED
    path = _target(args, job["id"])
    _write(path, farm.download(job["id"], args.format))
    print(path)
    return 0


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """``prog``: the name usage lines give (default: the command's, ``shapefarm-client``
    when installed)."""
    parser = _parser(prog)
    args = parser.parse_args(argv)
    if not args.url:
        parser.error("no coordinator: set SHAPEFARM_URL or give --url")
    try:
        with Client(args.url, _key(args), timeout=min(args.timeout, 120.0)) as farm:
            return _run(args, farm)
    except (UsageError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (ClientError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except OSError as exc:  # the output file could not be written
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
