"""The closed-loop benchmark's peers: ``../shared/peers/*_peer.py`` run by another Python.

The peers (Celery + Redis, Gradio's queue + gradio_client) live in a virtualenv of their
own, outside the project (``--peers-python``), so that neither gets into the project's
dependencies. Each peer script runs the same closed-loop workload (N jobs, C client
threads doing submit → wait → receive the result bytes, W workers, a zero-time job
returning S bytes, 16 warm-up jobs not counted) and prints one JSON line.

:func:`check` says, before anything runs, what a peer lacks (the script, the interpreter,
its modules, redis-server); :func:`run` runs one peer and returns its figures, or raises
:class:`PeerError` with what went wrong and where its logs are.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import free_port

# The shared harness beside the clone (``../shared/peers`` from the project root).
PEERS = Path(__file__).resolve().parents[2] / "shared" / "peers"


@dataclass(frozen=True)
class Peer:
    script: str
    modules: tuple[str, ...]  # what the peers' Python must import
    programs: tuple[str, ...]  # what must be on PATH
    label: str  # the row's name in the tables


KNOWN: dict[str, Peer] = {
    "celery": Peer("celery_peer.py", ("celery", "redis"), ("redis-server",), "Celery + Redis"),
    "gradio": Peer("gradio_peer.py", ("gradio", "gradio_client"), (), "Gradio + gradio_client"),
}

_FIND_SPECS = (
    "import importlib.util, sys; "
    "print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))"
)


class PeerError(RuntimeError):
    """A peer cannot run, or its run failed; the message says why."""


def check(systems: Iterable[str], python: str, peers_dir: Path) -> None:
    """Raise :class:`PeerError` if any peer among ``systems`` could not run."""
    for system in systems:
        peer = KNOWN.get(system)
        if peer is None:
            continue
        script = peers_dir / peer.script
        if not script.is_file():
            raise PeerError(f"{system}: {script} does not exist (--peers-dir)")
        for program in peer.programs:
            if shutil.which(program) is None:
                raise PeerError(f"{system}: {program} is not on PATH (apt-get install {program})")
        try:
            found = subprocess.run(
                [python, "-c", _FIND_SPECS, *peer.modules],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PeerError(f"{system}: --peers-python {python} cannot run: {exc}") from exc
        if found.returncode:
            raise PeerError(f"{system}: --peers-python {python} failed: {_tail(found.stderr)}")
        missing = found.stdout.split()
        if missing:
            raise PeerError(
                f"{system}: --peers-python {python} has no {', '.join(missing)}; install "
                f"them into that virtualenv (see {peers_dir / 'README.md'}), not the project's"
            )


def argv(system: str, python: str, peers_dir: Path, opts: dict[str, int]) -> list[str]:
    """The peer's command line for N, C, W, warm-up and size (``opts``)."""
    peer = KNOWN[system]
    line = [python, str(peers_dir / peer.script), "-n", str(opts["n"]),
            "-c", str(opts["clients"]), "-w", str(opts["workers"]),
            "--warmup", str(opts["warmup"])]  # fmt: skip
    if system == "gradio":  # celery_peer.py takes its size and port from the environment
        line += ["--size", str(opts["size"]), "--port", str(free_port())]
    return line


def run(
    system: str, python: str, peers_dir: Path, opts: dict[str, int], timeout: float
) -> dict[str, Any]:
    """Run one peer; its JSON figures, or :class:`PeerError`.

    Its scratch files (server logs) go to a fresh directory, removed after a good run and
    named in the error after a bad one. On timeout the peer and every process it started
    (its servers run in sessions of their own) are killed by PID.
    """
    scratch = tempfile.mkdtemp(prefix=f"shapefarm-peer-{system}-")
    env = {**os.environ, "PEER_SCRATCH": scratch}
    if system == "celery":
        env |= {"PEER_SIZE": str(opts["size"]), "PEER_REDIS_PORT": str(free_port())}
    proc = subprocess.Popen(
        argv(system, python, peers_dir, opts), cwd=peers_dir, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):  # a survivor may hold its pipes
            proc.communicate(timeout=10)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        proc.wait()
        raise PeerError(
            f"{system} peer: no result within {timeout:g} s (--peer-timeout); logs in {scratch}"
        ) from None
    lines = out.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        result = None
    if not isinstance(result, dict):
        raise PeerError(
            f"{system} peer exited {proc.returncode} without a result: {_tail(err or out)}"
            f"; logs in {scratch}"
        )
    if "error" in result or proc.returncode:
        raise PeerError(f"{system} peer: {result.get('error', proc.returncode)}; logs in {scratch}")
    for key in ("jobs_per_s", "p50_ms", "p99_ms"):
        if not isinstance(result.get(key), int | float):
            raise PeerError(
                f"{system} peer: no {key} in its result {lines[-1][:200]}; logs in {scratch}"
            )
    shutil.rmtree(scratch, ignore_errors=True)
    return result


def _tail(text: str, limit: int = 600) -> str:
    text = text.strip()
    return ("…" + text[-limit:]) if len(text) > limit else text or "(no output)"


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and its descendants, found through /proc before any dies."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    todo, tree = [pid], []
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    for member in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)
