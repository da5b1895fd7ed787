"""Sharing over HTTP: share links, Open Graph / Twitter meta and the embed page, for
public models only."""

from __future__ import annotations

from pathlib import Path

from scheduler.lifecycle import JobState
from tests.support.ui import make_admin, make_job
from tests.support.webclient import app_client, csrf, register

SITE = "https://farm.example.org"


def test_public_model_page_has_share_meta_with_absolute_urls(tmp_path: Path) -> None:
    with app_client(tmp_path, public_url=SITE + "/") as client:
        register(client, "alice")
        job = make_job(client, "alice", 'a "quoted" <b>vase</b>', public=True)
        page = client.get(f"/jobs/{job}").text
        assert f'<meta property="og:image" content="{SITE}/jobs/{job}/preview.png">' in page
        assert f'<meta property="og:url" content="{SITE}/jobs/{job}">' in page
        assert '<meta name="twitter:card" content="summary_large_image">' in page
        assert (
            '<meta property="og:title" content="a &#34;quoted&#34; &lt;b&gt;vase&lt;/b&gt;">'
            in page
        )
        assert 'content="A 3D model by alice' in page
        assert f'value="{SITE}/jobs/{job}"' in page and "Copy link" in page
        # The snippet is escaped twice: once as HTML attributes, once for the textarea.
        assert f"&lt;iframe src=&#34;{SITE}/embed/{job}&#34;" in page
        assert "title=&#34;a &amp;#34;quoted&amp;#34; &amp;lt;b&amp;gt;vase" in page


def test_without_public_url_links_are_paths_and_the_host_is_not_echoed(
    tmp_path: Path,
) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        job = make_job(client, "alice", "a cup", public=True)
        page = client.get(f"/jobs/{job}", headers={"Host": "evil.example"}).text
        assert "evil.example" not in page
        assert "og:" not in page and "twitter:" not in page  # they need absolute URLs
        assert f'value="/jobs/{job}" data-from-origin' in page
        assert "&lt;iframe src=&#34;/embed/" in page


def test_model_without_preview_gets_a_summary_card(tmp_path: Path) -> None:
    with app_client(tmp_path, public_url=SITE) as client:
        register(client, "alice")
        job = make_job(client, "alice", "a cup", public=True, preview=False)
        page = client.get(f"/jobs/{job}").text
        assert f'<meta property="og:url" content="{SITE}/jobs/{job}">' in page
        assert "og:image" not in page
        assert '<meta name="twitter:card" content="summary">' in page


def test_private_hidden_and_unfinished_models_get_no_share_meta_or_embed(
    tmp_path: Path,
) -> None:
    with app_client(tmp_path, public_url=SITE) as client:
        register(client, "root")
        make_admin(client, "root")
        register(client, "alice")
        private = make_job(client, "alice", "a private lamp")
        queued = make_job(client, "alice", "a queued lamp", public=True, state=JobState.QUEUED)
        hidden = make_job(client, "alice", "a hidden lamp", public=True)
        for job in (private, queued):
            page = client.get(f"/jobs/{job}").text  # the owner sees the page itself
            assert "og:" not in page and "twitter:" not in page and "/embed/" not in page
            assert client.get(f"/embed/{job}").status_code == 404
        assert client.get("/embed/nope").status_code == 404
        client.post("/logout", data={"csrf_token": csrf(client, "/")})
        client.post(
            "/login",
            data={
                "csrf_token": csrf(client),
                "username": "root",
                "password": "a long test password 1",
            },
        )
        token = csrf(client, "/admin/reports")
        client.post(f"/admin/moderation/{hidden}/hide", data={"csrf_token": token})
        page = client.get(f"/jobs/{hidden}").text  # an admin still sees it
        assert "og:" not in page and "/embed/" not in page
        assert client.get(f"/embed/{hidden}").status_code == 404


def test_embed_page_may_be_framed_and_nothing_else_may(tmp_path: Path) -> None:
    with app_client(tmp_path, public_url=SITE) as client:
        register(client, "alice")
        job = make_job(client, "alice", "a framed teapot", public=True)
        embed = client.get(f"/embed/{job}")
        assert embed.status_code == 200
        assert "x-frame-options" not in embed.headers
        csp = embed.headers["content-security-policy"]
        assert "frame-ancestors *" in csp and "script-src 'self'" in csp
        assert f'<model-viewer src="/jobs/{job}/model.meshopt.glb"' in embed.text
        # The decoder location is set before model-viewer's module loads (ours, no CDN).
        text = embed.text
        assert text.index('src="/static/viewer.js"') < text.index("model-viewer.min.js")
        viewed = client.get(f"/jobs/{job}/model.meshopt.glb")
        assert viewed.status_code == 200 and viewed.content[:4] == b"glTF"
        assert f'href="{SITE}/jobs/{job}"' in embed.text
        assert "csrf_token" not in embed.text and 'href="/logout"' not in embed.text
        for path in (f"/jobs/{job}", "/explore", "/", f"/embed/{job}x"):
            response = client.get(path)
            assert response.headers["x-frame-options"] == "DENY", path
            assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def test_viewer_offers_ar_on_the_job_and_embed_pages(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        register(client, "alice")
        job = make_job(client, "alice", "a garden gnome", public=True)
        for path in (f"/jobs/{job}", f"/embed/{job}", f"/jobs/{job}/status"):
            page = client.get(path).text
            assert 'ar ar-modes="webxr scene-viewer quick-look"' in page, path
            assert '<button slot="ar-button" class="ar-button" type="button">' in page, path
            assert "View in your space" in page, path
