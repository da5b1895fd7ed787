"""Password reset and address verification by mail, against a real SMTP server.

The coordinator sends through aiosmtpd on 127.0.0.1; the tests read the mail,
follow its link over HTTP and set a new password. Also: links work once and
expire, wrong tokens fail alike, an unknown address gets the same answer and no
mail, requests are rate-limited, and the database never holds a token.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select, update
from starlette.testclient import TestClient

from coordinator.services import tokens
from coordinator.store import models
from tests.support.coordinators import PASSWORD, make_settings, running_coordinator
from tests.support.mailserver import Inbox, free_port, smtp_server
from tests.support.ui import farm, password_ok, run, user_id
from tests.support.webclient import CSRF, app_client, csrf, register

NEW_PASSWORD = "a brand new passphrase 9"
ADDRESS = "alice@example.org"


def _mail_client(tmp_path: Path, inbox: Inbox, **overrides: Any) -> Any:
    return app_client(tmp_path, **inbox.settings("http://127.0.0.1"), **overrides)


def _prove(client: TestClient, username: str, address: str) -> None:
    """Give the user a verified address, as if they had followed a verification link."""
    uid = user_id(client, username)

    async def set_address() -> None:
        async with farm(client).sessions() as db:
            user = await db.get(models.User, uid)
            assert user is not None
            user.email, user.email_verified_at = address, farm(client).clock()
            await db.commit()

    run(client, set_address)


def _drain(client: TestClient) -> None:
    run(client, client.app.state.mailer.drain)  # type: ignore[attr-defined]


def _forgot(client: TestClient, address: str) -> Any:
    return client.post(
        "/forgot-password",
        data={"csrf_token": csrf(client, "/forgot-password"), "email": address},
    )


def _reset(client: TestClient, link: str, password: str = NEW_PASSWORD) -> Any:
    page = client.get(link)
    token = link.partition("token=")[2]
    match = CSRF.search(page.text)
    return client.post(
        "/reset-password",
        data={
            "csrf_token": match.group(1) if match else csrf(client, "/forgot-password"),
            "token": token,
            "new_password": password,
            "new_password2": password,
        },
    )


async def test_reset_by_mail_over_real_http_and_smtp(tmp_path: Path) -> None:
    with smtp_server() as inbox:
        port = free_port()  # after the mail server's bind (see test_job_mail)
        settings = make_settings(
            tmp_path / "data", port=port, **inbox.settings(f"http://127.0.0.1:{port}")
        )
        async with running_coordinator(settings, port=port) as coord:
            base = coord.http
            async with httpx.AsyncClient(base_url=base) as alice:
                token = CSRF.search((await alice.get("/register")).text)
                assert token
                response = await alice.post(
                    "/register",
                    data={
                        "csrf_token": token.group(1),
                        "username": "alice",
                        "email": ADDRESS,
                        "password": PASSWORD,
                        "password2": PASSWORD,
                    },
                )
                assert response.status_code == 303
                # Registration mails a link that proves the address.
                verification = await inbox.next()
                assert verification.envelope_to == [ADDRESS]
                page = await alice.get(verification.link())
                assert "Confirm the address" in page.text
                token = CSRF.search(page.text)
                assert token
                confirmed = await alice.post(
                    "/verify-email",
                    data={
                        "csrf_token": token.group(1),
                        "token": verification.link().partition("token=")[2],
                    },
                )
                assert confirmed.status_code == 200 and "is the address of your account" in (
                    confirmed.text
                )
                key = await alice.post(
                    "/profile/api-keys", data={"csrf_token": token.group(1), "name": "k"}
                )
                secret = re.search(r'id="new-key"[^>]*>([^<]+)<', key.text)
                assert secret

                async with httpx.AsyncClient(base_url=base) as stranger:
                    login_page = (await stranger.get("/login")).text
                    assert 'href="/forgot-password"' in login_page
                    form = CSRF.search((await stranger.get("/forgot-password")).text)
                    assert form
                    asked = await stranger.post(
                        "/forgot-password",
                        data={"csrf_token": form.group(1), "email": "Alice@Example.org "},
                    )
                    assert asked.status_code == 200 and "is on its way" in asked.text
                    mail = await inbox.next()
                    assert mail.envelope_to == [ADDRESS]
                    assert mail.message["Subject"] == "Reset your shapefarm password"
                    assert mail.message["From"] == "shapefarm <noreply@farm.test>"
                    link = mail.link()
                    assert link.startswith(f"{base}/reset-password?token=sfr.")
                    assert link in mail.html and "Hello alice," in mail.text

                    form_page = await stranger.get(link)
                    assert form_page.status_code == 200
                    assert form_page.headers["referrer-policy"] == "no-referrer"
                    assert form_page.headers["cache-control"] == "no-store"
                    csrf_token = CSRF.search(form_page.text)
                    assert csrf_token
                    done = await stranger.post(
                        "/reset-password",
                        data={
                            "csrf_token": csrf_token.group(1),
                            "token": link.partition("token=")[2],
                            "new_password": NEW_PASSWORD,
                            "new_password2": NEW_PASSWORD,
                        },
                    )
                    assert done.status_code == 303
                    assert done.headers["location"] == "/login?reset=1"

                # Alice's other session ended and her API key is revoked.
                assert (await alice.get("/profile")).status_code == 303
                listed = await alice.get(
                    "/api/v1/jobs", headers={"Authorization": f"Bearer {secret.group(1)}"}
                )
                assert listed.status_code == 401

            async with httpx.AsyncClient(base_url=base) as again:
                form = CSRF.search((await again.get("/login")).text)
                assert form
                old = await again.post(
                    "/login",
                    data={"csrf_token": form.group(1), "username": "alice", "password": PASSWORD},
                )
                assert old.status_code == 400
                new = await again.post(
                    "/login",
                    data={
                        "csrf_token": form.group(1),
                        "username": "alice",
                        "password": NEW_PASSWORD,
                    },
                )
                assert new.status_code == 303
            async with coord.farm.sessions() as db:
                actions = list(await db.scalars(select(models.AuditEntry.action)))
            assert "user.password_reset" in actions and "user.email_verified" in actions
        # Neither link's secret is in the database files; the reset link's hash is.
        raw = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("shapefarm.db*"))
        secrets = [
            sent.partition("token=")[2].rpartition(".")[2] for sent in (link, verification.link())
        ]
        for secret_part in secrets:
            assert secret_part.encode() not in raw
        with sqlite3.connect(tmp_path / "data" / "shapefarm.db") as conn:
            hashes = {row[0] for row in conn.execute("SELECT secret_hash FROM mail_tokens")}
        assert tokens.secret_hash(secrets[0]) in hashes


def test_reset_link_works_once_and_not_after_expiry(tmp_path: Path) -> None:
    with smtp_server() as inbox, _mail_client(tmp_path, inbox) as client:
        register(client, "alice")
        _prove(client, "alice", ADDRESS)
        assert _forgot(client, ADDRESS).status_code == 200
        link = inbox.wait().link()
        assert _reset(client, link).status_code == 303
        assert password_ok(client, "alice", NEW_PASSWORD)

        reused = _reset(client, link, "yet another passphrase 3")
        assert reused.status_code == 400 and "does not work any more" in reused.text
        assert password_ok(client, "alice", NEW_PASSWORD)
        assert client.get(link).status_code == 400

        assert _forgot(client, ADDRESS).status_code == 200
        late = inbox.wait().link()

        async def expire() -> None:
            async with farm(client).sessions() as db:
                await db.execute(update(models.MailToken).values(expires_at=1.0))
                await db.commit()

        run(client, expire)
        expired = _reset(client, late, "yet another passphrase 3")
        assert expired.status_code == 400 and "does not work any more" in expired.text
        assert password_ok(client, "alice", NEW_PASSWORD)


def test_wrong_tokens_are_refused_alike(tmp_path: Path) -> None:
    with smtp_server() as inbox, _mail_client(tmp_path, inbox) as client:
        register(client, "alice")
        _prove(client, "alice", ADDRESS)
        _forgot(client, ADDRESS)
        link = inbox.wait().link()
        token = link.partition("token=")[2]
        token_id, _, secret = token.removeprefix("sfr.").partition(".")
        wrong = [
            f"sfr.{token_id}.{secret[:-2]}xx",  # the secret altered
            f"sfr.unknownid.{secret}",
            f"sfv.{token_id}.{secret}",  # another purpose's prefix
            token_id,
            "",
            "sfr." + "a" * 300,
        ]
        for bad in wrong:
            page = client.get("/reset-password", params={"token": bad})
            assert page.status_code == 400, bad
            assert "does not work any more" in page.text
            assert "Ask for a new link" in page.text
            response = client.post(
                "/reset-password",
                data={
                    "csrf_token": csrf(client, "/forgot-password"),
                    "token": bad,
                    "new_password": NEW_PASSWORD,
                    "new_password2": NEW_PASSWORD,
                },
            )
            assert response.status_code == 400, bad
        assert password_ok(client, "alice")
        # A weak new password keeps the link usable; the real one then works.
        weak = _reset(client, link, "short")
        assert weak.status_code == 400 and "at least 10 characters" in weak.text
        assert 'name="token"' in weak.text
        assert _reset(client, link).status_code == 303


def test_unknown_or_unproven_address_gets_the_same_answer_and_no_mail(tmp_path: Path) -> None:
    with smtp_server() as inbox, _mail_client(tmp_path, inbox) as client:
        register(client, "alice")
        _prove(client, "alice", ADDRESS)
        register(client, "bob")
        uid = user_id(client, "bob")

        async def unproven() -> None:
            async with farm(client).sessions() as db:
                await db.execute(
                    update(models.User).where(models.User.id == uid).values(email="bob@example.org")
                )
                await db.commit()

        run(client, unproven)
        answers = {}
        for address in (ADDRESS, "nobody@example.org", "bob@example.org"):
            response = _forgot(client, address)
            answers[address] = (response.status_code, response.text.replace(address, "ADDRESS"))
        _drain(client)
        assert len(set(answers.values())) == 1, "the answers differ"
        assert inbox.wait().envelope_to == [ADDRESS]
        assert inbox.empty(), "a mail went to an address without a proven account"


def test_reset_requests_are_rate_limited_per_address_and_per_client(tmp_path: Path) -> None:
    with (
        smtp_server() as inbox,
        _mail_client(
            tmp_path, inbox, mail_per_address_per_hour=2, mail_per_ip_per_hour=4
        ) as client,
    ):
        assert [_forgot(client, "a@example.org").status_code for _ in range(3)] == [200, 200, 429]
        limited = _forgot(client, "a@example.org")
        assert limited.status_code == 429 and "Wait an hour" in limited.text
        # The address limit is not the client's: another address passes, until the
        # client's own limit (4 an hour, refusals included) is reached.
        assert _forgot(client, "b@example.org").status_code == 429
        for bad_address in ("not an address", "victim,x@evil.example", '"a b"@example.org'):
            bad = _forgot(client, bad_address)
            assert bad.status_code == 400 and "does not look right" in bad.text


def test_address_limit_is_its_own(tmp_path: Path) -> None:
    with (
        smtp_server() as inbox,
        _mail_client(tmp_path, inbox, mail_per_address_per_hour=1, mail_per_ip_per_hour=100) as c,
    ):
        assert _forgot(c, "a@example.org").status_code == 200
        assert _forgot(c, "A@example.org ").status_code == 429  # the same address, folded
        assert _forgot(c, "b@example.org").status_code == 200


def test_without_smtp_the_reset_is_hidden_and_the_cli_is_the_way(tmp_path: Path) -> None:
    with app_client(tmp_path) as client:
        assert "forgot-password" not in client.get("/login").text
        page = client.get("/forgot-password")
        assert page.status_code == 404 and "shapefarm admin reset-password" in page.text
        assert client.get("/reset-password?token=sfr.a.b").status_code == 404
        register(client, "alice")
        profile = client.get("/profile").text
        assert "This farm sends no e-mail" in profile
        assert 'action="/profile/email"' not in profile


def test_profile_address_change_is_used_only_once_proven(tmp_path: Path) -> None:
    with smtp_server() as inbox, _mail_client(tmp_path, inbox) as client:
        register(client, "alice")
        _prove(client, "alice", ADDRESS)
        token = csrf(client, "/profile")
        wrong = client.post(
            "/profile/email",
            data={"csrf_token": token, "email": "new@example.org", "password": "nope"},
        )
        assert wrong.headers["location"] == "/profile?mail=password#mail"
        for bad_address in ("x@", "victim,x@evil.example", "a<b@example.org"):
            bad = client.post(
                "/profile/email",
                data={"csrf_token": token, "email": bad_address, "password": PASSWORD},
            )
            assert bad.headers["location"] == "/profile?mail=address#mail"
        same = client.post(
            "/profile/email", data={"csrf_token": token, "email": ADDRESS, "password": PASSWORD}
        )
        assert same.headers["location"] == "/profile?mail=same#mail"

        _forgot(client, ADDRESS)
        old_reset = inbox.wait().link()
        sent = client.post(
            "/profile/email",
            data={"csrf_token": token, "email": "New@Example.org", "password": PASSWORD},
        )
        assert sent.headers["location"] == "/profile?mail=sent#mail"
        assert "a confirmation link is on its way" in client.get("/profile?mail=sent").text
        mail = inbox.wait()
        assert mail.envelope_to == ["new@example.org"]
        assert "confirmed" in client.get("/profile").text and ADDRESS in client.get("/profile").text

        link = mail.link()
        page = client.get(link)
        assert "new@example.org" in page.text and "alice" in page.text
        token_value = link.partition("token=")[2]
        done = client.post("/verify-email", data={"csrf_token": token, "token": token_value})
        assert done.status_code == 200
        assert "Your address: new@example.org (confirmed)" in client.get("/profile").text
        again = client.post("/verify-email", data={"csrf_token": token, "token": token_value})
        assert again.status_code == 400
        # The reset link went to the old address, which no longer speaks for the account.
        assert _reset(client, old_reset).status_code == 400
        assert password_ok(client, "alice")


def test_a_proven_address_wins_over_an_unproven_claim(tmp_path: Path) -> None:
    with smtp_server() as inbox, _mail_client(tmp_path, inbox) as client:
        client.post(
            "/register",
            data={
                "csrf_token": csrf(client, "/register"),
                "username": "squatter",
                "email": "bob@example.org",
                "password": PASSWORD,
                "password2": PASSWORD,
            },
        )
        assert inbox.wait().envelope_to == ["bob@example.org"]
        client.cookies.clear()
        register(client, "bob")
        token = csrf(client, "/profile")
        client.post(
            "/profile/email",
            data={"csrf_token": token, "email": "bob@example.org", "password": PASSWORD},
        )
        link = inbox.wait().link()
        done = client.post(
            "/verify-email", data={"csrf_token": token, "token": link.partition("token=")[2]}
        )
        assert done.status_code == 200

        async def addresses() -> dict[str, tuple[str | None, bool]]:
            async with farm(client).sessions() as db:
                rows = await db.execute(
                    select(models.User.username, models.User.email, models.User.email_verified_at)
                )
                return {name: (email, at is not None) for name, email, at in rows}

        assert run(client, addresses) == {
            "squatter": (None, False),
            "bob": ("bob@example.org", True),
        }


def test_finished_job_mail_setting_needs_a_proven_address(tmp_path: Path) -> None:
    with smtp_server() as inbox, _mail_client(tmp_path, inbox) as client:
        register(client, "alice")
        token = csrf(client, "/profile")
        on_form = {"csrf_token": token, "notify_email": "on"}
        refused = client.post("/profile/notifications", data=on_form)
        assert refused.headers["location"] == "/profile?mail=unverified#mail"
        _prove(client, "alice", ADDRESS)
        on = client.post("/profile/notifications", data=on_form)
        assert on.headers["location"] == "/profile?mail=notify-on#mail"
        assert (
            'id="notify-email" name="notify_email" type="checkbox" checked'
            in client.get("/profile").text
        )
        off = client.post("/profile/notifications", data={"csrf_token": token})
        assert off.headers["location"] == "/profile?mail=notify-off#mail"
        assert 'type="checkbox" checked' not in client.get("/profile").text


def test_verification_mail_speaks_the_language_of_the_page(tmp_path: Path) -> None:
    with smtp_server() as inbox, _mail_client(tmp_path, inbox) as client:
        client.headers["Accept-Language"] = "ru-RU,ru;q=0.9"
        response = client.post(
            "/register",
            data={
                "csrf_token": csrf(client, "/register"),
                "username": "olga",
                "email": "olga@example.org",
                "password": PASSWORD,
                "password2": PASSWORD,
            },
        )
        assert response.status_code == 303
        mail = inbox.wait()
        assert mail.message["Subject"] == "Подтвердите адрес электронной почты для shapefarm"
        assert "Здравствуйте, olga!" in mail.text and "Подтвердить адрес" in mail.html
