"""Bad input to the JSON API, over HTTP: every refusal is JSON in one shape, with a
stable code and the place of the problem, and nothing is stored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from coordinator.app import create_app
from coordinator.services import jobs, submission
from coordinator.store import models
from tests.support.coordinators import TWO_A_DAY, make_settings
from tests.support.ui import farm, make_key, run, user_id
from tests.support.webclient import app_client, register


def _alice(client: TestClient) -> dict[str, str]:
    register(client, "alice")
    client.cookies.clear()  # the API must not need (or use) the session cookie
    return {"Authorization": f"Bearer {make_key(client, 'alice')[1]}"}


def _error(response: Any, status: int, code: str) -> dict[str, Any]:
    """The error object of ``response``, checked for the one shape every error has."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    error: dict[str, Any] = body["error"]
    return error


def _loc(error: dict[str, Any]) -> list[object]:
    loc: list[object] = error["details"][0]["loc"]
    return loc


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    with app_client(tmp_path) as client:
        yield client, _alice(client)


@pytest.fixture(scope="module")
def refusing_api(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """One app for the many refusal cases: none of them may store anything."""
    with app_client(tmp_path_factory.mktemp("refusals")) as client:
        yield client, _alice(client)


BAD_BODIES = [
    ({"prompt": "a mug", "steps": 12.7}, ["body", "steps"], "Expected `int`, got `float`"),
    ({"prompt": ["a", "b"]}, ["body", "prompt"], "Expected `str`, got `array`"),
    ({"prompt": "a mug", "steps": "12"}, ["body", "steps"], "got `str`"),
    ({"prompt": "a mug", "steps": True}, ["body", "steps"], "got `bool`"),
    ({"prompt": "a mug", "steps": 0}, ["body", "steps"], ">= 1"),
    ({"prompt": "a mug", "steps": 257}, ["body", "steps"], "<= 256"),
    ({"prompt": "a mug", "seed": -1}, ["body", "seed"], ">= 0"),
    ({"prompt": "a mug", "seed": 2**32}, ["body", "seed"], "<= 4294967295"),
    ({"prompt": "a mug", "seed": 10**30}, ["body", "seed"], "<= 4294967295"),
    ({"prompt": "a mug", "guidance": 50.5}, ["body", "guidance"], "<= 50.0"),
    ({"prompt": "a mug", "guidance": "high"}, ["body", "guidance"], "got `str`"),
    ({"prompt": "a mug", "variants": 17}, ["body", "variants"], "<= 16"),
    ({"prompt": "x" * 501}, ["body", "prompt"], "length <= 500"),
    ({"prompt": "a\x00mug"}, ["body", "prompt"], "no control characters"),
    ({"prompt": "a\nmug"}, ["body", "prompt"], "no control characters"),
    ({"prompt": "   "}, ["body", "prompt"], "other than spaces"),
    ({"prompt": "a mug", "colour": "red"}, ["body", "colour"], "unknown field `colour`"),
    ({"steps": 8}, ["body", "prompt"], "missing required field `prompt`"),
    (["a mug"], ["body"], "Expected `object`, got `array`"),
    ("a mug", ["body"], "Expected `object`, got `str`"),
]


@pytest.mark.parametrize(("body", "loc", "fragment"), BAD_BODIES)
def test_api_submit_refuses_each_bad_body_with_its_place(
    refusing_api: tuple[TestClient, dict[str, str]],
    body: object,
    loc: list[object],
    fragment: str,
) -> None:
    client, alice = refusing_api
    error = _error(client.post("/api/v1/jobs", json=body, headers=alice), 422, "validation_failed")
    assert _loc(error) == loc and fragment in error["details"][0]["message"], error
    assert fragment in error["message"]
    assert client.get("/api/v1/jobs", headers=alice).json()["total"] == 0  # nothing stored


def test_api_submit_takes_a_whole_float_as_an_integer(
    api: tuple[TestClient, dict[str, str]],
) -> None:
    # JSON Schema's integer includes 12.0; only a fraction is refused.
    client, alice = api
    created = client.post("/api/v1/jobs", json={"prompt": "a mug", "steps": 12.0}, headers=alice)
    assert created.status_code == 201, created.text
    assert created.json()["jobs"][0]["steps"] == 12


@pytest.mark.parametrize(
    "raw",
    [b"[1,2", b"{'prompt': 'a'}", b"\xff\xfe", b'{"prompt": "a\\ud800"}', b"[" * 20000],
)
def test_api_submit_refuses_text_that_is_not_json(
    refusing_api: tuple[TestClient, dict[str, str]], raw: bytes
) -> None:
    client, alice = refusing_api
    response = client.post(
        "/api/v1/jobs", content=raw, headers={**alice, "Content-Type": "application/json"}
    )
    error = _error(response, 400, "invalid_json")
    assert _loc(error) == ["body"]


def test_api_visibility_takes_only_a_boolean(api: tuple[TestClient, dict[str, str]]) -> None:
    client, alice = api
    job = client.post("/api/v1/jobs", json={"prompt": "a mug"}, headers=alice).json()["jobs"][0]
    url = f"/api/v1/jobs/{job['id']}/visibility"
    for body in ({}, {"public": "true"}, {"public": 1}, {"public": None}, {"public": True, "x": 1}):
        error = _error(client.post(url, json=body, headers=alice), 422, "validation_failed")
        assert _loc(error)[0] == "body"
    assert client.post(url, json={"public": True}, headers=alice).json()["public"] is True


BAD_QUERIES = [
    ("limit=0", ["query", "limit"]),
    ("limit=101", ["query", "limit"]),
    ("limit=1.5", ["query", "limit"]),
    ("limit=ten", ["query", "limit"]),
    ("offset=-1", ["query", "offset"]),
    ("offset=99999999999999999999999", ["query", "offset"]),
    ("state=done", ["query", "state"]),
    ("state=null", ["query", "state"]),
    ("q=" + "x" * 201, ["query", "q"]),
    ("page=2", ["query", "page"]),
    ("limit=1&limit=2", ["query", "limit"]),
]


@pytest.mark.parametrize(("query", "loc"), BAD_QUERIES)
def test_api_list_refuses_each_bad_query_parameter(
    refusing_api: tuple[TestClient, dict[str, str]], query: str, loc: list[object]
) -> None:
    client, alice = refusing_api
    error = _error(client.get(f"/api/v1/jobs?{query}", headers=alice), 422, "validation_failed")
    assert _loc(error) == loc


def test_api_list_reads_good_query_parameters(api: tuple[TestClient, dict[str, str]]) -> None:
    client, alice = api
    for prompt in ("a red mug", "a blue vase"):
        assert client.post("/api/v1/jobs", json={"prompt": prompt}, headers=alice).is_success
    page = client.get("/api/v1/jobs?limit=1&offset=1&q=&state=queued", headers=alice).json()
    assert (page["total"], page["limit"], page["offset"]) == (2, 1, 1)
    assert [job["prompt"] for job in page["jobs"]] == ["a red mug"]
    assert client.get("/api/v1/jobs?q=vase", headers=alice).json()["total"] == 1


def test_api_paths_that_name_nothing_are_404s(api: tuple[TestClient, dict[str, str]]) -> None:
    client, alice = api
    job = client.post("/api/v1/jobs", json={"prompt": "a mug"}, headers=alice).json()["jobs"][0]
    _error(client.get("/api/v1/jobs/" + "x" * 65, headers=alice), 404, "job_not_found")
    _error(client.get("/api/v1/jobs/no-such-job", headers=alice), 404, "job_not_found")
    error = _error(
        client.get(f"/api/v1/jobs/{job['id']}/download/fbx", headers=alice), 404, "not_found"
    )
    assert _loc(error) == ["path", "fmt"]
    for path in ("/api/v1/nothing", "/api/nothing", "/api/v2/jobs"):
        _error(client.get(path, headers=alice), 404, "not_found")


def test_api_wrong_method_is_405_listing_the_allowed_ones(
    api: tuple[TestClient, dict[str, str]],
) -> None:
    client, alice = api
    response = client.put("/api/v1/jobs", json={}, headers=alice)
    _error(response, 405, "method_not_allowed")
    assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}
    response = client.patch("/api/v1/jobs/abc", headers=alice)
    _error(response, 405, "method_not_allowed")
    assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD", "DELETE"}


def test_api_refuses_missing_bad_and_suspended_keys(
    api: tuple[TestClient, dict[str, str]],
) -> None:
    client, alice = api
    for headers in ({}, {"Authorization": "Basic YTpi"}, {"Authorization": "Bearer "},
                    {"Authorization": "Bearer sfk.no.pe"}):  # fmt: skip
        response = client.get("/api/v1/jobs", headers=headers)
        _error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"].startswith("Bearer")
    uid = user_id(client, "alice")

    async def ban() -> None:
        async with farm(client).sessions() as db:
            user = await db.get(models.User, uid)
            assert user is not None
            user.banned = True
            await db.commit()

    run(client, ban)
    _error(client.get("/api/v1/jobs", headers=alice), 403, "account_suspended")
    submit = client.post("/api/v1/jobs", json={"prompt": "a mug"}, headers=alice)
    _error(submit, 403, "account_suspended")


def test_api_quota_and_plan_refusals(tmp_path: Path) -> None:
    tiers = tmp_path / "tiers.toml"
    tiers.write_text(TWO_A_DAY)
    with app_client(tmp_path / "data", tiers_file=tiers) as client:
        alice = _alice(client)
        over = client.post("/api/v1/jobs", json={"prompt": "a", "variants": 5}, headers=alice)
        assert "at most 4 variants" in _error(over, 422, "job_rejected")["message"]
        ok = client.post("/api/v1/jobs", json={"prompt": "a mug", "variants": 2}, headers=alice)
        assert ok.status_code == 201
        third = client.post("/api/v1/jobs", json={"prompt": "a mug"}, headers=alice)
        assert "Daily quota reached" in _error(third, 429, "quota_exceeded")["message"]


def test_api_body_over_the_limit_is_a_json_413(tmp_path: Path) -> None:
    with app_client(tmp_path, max_body_bytes=1000) as client:
        alice = _alice(client)
        big = {"prompt": "a mug", "pad": "x" * 2000}
        error = _error(client.post("/api/v1/jobs", json=big, headers=alice), 413, "body_too_large")
        assert "1000 bytes" in error["message"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit counts the bytes
            yield b'{"prompt": "'
            yield b"x" * 2000
            yield b'"}'

        chunked = client.post("/api/v1/jobs", content=chunks(), headers=alice)
        _error(chunked, 413, "body_too_large")
        # The HTML side keeps its plain answer.
        page = client.post("/login", content=b"x" * 2000)
        assert page.status_code == 413 and page.headers["content-type"].startswith("text/plain")


def test_api_crash_is_a_json_500_and_html_keeps_its_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    app = create_app(make_settings(tmp_path))
    with TestClient(
        app, base_url="http://127.0.0.1", raise_server_exceptions=False, follow_redirects=False
    ) as client:
        alice = _alice(client)
        monkeypatch.setattr(jobs, "list_jobs", broken)
        error = _error(client.get("/api/v1/jobs", headers=alice), 500, "internal_error")
        assert "a bug" not in error["message"]  # no internals leak
        missing = client.get("/no-such-page")
        assert missing.status_code == 404 and missing.headers["content-type"].startswith(
            "text/html"
        )


def test_api_bounds_are_the_ones_the_form_and_the_protocol_use() -> None:
    # One set of limits (protocol.limits) for the API schema, the form and the wire.
    from coordinator.api.v1 import DOCUMENT
    from protocol import limits

    props = DOCUMENT["components"]["schemas"]["JobSubmission"]["properties"]
    assert (props["steps"]["minimum"], props["steps"]["maximum"]) == (
        limits.MIN_STEPS,
        limits.MAX_STEPS,
    )
    assert props["guidance"]["maximum"] == limits.MAX_GUIDANCE
    assert props["seed"]["anyOf"][0]["maximum"] == limits.MAX_SEED
    assert props["prompt"]["maxLength"] == limits.MAX_PROMPT_CHARS
    assert props["variants"]["maximum"] == limits.MAX_VARIANTS
    for field, value in (("steps", limits.MAX_STEPS + 1), ("variants", limits.MAX_VARIANTS + 1)):
        with pytest.raises(submission.JobRequestError):  # the web form's parser agrees
            submission.JobRequest.parse({"prompt": "a mug", field: str(value)})
    assert submission.JobRequest.parse(
        {"prompt": "a mug", "steps": str(limits.MAX_STEPS)}
    ).steps == (limits.MAX_STEPS)


def test_api_checks_the_key_before_the_input(
    refusing_api: tuple[TestClient, dict[str, str]],
) -> None:
    # A stranger learns nothing from validation: bad input without a key is a 401.
    client, _ = refusing_api
    _error(client.get("/api/v1/jobs?limit=0"), 401, "unauthorized")
    _error(client.post("/api/v1/jobs", json={"steps": 12.7}), 401, "unauthorized")
    _error(client.post("/api/v1/jobs", content=b"[1,"), 401, "unauthorized")
    _error(client.post("/api/v1/jobs/x/visibility", json={"public": 1}), 401, "unauthorized")
