"""The viewer's meshopt-compressed copy of a model (coordinator.meshes.compact): valid
glTF, the same triangles within the quantization step, smaller; served to the viewer
over a real server, made once, deleted with the job."""

from __future__ import annotations

import asyncio
import gzip
import json
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from numpy.typing import NDArray

from agent.instant import sized_glb
from coordinator.meshes import compact
from coordinator.meshes.compact import compact_glb
from coordinator.meshes.glb import Mesh, encode_glb, normalise_glb, read_mesh
from coordinator.meshes.glbcheck import GlbLimits
from meshkit.meshopt import locality_order
from tests.support import glbbombs
from tests.support.coordinators import api_client, make_settings, provision, running_coordinator
from tests.support.meshopt_reference import decode_attributes, decode_triangles
from tests.support.stored_models import started, store_model

ROOT = Path(__file__).resolve().parents[2]
LIMITS = GlbLimits(max_bytes=64 * 2**20)
DTYPES = {5120: "<i1", 5121: "<u1", 5123: "<u2", 5125: "<u4"}


def _parse(glb: bytes) -> tuple[dict[str, Any], bytes]:
    magic, version, total = struct.unpack_from("<4sII", glb)
    assert (magic, version, total) == (b"glTF", 2, len(glb))
    json_len, _ = struct.unpack_from("<II", glb, 12)
    doc = json.loads(glb[20 : 20 + json_len])
    bin_len, _ = struct.unpack_from("<II", glb, 20 + json_len)
    return doc, glb[28 + json_len : 28 + json_len + bin_len]


def _decoded(glb: bytes) -> dict[str, NDArray[Any]]:
    """The compact GLB's primitive, decoded with the reference decoders and
    dequantized the way a renderer does (normalized integers, the node's transform)."""
    doc, binary = _parse(glb)
    assert doc["extensionsRequired"] == ["EXT_meshopt_compression", "KHR_mesh_quantization"]
    node = doc["nodes"][0]
    prim = doc["meshes"][0]["primitives"][0]
    out: dict[str, NDArray[Any]] = {}
    for name, index in [("indices", prim["indices"]), *prim["attributes"].items()]:
        accessor = doc["accessors"][index]
        view = doc["bufferViews"][accessor["bufferView"]]
        ext = view["extensions"]["EXT_meshopt_compression"]
        assert view["buffer"] == 1 and ext["buffer"] == 0
        assert view["byteLength"] == ext["count"] * ext["byteStride"]
        data = binary[ext["byteOffset"] : ext["byteOffset"] + ext["byteLength"]]
        dtype = np.dtype(DTYPES[accessor["componentType"]])
        if ext["mode"] == "TRIANGLES":
            assert ext["byteStride"] == dtype.itemsize and "byteStride" not in view
            out[name] = np.array(decode_triangles(data, ext["count"]), dtype).astype(np.int64)
            continue
        assert ext["mode"] == "ATTRIBUTES" and view["byteStride"] == ext["byteStride"]
        raw = decode_attributes(data, ext["count"], ext["byteStride"])
        width = {"VEC3": 3, "VEC4": 4}[accessor["type"]]
        rows = np.frombuffer(raw, dtype).reshape(ext["count"], -1)[:, :width]
        values = rows.astype(np.float64)
        if accessor.get("normalized"):
            values = values / (127.0 if dtype.kind == "i" else 255.0)
        if name == "POSITION":
            assert rows.min(axis=0).tolist() == accessor["min"]
            assert rows.max(axis=0).tolist() == accessor["max"]
            values = values * node["scale"][0] + np.array(node["translation"])
        out[name] = values
    return out


def _sheet(count: int) -> Mesh:
    return read_mesh(glbbombs.mesh_glb(*glbbombs.grid(count)), LIMITS)


def _instant(size: int) -> Mesh:
    return read_mesh(normalise_glb(sized_glb(size), LIMITS)[0], LIMITS)


def _corners(
    got: dict[str, NDArray[Any]], mesh: Mesh
) -> tuple[NDArray[np.int64], NDArray[np.uint32]]:
    """(decoded triangles, the original ones in the copy's order), corner for corner:
    the copy reorders the triangles (``locality_order``, checked to be a permutation in
    tests/meshkit) and a triangle may start at another corner (same winding), so take
    the rotation that fits best."""
    faces = got["indices"].reshape(-1, 3)
    original = mesh.faces[locality_order(mesh.faces)]
    assert len(faces) == len(original)
    rotations = [np.roll(faces, -k, axis=1) for k in range(3)]
    misfit = [
        np.abs(got["POSITION"][r] - mesh.positions[original]).max(axis=(1, 2)) for r in rotations
    ]
    best = np.argmin(np.stack(misfit), axis=0)
    return np.stack(rotations)[best, np.arange(len(faces))], original


@pytest.mark.parametrize("size", [10240, 1048576])
def test_compact_keeps_every_triangle_within_the_quantization_step(size: int) -> None:
    mesh = _instant(size)
    got = _decoded(compact_glb(mesh))
    faces, original = _corners(got, mesh)
    extent = float(np.ptp(mesh.positions, axis=0).max())
    # The same triangles and winding, each corner where it was.
    assert np.abs(got["POSITION"][faces] - mesh.positions[original]).max() <= extent / 32766
    assert mesh.normals is not None and mesh.colors is not None
    assert np.abs(got["NORMAL"][faces] - mesh.normals[original]).max() <= 0.5 / 127 + 1e-6
    width = mesh.colors.shape[1]
    colors = got["COLOR_0"][faces][..., :width]
    assert np.abs(colors - mesh.colors[original]).max() <= 0.5 / 255 + 1e-6


def test_compact_numbers_vertices_by_first_use_and_drops_unused_ones() -> None:
    positions = np.array([[9, 9, 9], [0, 0, 0], [1, 0, 0], [0, 1, 0], [5, 5, 5]], np.float32)
    faces = np.array([[3, 1, 2]], np.uint32)  # vertices 0 and 4 are drawn by nothing
    got = _decoded(compact_glb(Mesh(positions, faces)))
    assert got["indices"].tolist() == [0, 1, 2]
    assert np.allclose(got["POSITION"], positions[[3, 1, 2]], atol=1 / 16383)
    assert set(got) == {"indices", "POSITION"}  # no normals or colours: none written


def test_compact_uses_16_bit_indices_only_below_the_restart_index() -> None:
    for count, component in ((65535, 5123), (65536, 5125)):  # indices to 65534 or 65535
        positions = np.zeros((count, 3), np.float32)
        positions[:, 0] = np.arange(count)
        faces = np.arange(count - count % 3, dtype=np.uint32).reshape(-1, 3)
        faces = np.vstack([faces, [[count - 1, 0, 1]]]).astype(np.uint32)  # uses the last
        doc, _ = _parse(compact_glb(Mesh(positions, faces)))
        assert doc["accessors"][0]["componentType"] == component, count


def test_compact_is_a_valid_gltf_that_meshoptimizer_and_gltf_transform_read(
    tmp_path: Path,
) -> None:
    node = shutil.which("node")
    if node is None or not (ROOT / "node_modules" / "gltf-validator").is_dir():
        pytest.skip("node or node_modules missing (scripts/install installs them)")
    mesh = _instant(65536)
    path = tmp_path / "model.meshopt.glb"
    path.write_bytes(compact_glb(mesh))
    validated = subprocess.run(
        [node, "tests/gltf_validate.mjs", str(path)], capture_output=True, text=True, cwd=ROOT,
        timeout=60,
    )  # fmt: skip
    report = json.loads(validated.stdout)
    assert report["issues"]["numErrors"] == 0 and report["issues"]["numWarnings"] == 0, report
    read = subprocess.run(
        [node, "tests/meshopt_decode.mjs", str(path)], capture_output=True, text=True,
        cwd=ROOT, timeout=60, check=True,
    )  # fmt: skip
    decoded = json.loads(read.stdout)
    positions = np.array(decoded["positions"]) * decoded["scale"][0] + decoded["translation"]
    faces, original = _corners(
        {"indices": np.array(decoded["indices"]), "POSITION": positions}, mesh
    )
    extent = float(np.ptp(mesh.positions, axis=0).max())
    assert np.abs(positions[faces] - mesh.positions[original]).max() <= extent / 32766


def test_compact_sends_far_fewer_bytes() -> None:
    """The 1 MiB model: raw and after the proxy's gzip (level 1, deploy/nginx.conf)."""
    mesh = _instant(1048576)
    plain, compact = encode_glb(mesh), compact_glb(mesh)
    assert len(compact) < 0.3 * len(plain)
    assert len(gzip.compress(compact, 1)) < 0.2 * len(gzip.compress(plain, 1))


async def test_viewer_copy_is_made_once_served_inline_and_deleted_with_the_job(
    tmp_path: Path,
) -> None:
    async with (
        await started(tmp_path) as coordinator,
        httpx.AsyncClient(base_url=coordinator.http, timeout=60) as http,
    ):
        job = await store_model(coordinator, glbbombs.mesh_glb(*glbbombs.grid(2000)))
        first, second = await asyncio.gather(
            http.get(f"/jobs/{job}/model.meshopt.glb"), http.get(f"/jobs/{job}/model.meshopt.glb")
        )
        assert first.status_code == second.status_code == 200
        assert first.headers["content-type"] == "model/gltf-binary"
        assert "content-disposition" not in first.headers  # inline, for <model-viewer>
        assert first.content == second.content
        assert coordinator.farm.models.conversions == 1
        stored = await http.get(f"/jobs/{job}/model.glb")
        assert len(first.content) < len(stored.content) / 2
        got = _decoded(first.content)
        assert len(got["indices"]) == 3 * len(glbbombs.grid(2000)[1])
        # The download of the same copy is an attachment with a .glb name.
        download = await http.get(f"/jobs/{job}/download/meshopt")
        assert download.content == first.content
        assert download.headers["content-disposition"].endswith('.meshopt.glb"')
        cached = coordinator.farm.store.path(job, "meshopt")
        assert cached.read_bytes() == first.content
        await asyncio.to_thread(coordinator.farm.store.delete, job)
        assert not cached.exists()
        assert (await http.get(f"/jobs/{job}/model.meshopt.glb")).status_code == 404


def test_compact_refuses_a_model_past_its_face_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compact, "MAX_FACES", 100)
    assert compact.has_copy(100) and not compact.has_copy(101)
    with pytest.raises(compact.TooLargeError, match="too many for a compressed copy"):
        compact_glb(_sheet(400))


async def test_a_model_past_the_limit_is_shown_and_offered_as_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No copy is made (no CPU spent), the viewer loads the stored GLB, and the API
    neither lists nor serves the copy."""
    monkeypatch.setattr(compact, "MAX_FACES", 1000)
    settings = make_settings(tmp_path)
    key, _ = await provision(settings, tmp_path, "alice")
    async with running_coordinator(settings) as coordinator, api_client(coordinator, key) as api:
        small = await store_model(coordinator, glbbombs.mesh_glb(*glbbombs.grid(800)))
        large = await store_model(coordinator, glbbombs.mesh_glb(*glbbombs.grid(2000)))
        for job, copy in ((small, True), (large, False)):
            page = await api.get(f"/jobs/{job}")
            viewer = f"/jobs/{job}/model.meshopt.glb" if copy else f"/jobs/{job}/model.glb"
            assert f'<model-viewer src="{viewer}"' in page.text
            downloads = (await api.get(f"/api/v1/jobs/{job}")).json()["result"]["downloads"]
            assert ("meshopt" in downloads) is copy
        refused = await api.get(f"/api/v1/jobs/{large}/download/meshopt")
        assert refused.status_code == 404
        assert "too many for a compressed copy" in refused.json()["error"]["message"]
        # Asked for anyway (an old page), the viewer's URL answers the stored GLB.
        fallback = await api.get(f"/jobs/{large}/model.meshopt.glb")
        assert fallback.content == (await api.get(f"/jobs/{large}/model.glb")).content
        assert coordinator.farm.models.conversions == 0
        assert (await api.get(f"/jobs/{small}/model.meshopt.glb")).status_code == 200
        assert coordinator.farm.models.conversions == 1


async def test_the_viewer_falls_back_to_the_stored_glb_where_no_copy_can_be_made(
    tmp_path: Path,
) -> None:
    """A model stored before today's checks that they refuse: the viewer still gets
    the file as stored (it showed before), the API says why there is no copy."""
    settings = make_settings(tmp_path)
    key, _ = await provision(settings, tmp_path, "alice")
    async with running_coordinator(settings) as coordinator, api_client(coordinator, key) as api:
        job = await store_model(coordinator, glbbombs.mesh_glb(*glbbombs.grid(800)))
        legacy = glbbombs.mesh_glb(*glbbombs.grid(800))[:-64]  # cut short: refused today
        await asyncio.to_thread(coordinator.farm.store.write, job, "glb", legacy)
        viewed = await api.get(f"/jobs/{job}/model.meshopt.glb")
        assert viewed.status_code == 200 and viewed.content == legacy
        refused = await api.get(f"/api/v1/jobs/{job}/download/meshopt")
        assert refused.status_code == 404
        assert "cannot be converted" in refused.json()["error"]["message"]
        await asyncio.to_thread(coordinator.farm.store.delete, job)
        assert (await api.get(f"/jobs/{job}/model.meshopt.glb")).status_code == 404
