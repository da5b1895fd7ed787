"""Mesh options from outside: the generate form (fields, errors beside them) and
``POST /api/v1/jobs`` (a strict ``mesh`` object), both bounded by protocol.limits."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import trimesh
from starlette.testclient import TestClient

from coordinator.meshes.options import MeshRequest
from coordinator.services import mesh_options
from coordinator.services.mesh_options import MeshOptionsError
from protocol import MeshOptions
from protocol.limits import FACE_PRESETS, MAX_TARGET_FACES, MIN_TARGET_FACES
from tests.support.ui import api_key
from tests.support.webclient import app_client, csrf, register

HTMX = {"HX-Request": "true"}


# -- the parser -------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "choice"),
    [
        ({}, MeshRequest()),
        ({"mesh_detail": "original"}, MeshRequest()),
        ({"mesh_detail": "low"}, MeshRequest(FACE_PRESETS["low"])),
        ({"mesh_detail": "high", "mesh_printable": "on"}, MeshRequest(FACE_PRESETS["high"], True)),
        ({"mesh_detail": "custom", "mesh_faces": "12345"}, MeshRequest(12_345)),
        ({"mesh_faces": "20,000"}, MeshRequest(20_000)),  # typed with "original": custom
        ({"mesh_faces": "20 000"}, MeshRequest(20_000)),  # as Russian writes it
        ({"mesh_detail": "medium", "mesh_faces": ""}, MeshRequest(FACE_PRESETS["medium"])),
        ({"mesh_printable": "on"}, MeshRequest(None, True)),
        ({"mesh_faces": str(MIN_TARGET_FACES)}, MeshRequest(MIN_TARGET_FACES)),
        ({"mesh_faces": str(MAX_TARGET_FACES)}, MeshRequest(MAX_TARGET_FACES)),
    ],
)
def test_mesh_options_parse_form_fields(fields: dict[str, str], choice: MeshRequest) -> None:
    assert mesh_options.parse(fields) == choice


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"mesh_detail": "ultra"}, "mesh_detail", "Detail must be one of"),
        ({"mesh_detail": "custom"}, "mesh_faces", "Enter a face count between 200 and 500,000"),
        ({"mesh_faces": "lots"}, "mesh_faces", "whole number"),
        ({"mesh_faces": "1.5"}, "mesh_faces", "whole number"),
        ({"mesh_faces": str(MIN_TARGET_FACES - 1)}, "mesh_faces", "between 200 and 500,000"),
        ({"mesh_faces": str(MAX_TARGET_FACES + 1)}, "mesh_faces", "between 200 and 500,000"),
        ({"mesh_faces": "-5"}, "mesh_faces", "between"),
        ({"mesh_detail": "low", "mesh_faces": "9000"}, "mesh_faces", "not both"),
        ({"mesh_printable": "maybe"}, "mesh_printable", "on or off"),
    ],
)
def test_mesh_options_refuse_bad_form_values(
    fields: dict[str, str], field: str, message: str
) -> None:
    with pytest.raises(MeshOptionsError, match=message) as info:
        mesh_options.parse(fields)
    assert info.value.field == field


def test_mesh_options_go_on_the_wire_only_when_asked() -> None:
    assert MeshRequest().wire is None
    assert MeshRequest(5_000).wire == MeshOptions(5_000, False)
    assert MeshRequest(None, True).wire == MeshOptions(None, True)


# -- the form ---------------------------------------------------------------


def test_form_has_a_mesh_fieldset_with_the_limits(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        page = client.get("/").text
        fieldset = page[page.index('<fieldset id="mesh-options"') : page.index("</fieldset>")]
        assert "<legend>Mesh</legend>" in fieldset
        assert f'min="{MIN_TARGET_FACES}" max="{MAX_TARGET_FACES}"' in fieldset
        for name in ("original", "high", "medium", "low", "custom"):
            assert f'<option value="{name}"' in fieldset
        assert "Medium: 20,000 faces" in fieldset
        assert 'type="checkbox" id="mesh_printable" name="mesh_printable"' in fieldset
        assert "watertight" in fieldset  # the help says what printing does


def test_form_submission_stores_mesh_options_and_job_page_shows_them(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        response = client.post(
            "/jobs",
            data={
                "csrf_token": csrf(client, "/"),
                "prompt": "a vase",
                "steps": "8",
                "mesh_detail": "custom",
                "mesh_faces": "7500",
                "mesh_printable": "on",
            },
        )
        assert response.status_code == 303
        page = client.get(response.headers["location"]).text
        assert re.search(r"<dt>Mesh</dt><dd>about 7,500 faces, for 3D printing</dd>", page)
        # "Generate again" asks for the same mesh options.
        assert "mesh_detail=custom&amp;mesh_faces=7500&amp;mesh_printable=on" in page
        again = client.get("/?mesh_detail=custom&mesh_faces=7500&mesh_printable=on").text
        assert 'value="custom" selected' in again and 'value="7500"' in again
        assert 'name="mesh_printable" value="on" checked' in again


def test_form_mesh_error_is_shown_beside_its_field_after_htmx_swap(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        token = csrf(client, "/")
        response = client.post(
            "/jobs",
            data={"prompt": "a cat", "mesh_detail": "low", "mesh_faces": "9000"},
            headers={**HTMX, "X-CSRF-Token": token},
        )
        assert response.status_code == 422
        html = response.text
        # The error comes out of band into the paragraph beside the fields, naming its
        # field (app.js marks it aria-invalid); the general error box stays empty.
        error = re.search(
            r'<p id="mesh-error" class="error field-error" role="alert" '
            r'hx-swap-oob="outerHTML" data-field="mesh_faces">([^<]*)</p>',
            html,
        )
        assert error and "not both" in error.group(1)
        assert re.search(r'hx-swap-oob="innerHTML:#submit-error"></div>', html)


def test_form_other_errors_clear_a_stale_mesh_error(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        token = csrf(client, "/")
        response = client.post(
            "/jobs",
            data={"prompt": "a cat", "steps": "abc", "mesh_detail": "high"},
            headers={**HTMX, "X-CSRF-Token": token},
        )
        assert response.status_code == 422
        assert "Steps must be a number" in response.text
        assert (
            '<p id="mesh-error" class="error field-error" role="alert" hx-swap-oob="outerHTML">'
            "</p>" in response.text
        )


def test_form_without_javascript_shows_the_mesh_error_in_the_page(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        response = client.post(
            "/jobs",
            data={"csrf_token": csrf(client, "/"), "prompt": "a cat", "mesh_faces": "12"},
        )
        assert response.status_code == 422
        assert "<html" in response.text
        assert "The face count must be between 200 and 500,000." in response.text
        assert 'aria-invalid="true"' in response.text


# -- the API ----------------------------------------------------------------


def _alice(client: TestClient) -> dict[str, str]:
    register(client, "alice")
    headers = {"Authorization": f"Bearer {api_key(client)}"}
    client.cookies.clear()
    return headers


def test_api_accepts_mesh_options_and_shows_them(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        alice = _alice(client)
        created = client.post(
            "/api/v1/jobs",
            json={"prompt": "a mug", "steps": 8, "mesh": {"target_faces": 3000, "printable": True}},
            headers=alice,
        )
        assert created.status_code == 201, created.text
        job = created.json()["jobs"][0]
        assert job["mesh"] == {"target_faces": 3000, "printable": True}
        again = client.get(f"/api/v1/jobs/{job['id']}", headers=alice).json()
        assert again["mesh"] == {"target_faces": 3000, "printable": True}
        preset = client.post(
            "/api/v1/jobs", json={"prompt": "a mug", "mesh": {"target_faces": "low"}}, headers=alice
        )
        assert preset.json()["jobs"][0]["mesh"] == {
            "target_faces": FACE_PRESETS["low"],
            "printable": False,
        }
        plain = client.post("/api/v1/jobs", json={"prompt": "a mug"}, headers=alice)
        assert "mesh" not in plain.json()["jobs"][0]


@pytest.mark.parametrize(
    ("mesh", "loc", "message"),
    [
        ({"target_faces": 10}, ["body", "mesh", "target_faces"], ">= 200"),
        ({"target_faces": 10**9}, ["body", "mesh", "target_faces"], "<= 500000"),
        ({"target_faces": "5000"}, ["body", "mesh", "target_faces"], "Invalid enum value '5000'"),
        ({"target_faces": 5000.5}, ["body", "mesh", "target_faces"], "Expected `int | str"),
        ({"target_faces": "ultra"}, ["body", "mesh", "target_faces"], "Invalid enum value"),
        ({"printable": "yes"}, ["body", "mesh", "printable"], "Expected `bool`"),
        ({"faces": 5000}, ["body", "mesh"], "unknown field `faces`"),
    ],
)
def test_api_refuses_bad_mesh_options_clearly(
    tmp_path: Path, mesh: object, loc: list[str], message: str
) -> None:
    with app_client(tmp_path) as client:
        alice = _alice(client)
        response = client.post("/api/v1/jobs", json={"prompt": "a", "mesh": mesh}, headers=alice)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "validation_failed"
        assert error["details"][0]["loc"] == loc, error
        assert message in error["details"][0]["message"], error


def test_api_openapi_documents_the_mesh_object(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        spec = client.get("/api/v1/openapi.json").json()
        schemas = spec["components"]["schemas"]
        mesh = schemas["MeshSpec"]["properties"]
        assert mesh["target_faces"]["anyOf"][0]["minimum"] == MIN_TARGET_FACES
        assert mesh["target_faces"]["anyOf"][0]["maximum"] == MAX_TARGET_FACES
        assert set(mesh) == {"target_faces", "printable"}
        assert {"enum": ["high", "low", "medium", "original"]} in mesh["target_faces"]["anyOf"]
        assert "watertight" in schemas["ResultView"]["properties"]


# -- a printable STL the cache lost ---------------------------------------


async def test_printable_stl_is_remade_the_same_way_when_the_cache_lost_it(
    tmp_path: Path,
) -> None:
    from coordinator.meshes.glb import Mesh, encode_glb
    from coordinator.meshes.glbcheck import GlbLimits
    from coordinator.store.modelfiles import ModelFiles
    from coordinator.store.storage import LocalBlobStore

    sphere = trimesh.creation.icosphere(subdivisions=3)
    holed = Mesh(sphere.vertices.astype("float32"), sphere.faces[4:].astype("uint32"))
    store = LocalBlobStore(tmp_path / "models")
    store.write("job1", "glb", encode_glb(holed))
    files = ModelFiles(store, GlbLimits(), concurrency=1)

    async def stl(printable: bool) -> trimesh.Trimesh:
        model = await files.open("job1", "stl", printable=printable)
        data = b"".join([chunk async for chunk in model.chunks()])
        return trimesh.load(io.BytesIO(data), file_type="stl", force="mesh")

    assert (await stl(printable=True)).is_watertight
    assert files.conversions == 1
    assert (await stl(printable=True)).is_watertight and files.conversions == 1  # cached
    store.path("job1", "stl").unlink()  # e.g. a store cleaned by hand
    assert (await stl(printable=True)).is_watertight and files.conversions == 2
    store.path("job1", "stl").unlink()
    assert not (await stl(printable=False)).is_watertight  # a plain job's STL: as stored
