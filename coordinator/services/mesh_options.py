"""A job's mesh options as the form and the API give them, checked against
:mod:`protocol.limits`, and as the job page and the API describe them.

Form fields: ``mesh_detail`` (original, low, medium, high or custom),
``mesh_faces`` (a face count; typing one with "original" means custom) and
``mesh_printable`` (a checkbox). The API's ``mesh`` object (``target_faces``: a
count or a level name, ``printable``) is typed and bounded by its msgspec schema
(:class:`coordinator.api.schemas.MeshSpec`) from the same limits.
"""

from __future__ import annotations

from collections.abc import Mapping

from coordinator.i18n import gettext
from coordinator.meshes.options import MeshRequest
from coordinator.store import models
from protocol import limits

DETAILS = ("original", "high", "medium", "low", "custom")
FIELDS = ("mesh_detail", "mesh_faces", "mesh_printable")
_TRUE = {"on", "true", "1", "yes"}
_FALSE = {"", "off", "false", "0", "no"}


class MeshOptionsError(ValueError):
    """Bad mesh options; ``field`` names the form field the message belongs beside."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def parse(data: Mapping[str, object]) -> MeshRequest:
    """The mesh fields of a form (or of the API's ``mesh`` object, see :func:`from_api`)."""
    detail = str(data.get("mesh_detail") or "original")
    if detail not in DETAILS:
        raise MeshOptionsError(
            gettext("Detail must be one of: original, high, medium, low, custom."), "mesh_detail"
        )
    raw = data.get("mesh_faces")
    typed = raw is not None and str(raw).strip() != ""
    if typed and detail in limits.FACE_PRESETS:
        raise MeshOptionsError(
            gettext("Choose either a detail level or your own face count, not both."),
            "mesh_faces",
        )
    target = limits.FACE_PRESETS.get(detail)
    if detail == "custom" or typed:
        target = _faces(raw if typed else None)
    return MeshRequest(target, _flag(data.get("mesh_printable")))


def _faces(raw: object) -> int:
    bounds = {"low": f"{limits.MIN_TARGET_FACES:,}", "high": f"{limits.MAX_TARGET_FACES:,}"}
    if raw is None:
        raise MeshOptionsError(
            gettext("Enter a face count between %(low)s and %(high)s.") % bounds, "mesh_faces"
        )
    text = str(raw).strip()
    for separator in (",", "_", " ", "\u00a0", "\u202f"):  # 20,000 / 20 000 (ru)
        text = text.replace(separator, "")
    try:
        value: int | None = int(text)
    except ValueError:
        value = None
    if value is None:
        raise MeshOptionsError(
            gettext("The face count must be a whole number, e.g. 20000."), "mesh_faces"
        )
    if not limits.MIN_TARGET_FACES <= value <= limits.MAX_TARGET_FACES:
        raise MeshOptionsError(
            gettext("The face count must be between %(low)s and %(high)s.") % bounds,
            "mesh_faces",
        )
    return value


def _flag(raw: object) -> bool:
    if raw is None or isinstance(raw, bool):
        return bool(raw)
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise MeshOptionsError(gettext("'For 3D printing' must be on or off."), "mesh_printable")


def from_api(target_faces: int | str | None, printable: bool) -> MeshRequest:
    """The API's ``mesh`` object, already typed and bounded by its schema: a face
    count or a named level."""
    if isinstance(target_faces, str):
        return MeshRequest(limits.FACE_PRESETS.get(target_faces), printable)
    return MeshRequest(target_faces, printable)


def of_job(job: models.Job) -> MeshRequest:
    return MeshRequest(job.mesh_target_faces, bool(job.mesh_printable))


def detail_of(choice: MeshRequest) -> str:
    """The form's detail level for a choice (to prefill "generate again")."""
    for name, faces in limits.FACE_PRESETS.items():
        if choice.target_faces == faces:
            return name
    return "original" if choice.target_faces is None else "custom"


def form_values(job: models.Job) -> dict[str, str]:
    """The form fields that ask for the same mesh options as ``job`` did (none for a job
    that asked for none: the form's defaults already mean "as generated")."""
    choice = of_job(job)
    if choice.wire is None:
        return {}
    detail = detail_of(choice)
    values = {"mesh_detail": detail}
    if detail == "custom":
        values["mesh_faces"] = str(choice.target_faces)
    if choice.printable:
        values["mesh_printable"] = "on"
    return values
