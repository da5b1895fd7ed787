"""Which kind of model a ``--model`` names, and what the agent advertises for it.

Torch-free, so the CLI's ``--help``, the settings check and the ``hello`` message
need no torch. One agent process runs one model: a text-to-3D one (Shap-E,
advertised as ``shap-e``) or an image-to-3D one (Shap-E img2img, advertised as
``shap-e-img2img``); the coordinator gives it only jobs of the models it holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from protocol import IMAGE_MODEL, TEXT_MODEL

Kind = Literal["text", "image"]

TEXT_HUB_ID = "openai/shap-e"
IMAGE_HUB_ID = "openai/shap-e-img2img"

# Randomly initialised pipelines built offline (agent/tiny.py): name -> (size, kind).
RANDOM_MODELS: dict[str, tuple[str, Kind]] = {
    "tiny": ("tiny", "text"),
    "random-full": ("full", "text"),
    "tiny-img2img": ("tiny", "image"),
    "random-full-img2img": ("full", "image"),
}

ADVERTISED: dict[Kind, str] = {"text": TEXT_MODEL, "image": IMAGE_MODEL}
"""The protocol's model name for each kind (``Capabilities.models``, ``JobSpec.model``)."""

IMAGE_PIPELINE_CLASS = "ShapEImg2ImgPipeline"


def model_kind(model: str) -> Kind:
    """``text`` or ``image``: a random model by its name, a hub id by its name, a local
    directory by the pipeline class its ``model_index.json`` names."""
    name = model.split(":")[0]
    if name in RANDOM_MODELS:
        return RANDOM_MODELS[name][1]
    if name == "instant":
        return _instant_kind(model)
    index = Path(model).expanduser() / "model_index.json"
    if index.is_file():
        try:
            spec = json.loads(index.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return "text"  # loading it will say what is wrong
        return "image" if spec.get("_class_name") == IMAGE_PIPELINE_CLASS else "text"
    return "image" if model.rstrip("/").lower().endswith("img2img") else "text"


def _instant_kind(model: str) -> Kind:
    # instant:…,kind=image (see agent/instant.py); anything unparsable fails there.
    _, _, spec = model.partition(":")
    for part in spec.split(","):
        key, _, value = part.strip().partition("=")
        if key == "kind" and value == "image":
            return "image"
    return "text"


def advertised_models(model: str) -> tuple[str, ...]:
    """What ``hello`` lists in ``Capabilities.models`` for an agent running ``model``."""
    return (ADVERTISED[model_kind(model)],)


def is_random(model: str) -> bool:
    """Built offline, needs no weights: the random pipelines and the instant generator."""
    return model.split(":")[0] in (*RANDOM_MODELS, "instant")
