"""bench/peers.py: a peer that fails, answers nonsense or hangs is reported, never left running."""

from __future__ import annotations

import os
import select
import sys
import time
from pathlib import Path

import pytest

from bench import peers
from tests.support.fake_peers import fake_peers

OPTS = {"n": 5, "clients": 2, "workers": 2, "warmup": 1, "size": 1024}


def test_a_peer_without_a_json_result_is_reported_with_its_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fake_peers(tmp_path, monkeypatch)
    fake.write("gradio", "import sys\nsys.exit('Traceback: gradio exploded')\n")
    with pytest.raises(peers.PeerError, match="gradio peer exited 1 without a result: Trace"):
        peers.run("gradio", sys.executable, fake.dir, OPTS, 60)
    fake.write("celery", 'print(\'{"jobs_per_s": 3, "p50_ms": 1}\')\n')
    with pytest.raises(peers.PeerError, match="celery peer: no p99_ms in its result"):
        peers.run("celery", sys.executable, fake.dir, OPTS, 60)


def test_a_failed_peer_keeps_its_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_peers(tmp_path, monkeypatch)
    fake.write(
        "gradio",
        "import json, os\nopen(os.path.join(os.environ['PEER_SCRATCH'], 'server.log'), 'w')"
        ".write('port taken')\nprint(json.dumps({'error': 'RuntimeError()'}))\n",
    )
    with pytest.raises(peers.PeerError) as failed:
        peers.run("gradio", sys.executable, fake.dir, OPTS, 60)
    message = str(failed.value)
    assert message.startswith("gradio peer: RuntimeError(); logs in ")
    assert (Path(message.rsplit(" ", 1)[1]) / "server.log").read_text() == "port taken"


def test_a_peer_past_its_timeout_is_killed_with_the_server_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = fake_peers(tmp_path, monkeypatch)
    fifo = tmp_path / "server-alive"
    os.mkfifo(fifo)
    # Like gradio_peer.py: the server runs in a session of its own; it holds the FIFO open
    # for writing as long as it lives. Then the peer itself waits forever.
    server = f"import time\nf = open({str(fifo)!r}, 'w')\nf.write('up')\nf.flush()\ntime.sleep(600)"
    fake.write(
        "gradio",
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {server!r}], start_new_session=True)\n"
        "time.sleep(600)\n",
    )
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        started = time.monotonic()
        with pytest.raises(peers.PeerError, match="gradio peer: no result within 5 s"):
            peers.run("gradio", sys.executable, fake.dir, OPTS, 5)
        assert time.monotonic() - started < 30
        seen = b""
        while True:  # the server wrote 'up', then its death closed the FIFO: EOF
            ready, _, _ = select.select([reader], [], [], 30)
            assert ready, "the peer's server is still alive"
            chunk = os.read(reader, 64)
            if not chunk:
                break
            seen += chunk
        assert seen == b"up"
    finally:
        os.close(reader)
