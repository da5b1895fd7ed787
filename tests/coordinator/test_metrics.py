"""/metrics: who may scrape it, and what it says (Prometheus text format)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from coordinator.app import create_app
from tests.support.admin import agent_socket, as_admin, enroll, submit
from tests.support.coordinators import make_settings
from tests.support.ui import farm, make_job
from tests.support.webclient import app_client, logout, register

pytestmark = pytest.mark.timeout(15)


@contextmanager
def local_client(data_dir: Path) -> Iterator[TestClient]:
    """A client whose requests come from 127.0.0.1, like a Prometheus on the same host."""
    app = create_app(make_settings(data_dir))
    with TestClient(
        app, base_url="http://127.0.0.1", client=("127.0.0.1", 40000), follow_redirects=False
    ) as client:
        yield client


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_refused_to_remote_anonymous_and_non_admins(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        assert client.get("/metrics").status_code == 403
        register(client, "alice")
        response = client.get("/metrics")
        assert response.status_code == 403 and "admin" in response.text
        logout(client)
        as_admin(client)
        response = client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")


def test_metrics_local_scrape_allowed_unless_proxied(tmp_path: Path) -> None:
    with local_client(tmp_path) as client:
        assert client.get("/metrics").status_code == 200
        for header in ("X-Forwarded-For", "X-Real-IP", "Forwarded"):
            assert client.get("/metrics", headers={header: "203.0.113.9"}).status_code == 403


def test_metrics_accepts_admin_api_keys_only(tmp_path: Path) -> None:
    import asyncio

    from coordinator.cli.admin_cli import create_api_key, create_user
    from tests.support.coordinators import PASSWORD

    settings = make_settings(tmp_path)
    asyncio.run(create_user(settings, "root", PASSWORD, None, is_admin=True))
    asyncio.run(create_user(settings, "alice", PASSWORD, None, is_admin=False))
    root_key = asyncio.run(create_api_key(settings, "root", "prometheus"))
    alice_key = asyncio.run(create_api_key(settings, "alice", "mine"))
    with app_client(tmp_path) as client:
        ok = client.get("/metrics", headers={"Authorization": f"Bearer {root_key}"})
        assert ok.status_code == 200 and "shapefarm_queue_depth" in ok.text
        for key in (alice_key, "sfk.nope.nope", ""):
            refused = client.get("/metrics", headers={"Authorization": f"Bearer {key}"})
            assert refused.status_code == 403, key


def test_metrics_report_queue_jobs_agents_results_and_dispatch(tmp_path: Path) -> None:
    with local_client(tmp_path) as client:
        as_admin(client)
        make_job(client, "root", "a stored box")
        _, token = enroll(client)
        submit(client, "a cup")
        submit(client, "a vase")
        before = samples(client.get("/metrics").text)
        assert before[("shapefarm_queue_depth", (("tier", "admin"),))] == 2
        assert before[("shapefarm_queue_depth", (("tier", "free"),))] == 0
        assert before[("shapefarm_jobs", (("state", "queued"),))] == 2
        assert before[("shapefarm_jobs", (("state", "succeeded"),))] == 1
        assert before[("shapefarm_results_stored", ())] == 1
        assert before[("shapefarm_result_bytes_stored", ())] > 0
        assert before[("shapefarm_dispatch_latency_seconds_count", ())] == 0
        with agent_socket(client, token):
            after = samples(client.get("/metrics").text)
            assert after[("shapefarm_agents_online", (("status", "approved"),))] == 1
            assert after[("shapefarm_leases", ())] == 1
            assert after[("shapefarm_queue_depth", (("tier", "admin"),))] == 1
            assert after[("shapefarm_dispatch_latency_seconds_count", ())] == 1
            assert after[("shapefarm_dispatch_latency_seconds_bucket", (("le", "+Inf"),))] == 1
            assert farm(client).dispatch_sum_s > 0


def test_metrics_use_a_registry_per_app(tmp_path: Path) -> None:
    with local_client(tmp_path / "one") as first, local_client(tmp_path / "two") as second:
        assert first.get("/metrics").status_code == 200
        assert second.get("/metrics").status_code == 200
        assert first.app.state.metrics[0] is not second.app.state.metrics[0]  # type: ignore[attr-defined]
    names = {m.name for m in prometheus_client.REGISTRY.collect()}
    assert not any(name.startswith("shapefarm") for name in names)


def test_metrics_never_name_users_or_prompts(tmp_path: Path) -> None:
    with local_client(tmp_path) as client:
        register(client, "alice")
        submit(client, "my secret prompt")
        text = client.get("/metrics").text
        assert "alice" not in text and "secret" not in text
