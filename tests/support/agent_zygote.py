"""A parent for the tests' tiny-model agents that has already imported torch, diffusers
and transformers (about 7 s of CPU per agent process otherwise).

``python -m tests.support.agent_zygote SOCKET`` imports the agent and its tiny models,
then listens on the Unix socket. Each connection asks for one agent: a JSON line with
``argv`` (the agent's arguments, as ``python -m agent`` takes them), ``env`` and
``cwd``, and two file descriptors (the caller's stdout and stderr). The zygote forks;
the child becomes a session leader (like ``start_new_session=True``), takes that
environment, directory and output, and runs the same ``agent.cli.main`` that
``python -m agent`` runs. The zygote answers ``{"pid": N}`` and, when the child exits,
``{"status": S}`` (as :func:`os.waitstatus_to_exitcode`: negative for a signal), then
closes the connection. It exits when its parent (the test process) is gone.

Forking is safe here because the zygote only imports: no torch operation ran, so no
thread pool of torch's exists to be copied half-locked, and no Python thread runs
(checked at start). The one native thread, OpenBLAS's (loaded with numpy), is shut
down and restarted around ``fork`` by OpenBLAS's own ``pthread_atfork`` handlers.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import sys
import threading
import traceback

MAX_REQUEST = 1 << 20


def _child(request: dict[str, object], fds: list[int]) -> None:
    """In the forked child: become the agent process. Never returns."""
    code = 1
    try:
        os.setsid()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        out, err = fds
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.close(out)
        os.close(err)
        env = request["env"]
        assert isinstance(env, dict)
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in env.items()})
        os.chdir(str(request["cwd"]))
        argv = [str(a) for a in request["argv"]]  # type: ignore[attr-defined]
        sys.argv = ["agent", *argv]
        from agent.cli import main

        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _serve(path: str) -> None:
    parent = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    print("ready", flush=True)
    children: dict[int, socket.socket] = {}
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    while os.getppid() == parent:
        for _key, _ in sel.select(timeout=0.1):
            conn, _addr = listener.accept()
            conn.settimeout(10)
            try:
                data, fds, _flags, _addr = socket.recv_fds(conn, MAX_REQUEST, 2)
                while not data.endswith(b"\n") and len(data) < MAX_REQUEST:
                    more = conn.recv(MAX_REQUEST)
                    if not more:
                        break
                    data += more
                request = json.loads(data)
                if len(fds) != 2:
                    raise ValueError("send stdout and stderr with the request")
            except (OSError, ValueError) as exc:
                conn.sendall(json.dumps({"error": str(exc)}).encode() + b"\n")
                conn.close()
                continue
            pid = os.fork()
            if pid == 0:
                listener.close()
                conn.close()
                for other in children.values():
                    other.close()
                _child(request, fds)
            for fd in fds:
                os.close(fd)
            children[pid] = conn
            conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            conn = children.pop(pid, None)
            if conn is not None:
                code = os.waitstatus_to_exitcode(status)
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps({"status": code}).encode() + b"\n")
                conn.close()
    for pid in children:  # the test process is gone: so are its agents
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)


def main() -> None:
    import agent.cli
    import agent.pipeline
    import agent.tiny  # noqa: F401

    assert threading.active_count() == 1, "a thread before fork would be copied half-locked"
    _serve(sys.argv[1])


if __name__ == "__main__":
    main()
