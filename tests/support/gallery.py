"""Coloured models with real previews for the gallery's browser tests (and its
screenshots): simple trimesh shapes through the agent's own GLB and preview export."""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import trimesh

from agent.export import export_mesh
from tests.support.ui import create_job

SHAPES: dict[str, tuple[Any, tuple[float, float, float]]] = {
    "a red chair": (lambda: trimesh.creation.box((0.6, 0.6, 1.0)), (0.8, 0.1, 0.1)),
    "a blue ball": (lambda: trimesh.creation.icosphere(subdivisions=3), (0.1, 0.3, 0.9)),
    "a green vase": (lambda: trimesh.creation.cylinder(0.35, 1.0, sections=48), (0.1, 0.7, 0.3)),
    "a yellow cone": (lambda: trimesh.creation.cone(0.5, 1.0, sections=48), (0.95, 0.8, 0.1)),
    "a purple capsule": (lambda: trimesh.creation.capsule(0.8, 0.3), (0.6, 0.2, 0.8)),
    "красный стул": (lambda: trimesh.creation.box((0.5, 0.5, 0.9)), (0.9, 0.3, 0.2)),
}


@functools.cache
def model_files(prompt: str) -> tuple[bytes, bytes]:
    """(GLB, PNG preview) of the shape named by ``prompt``."""
    make, rgb = SHAPES[prompt]
    mesh = make()
    shade = 0.75 + 0.25 * (mesh.vertices[:, 2] - mesh.vertices[:, 2].min()) / np.ptp(
        mesh.vertices[:, 2]
    )
    colors = np.outer(shade, rgb)
    exported = export_mesh(mesh.vertices, mesh.faces, colors, preview_size=256)
    assert exported.preview_png is not None
    return exported.glb, exported.preview_png


async def shaped_job(farm: Any, uid: int, prompt: str, *, public: bool = True) -> str:
    glb, png = model_files(prompt)
    return await create_job(farm, uid, prompt, public=public, glb=glb, png=png)


@contextlib.contextmanager
def other_site(html: str) -> Iterator[str]:
    """Another origin on loopback (its own port) serving ``html`` at "/": a stranger's
    page that frames ours. A real server, since Chrome's local-network checks refuse
    frames from a page Playwright fulfils itself."""
    body = html.encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
