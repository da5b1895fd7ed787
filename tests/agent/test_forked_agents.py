"""The tests' forked tiny-model agents behave like ``python -m agent`` processes: exit
codes, signals, output, sessions (tests/support/agentfork.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.support.agentfork import forked_agent
from tests.support.coordinators import start_agent, stop_process

pytestmark = pytest.mark.slow


def test_forked_agent_usage_error_exits_2_with_the_message_on_our_stderr(
    capfd: pytest.CaptureFixture[str],
) -> None:
    agent = forked_agent(["--model", "tiny", "--max-batch", "0"])
    assert agent.wait(60) == 2
    assert agent.poll() == 2 and agent.returncode == 2
    assert "max-batch" in capfd.readouterr().err


def test_forked_agent_runs_until_signalled_in_a_session_of_its_own(tmp_path: Path) -> None:
    # Nothing listens on this port: the agent keeps retrying until it is stopped.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token = tmp_path / "token"
    token.write_text("agent.abcdefghijkl.secret\n")
    token.chmod(0o600)
    agent = start_agent(f"ws://127.0.0.1:{port}/agent", token, tmp_path / "spool")
    assert not isinstance(agent, subprocess.Popen)  # tiny: forked, not spawned
    assert agent.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        agent.wait(0.5)
    assert os.getpgid(agent.pid) == agent.pid != os.getpgid(0)  # start_new_session's
    assert stop_process(agent, signal.SIGKILL, timeout=20) == -signal.SIGKILL
    agent.kill()  # after it ended: nothing happens (no stray signal)
    assert agent.returncode == -signal.SIGKILL
