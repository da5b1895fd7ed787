"""Agent processes forked from an already-imported parent (see agent_zygote.py).

:func:`forked_agent` starts ``python -m agent ARGS`` as a child of this test process's
zygote and returns a :class:`ForkedAgent`, which answers what the tests ask of a
``subprocess.Popen`` (``pid``, ``poll``, ``wait``, ``send_signal``, ``terminate``,
``kill``, ``returncode``). One zygote per test process, started on first use (it
imports torch once, about 7 s of CPU, instead of once per agent) and ended with it.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
START_S = 120  # importing torch and diffusers on a loaded 2-core machine


class ForkedAgent:
    """A forked agent process, driven like a ``subprocess.Popen``."""

    def __init__(self, pid: int, conn: socket.socket, args: list[str]) -> None:
        self.pid = pid
        self.args = args
        self.returncode: int | None = None
        self._conn = conn
        self._buffer = b""

    def _read_status(self, timeout: float | None) -> int | None:
        if self.returncode is not None:
            return self.returncode
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._conn], [], [], left)
            if not ready:
                return None
            chunk = self._conn.recv(4096)
            if not chunk:  # the zygote died: so did its children (it kills them)
                self._buffer += b'{"status": -9}\n'
                break
            self._buffer += chunk
        line = self._buffer.split(b"\n", 1)[0]
        self.returncode = int(json.loads(line)["status"])
        self._conn.close()
        return self.returncode

    def poll(self) -> int | None:
        return self._read_status(0)

    def wait(self, timeout: float | None = None) -> int:
        code = self._read_status(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class _Zygote:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="agent-zygote-")
        self.path = str(Path(self.dir) / "socket")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.agent_zygote", self.path],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], START_S)
        line = self.proc.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            self.proc.kill()
            raise RuntimeError(f"the agent zygote did not start: {line!r}")

    def fork(self, argv: list[str]) -> ForkedAgent:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(self.path)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        request = json.dumps({"argv": argv, "env": env, "cwd": str(ROOT)}).encode() + b"\n"
        sys.stdout.flush()
        sys.stderr.flush()
        socket.send_fds(conn, [request], [1, 2])
        conn.settimeout(30)
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = conn.recv(4096)
            if not chunk:
                raise RuntimeError("the agent zygote closed the connection")
            answer += chunk
        conn.settimeout(None)
        reply = json.loads(answer)
        if "pid" not in reply:
            raise RuntimeError(f"the agent zygote refused: {reply}")
        return ForkedAgent(int(reply["pid"]), conn, ["python", "-m", "agent", *argv])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        Path(self.path).unlink(missing_ok=True)
        os.rmdir(self.dir)


_zygote: _Zygote | None = None
_lock = threading.Lock()


def forked_agent(argv: list[str]) -> ForkedAgent:
    """``python -m agent *argv`` forked from this process's zygote."""
    global _zygote
    with _lock:
        if _zygote is None or _zygote.proc.poll() is not None:
            _zygote = _Zygote()
            atexit.register(_zygote.close)
        zygote = _zygote
    return zygote.fork(argv)
