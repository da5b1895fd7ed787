"""Stand-ins for /work/shared/peers/ and its Python: peer scripts that record how they were run.

The project's own Python plays the peers' interpreter; empty packages named like the
peers' (gradio, gradio_client, celery, redis) on PYTHONPATH and a ``redis-server`` on
PATH satisfy ``bench.peers.check`` without the real ones, which must stay out of the
project's virtualenv.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PEER_MODULES = ("gradio", "gradio_client", "celery", "redis")

# Records its command line and environment, then answers like a peer: a log line, then
# one JSON line with its figures.
RECORDING_PEER = """\
import json, os, sys
scratch = os.environ["PEER_SCRATCH"]
record = {"script": os.path.basename(__file__), "argv": sys.argv[1:], "scratch": scratch,
          "scratch_existed": os.path.isdir(scratch), "size": os.environ.get("PEER_SIZE"),
          "redis_port": os.environ.get("PEER_REDIS_PORT"), "cwd": os.getcwd()}
with open(os.environ["FAKE_PEER_RECORD"], "a") as f:
    f.write(json.dumps(record) + "\\n")
print("starting the server")
n = int(sys.argv[sys.argv.index("-n") + 1])
print(json.dumps({"jobs_per_s": 12.5, "p50_ms": 100.0, "p99_ms": 200.0, "n": n,
                  "server_cpu_s": 1.0, "versions": {"fake": "1.0"}}))
"""


@dataclass(frozen=True)
class FakePeers:
    dir: Path  # pass as --peers-dir
    record: Path  # one JSON line per peer run

    def write(self, system: str, source: str) -> None:
        (self.dir / f"{system}_peer.py").write_text(source)

    def runs(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]


def fake_peers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, modules: tuple[str, ...] = PEER_MODULES
) -> FakePeers:
    """Recording gradio and celery peers; ``modules`` importable by the peers' Python."""
    packages = tmp_path / "peer-packages"
    for name in modules:
        (packages / name).mkdir(parents=True)
        (packages / name / "__init__.py").write_text("")
    path = [str(packages), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(path))
    programs = tmp_path / "peer-bin"
    programs.mkdir()
    (programs / "redis-server").write_text("#!/bin/sh\nexit 0\n")
    (programs / "redis-server").chmod(0o755)
    monkeypatch.setenv("PATH", os.pathsep.join([str(programs), os.environ["PATH"]]))
    scratch = tmp_path / "tmp"  # the peers' scratch dirs, kept after a failure
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    peers = FakePeers(tmp_path / "peers", tmp_path / "peer-runs.jsonl")
    peers.dir.mkdir()
    monkeypatch.setenv("FAKE_PEER_RECORD", str(peers.record))
    for system in ("gradio", "celery"):
        peers.write(system, RECORDING_PEER)
    return peers
