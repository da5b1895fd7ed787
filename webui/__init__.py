"""shapefarm web UI: Jinja2 templates (pages and htmx partials) and static assets.

Third-party JavaScript (htmx, its SSE extension, model-viewer, meshopt's decoder) is installed from
the npm registry and copied to ``static/vendor`` by ``scripts/install`` — never
loaded from a CDN.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent
TEMPLATES = ROOT / "templates"
STATIC = ROOT / "static"
VENDOR = STATIC / "vendor"

VENDOR_FILES = {
    "htmx.min.js": "htmx.org/dist/htmx.min.js",
    "sse.min.js": "htmx-ext-sse/dist/sse.min.js",
    "model-viewer.min.js": "@google/model-viewer/dist/model-viewer.min.js",
    # A classic script (UMD): model-viewer loads it before decoding meshopt models.
    "meshopt_decoder.js": "meshoptimizer/meshopt_decoder.cjs",
}
