"""shapefarm GPU agent: dials out to a coordinator and runs Shap-E jobs."""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("shapefarm")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+local"
