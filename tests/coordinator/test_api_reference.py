"""The API reference page over HTTP: every endpoint of the OpenAPI document with a
curl example, every error code, the same in Russian, and the helpers that describe
schemas in words."""

from __future__ import annotations

import html
from pathlib import Path

from coordinator.api import v1
from coordinator.api.errors import ErrorCode
from coordinator.web.api_reference import describe, operations
from tests.support.webclient import app_client, register


def test_api_reference_lists_every_endpoint_and_error_code(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        page = client.get("/api")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        text = html.unescape(page.text)
        for endpoint in v1.ENDPOINTS:
            assert f'id="{endpoint.operation_id}"' in text
            assert endpoint.curl() in text
            assert endpoint.summary in text
        for code in ErrorCode:
            assert f'id="error-{code.value}"' in text
        assert 'href="/api"' in text  # in the navigation, logged out too
        assert "export SHAPEFARM_URL=http://127.0.0.1" in text
        register(client, "alice")
        assert 'href="/api"' in client.get("/").text  # and logged in


def test_api_reference_in_russian(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        page = client.get("/api", headers={"Accept-Language": "ru"})
        assert '<html lang="ru">' in page.text
        for words in (
            "Справочник по API",
            "Отправить описание или картинку",
            "Коды ошибок",
            "обязательно",
        ):
            assert words in page.text, words
        # The API itself stays English whatever the client's language.
        answer = client.get("/api/v1/jobs", headers={"Accept-Language": "ru"})
        assert answer.json()["error"]["message"].startswith("Send an API key")


def test_api_reference_describes_schemas_in_words() -> None:
    components = {"Fmt": {"enum": ["glb", "obj"]}}
    assert describe({"type": "integer", "minimum": 1, "maximum": 64}, {}) == "integer, 1–64"
    assert describe({"$ref": "#/components/schemas/Fmt"}, components) == "one of: glb, obj"
    assert describe({"anyOf": [{"type": "integer"}, {"type": "null"}]}, {}) == "integer | null"
    text = describe({"type": "string", "minLength": 1, "maxLength": 500}, {})
    assert text == "string, length 1–500"
    ops = {op.anchor: op for op in operations(v1.DOCUMENT)}
    assert [f.name for f in ops["submitJob"].fields] == [
        "prompt", "seed", "guidance", "steps", "variants", "image",
        "mesh", "mesh.target_faces", "mesh.printable", "webhook_url",
    ]  # fmt: skip
    hook = next(f for f in ops["submitJob"].fields if f.name == "webhook_url")
    assert hook.kind == "string, length 1–2000 | null"
    target = next(f for f in ops["submitJob"].fields if f.name == "mesh.target_faces")
    assert target.kind == "integer, 200–500000 | one of: high, low, medium, original | null"
    assert ops["submitJob"].status == "201" and "quota_exceeded" in ops["submitJob"].errors
    assert {"image_invalid", "image_unsupported", "image_too_large"} <= set(ops["submitJob"].errors)
    hook_errors = {"webhook_url_invalid", "webhook_secret_missing", "webhook_urls_exceeded"}
    assert hook_errors <= set(ops["submitJob"].errors)
    assert not ops["getOpenApi"].auth and ops["listJobs"].auth
