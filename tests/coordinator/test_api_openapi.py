"""The OpenAPI document: valid OpenAPI 3.1, complete, and true of the live API
(schemathesis against a real uvicorn server with a real user's API key)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate
from sqlalchemy import select
from starlette.routing import Route

from coordinator.api import v1
from coordinator.api.errors import ErrorCode
from coordinator.store import models
from tests.support.coordinators import make_settings, provision, running_coordinator
from tests.support.images import encoded
from tests.support.ui import create_job
from tests.support.webclient import app_client

# The plan of the live test's user allows what the schema allows, so every request
# the schema calls valid must be accepted (schemathesis checks that too).
SCHEMA_SIZED_TIER = """
[tiers.free]
rank = 0
weight = 1.0
daily_quota = 1000000
max_concurrent = 1
max_steps = 256
max_variants = 16
max_guidance = 50.0
max_queued = 1000000
"""


def test_openapi_document_is_valid_openapi_3_1_and_lists_every_route(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    doc = response.json()
    assert doc["openapi"] == "3.1.0"
    validate(doc)  # raises on any violation of the OpenAPI 3.1 schema
    for route in v1.ROUTES:
        assert isinstance(route, Route) and route.methods is not None
        for method in route.methods - {"HEAD"}:
            op = doc["paths"][route.path][method.lower()]
            assert op["summary"] and op["responses"] and op["x-codeSamples"]
            assert "curl" in op["x-codeSamples"][0]["source"]
            assert "default" in op["responses"], (route.path, method)
    scheme = doc["components"]["securitySchemes"]["apiKey"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    assert doc["paths"]["/api/v1/openapi.json"]["get"]["security"] == []
    submit = doc["paths"]["/api/v1/jobs"]["post"]
    assert submit["security"] == [{"apiKey": []}]
    assert {"201", "400", "401", "403", "409", "422", "429"} <= set(submit["responses"])
    schemas = doc["components"]["schemas"]
    assert set(schemas["ErrorCode"]["enum"]) == {code.value for code in ErrorCode}
    assert {entry["code"] for entry in doc["x-error-codes"]} == {code.value for code in ErrorCode}
    steps = schemas["JobSubmission"]["properties"]["steps"]
    assert (steps["type"], steps["minimum"], steps["maximum"]) == ("integer", 1, 256)
    assert schemas["JobSubmission"]["additionalProperties"] is False
    hook = schemas["JobSubmission"]["properties"]["webhook_url"]
    assert {"type": "string", "minLength": 1, "maxLength": 2000} in hook["anyOf"]
    assert "webhook_url" in schemas["JobView"]["properties"]
    params = {p["name"]: p for p in doc["paths"]["/api/v1/jobs"]["get"]["parameters"]}
    assert set(params) == {"limit", "offset", "q", "state"}
    assert params["limit"]["schema"]["maximum"] == 100


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_schemathesis_finds_nothing_against_the_live_api(tmp_path: Path) -> None:
    tiers = tmp_path / "tiers.toml"
    tiers.write_text(SCHEMA_SIZED_TIER)
    # Event streams and long-polls of the jobs it submits end within a fifth of a second
    # (schemathesis opens dozens of them; each one used to hold the run for a second).
    settings = make_settings(tmp_path / "data", tiers_file=tiers, stream_max_s=0.2)
    key, _ = await provision(settings, tmp_path, "alice")
    async with running_coordinator(settings) as coord:
        # A finished job of alice's, so that downloads answer files, not only 404s.
        done = await create_job(
            coord.farm, await _user_id(coord.farm, "alice"), "a box", image=encoded("PNG")
        )
        (tmp_path / "schemathesis.toml").write_text(
            '[[operations]]\ninclude-operation-id = "downloadModel"\n'
            f'parameters = {{ "path.job_id" = "{done}" }}\n'
            '[[operations]]\ninclude-operation-id = "getInputImage"\n'
            f'parameters = {{ "path.job_id" = "{done}" }}\n'
            # Base64 that fits the schema is rarely a picture: an image_* 422 is the
            # right answer to it (tests/coordinator/test_job_images.py covers them).
            '[[operations]]\ninclude-operation-id = "submitJob"\n'
            "checks.positive_data_acceptance.expected-statuses = "
            '["201", "401", "403", "404", "409", "422", "429"]\n'
        )
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("st")),
            "run",
            f"{coord.http}/api/v1/openapi.json",
            "--header",
            f"Authorization: Bearer {key}",
            "--checks",
            "all",
            # ST302 (a created job 404s): schemathesis 4.32 misses a DELETE between the
            # POST and a later GET of the same job in its stateful phase (a job deleted
            # earlier in the scenario), and a text job's picture is rightly a 404.
            "--exclude-checks",
            "ensure_resource_availability",
            "--max-examples",
            "15",
            "--seed",
            "20261202",
            "--no-color",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,  # its schemathesis.toml; schemathesis may write its cache there
            env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
        )
        output, _ = await asyncio.wait_for(proc.communicate(), timeout=240)
    report = output.decode(errors="replace")
    assert proc.returncode == 0, report
    assert "Tested: 10" in report or "Tested: 9" in report, report
    assert "passed" in report and "failure" not in report.split("SUMMARY")[-1], report
    assert "Missing test data" not in report, report  # downloads were reached too


async def _user_id(the_farm: Any, username: str) -> int:
    async with the_farm.sessions() as db:
        found = await db.scalar(select(models.User.id).where(models.User.username == username))
    assert found is not None
    return int(found)
