from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.generator import Generator
from tests.support.agent_fakes import TINY_CONFIG

ROOT = Path(__file__).resolve().parents[2]
VALIDATOR = ROOT / "tests" / "gltf_validate.mjs"


@pytest.fixture(scope="session")
def tiny_generator() -> Generator:
    generator = Generator(TINY_CONFIG)
    generator.load()
    return generator


@pytest.fixture(scope="session")
def validate_glb(tmp_path_factory: pytest.TempPathFactory) -> Callable[[bytes], dict[str, Any]]:
    """Run the Khronos glTF-Validator on bytes; returns its report."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: cannot run the Khronos glTF-Validator")
    if not (ROOT / "node_modules" / "gltf-validator").is_dir():
        pytest.skip("node_modules/gltf-validator missing: run `npm ci` to validate GLBs")
    folder = tmp_path_factory.mktemp("glb")
    counter = iter(range(1_000_000))

    def validate(data: bytes) -> dict[str, Any]:
        path = folder / f"model{next(counter)}.glb"
        path.write_bytes(data)
        proc = subprocess.run(
            [node, str(VALIDATOR), str(path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        report: dict[str, Any] = json.loads(proc.stdout)
        assert proc.returncode in (0, 1), proc.stderr
        return report

    return validate
