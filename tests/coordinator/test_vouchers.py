"""Vouchers: admin creation (console and CLI), redemption on the profile, bad codes,
throttling, and concurrent redemptions over real sockets."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from coordinator.cli.main import main
from coordinator.services import vouchers
from coordinator.settings import Settings
from coordinator.store import models
from tests.support.billing import DAY, billing_client, new_voucher, redeem_at_once
from tests.support.coordinators import make_settings, running_coordinator
from tests.support.sockclient import Browser
from tests.support.ui import farm, make_admin, run, user_id
from tests.support.webclient import csrf, register

NEW_CODE = re.compile(r'id="new-code">([^<]+)<')


def create_code(client: TestClient, **spec: Any) -> str:
    spec = {"tier": "plus", "days": 30.0, **spec}

    async def make() -> str:
        async with farm(client).sessions() as db:
            _, code = await vouchers.create(
                db, farm(client).tiers, vouchers.NewVoucher(**spec), None, farm(client).clock()
            )
            return code

    return run(client, make)


def redeem(client: TestClient, code: str) -> Any:
    return client.post(
        "/profile/voucher", data={"csrf_token": csrf(client, "/profile"), "code": code}
    )


async def counts(settings: Settings) -> tuple[int, int]:
    """(uses taken, redemption rows) of every voucher, read straight from the database."""
    from coordinator.store.db import make_engine, make_sessionmaker

    engine = make_engine(settings.db_url)
    try:
        async with make_sessionmaker(engine)() as db:
            uses = await db.scalar(select(func.sum(models.Voucher.uses)))
            rows = await db.scalar(select(func.count()).select_from(models.VoucherRedemption))
            return int(uses or 0), int(rows or 0)
    finally:
        await engine.dispose()


def test_vouchers_admin_creates_and_user_redeems(tmp_path: Path) -> None:
    with billing_client(tmp_path, provider=False) as (client, clock, _):
        register(client, "root")
        make_admin(client, "root")
        response = client.post(
            "/admin/vouchers",
            data={
                "csrf_token": csrf(client, "/admin/vouchers"),
                "tier": "pro",
                "days": "14",
                "uses": "2",
                "valid_days": "30",
                "note": "for the beta testers",
            },
        )
        assert response.status_code == 201 and response.headers["cache-control"] == "no-store"
        match = NEW_CODE.search(response.text)
        assert match
        code = match.group(1)
        listing = client.get("/admin/vouchers").text
        assert code not in listing and f"…{code[-4:]}" in listing  # shown once, then a hint
        assert "0 / 2" in listing and "for the beta testers" in listing

        async def stored() -> list[str]:
            async with farm(client).sessions() as db:
                return list(await db.scalars(select(models.Voucher.code_hash)))

        assert run(client, stored) == [vouchers.code_hash(code)]  # only the hash is kept
        client.cookies.clear()
        register(client, "alice")
        page = redeem(client, code.lower().replace("-", " "))  # typed loosely
        assert page.status_code == 200 and 'id="voucher-ok"' in page.text
        assert "<strong>Pro</strong>" in page.text
        uid = user_id(client, "alice")
        assert farm(client).users[str(uid)].tier == "pro"
        again = redeem(client, code)
        assert again.status_code == 400 and "already used this code" in again.text
        audit = client.get("/plans")  # the plans page knows too
        assert "Your plan" in audit.text.split('data-plan="pro"')[1].split("</article>")[0]
        # Two weeks later it has run out.
        clock.now += 14 * DAY
        from coordinator.services import subscriptions

        run(client, lambda: subscriptions.sweep(farm(client)))
        assert "<strong>Free</strong>" in client.get("/profile").text


def test_vouchers_bad_codes_give_clear_messages(tmp_path: Path) -> None:
    with billing_client(tmp_path, provider=False) as (client, clock, _):
        expiring = create_code(client, valid_days=1.0)
        used = create_code(client)
        revoked = create_code(client)

        async def revoke() -> None:
            async with farm(client).sessions() as db:
                voucher = await db.scalar(
                    select(models.Voucher).where(
                        models.Voucher.code_hash == vouchers.code_hash(revoked)
                    )
                )
                assert voucher is not None
                voucher.revoked = True
                await db.commit()

        run(client, revoke)
        register(client, "bob")
        assert redeem(client, used).status_code == 200
        client.cookies.clear()
        register(client, "alice")
        clock.now += 2 * DAY
        for code, message in (
            ("", "not valid"),
            ("NOPE-NOPE-NOPE-NOPE", "not valid"),
            ("X" * 65, "not valid"),
            (revoked, "not valid"),
            (expiring, "has expired"),
            (used, "used up"),
        ):
            response = redeem(client, code)
            assert response.status_code == 400, code
            assert message in response.text, code
        assert "<strong>Free</strong>" in client.get("/profile").text


def test_vouchers_a_different_running_plan_is_not_overwritten(tmp_path: Path) -> None:
    with billing_client(tmp_path, provider=False) as (client, _, _):
        register(client, "alice")
        assert redeem(client, create_code(client, tier="pro")).status_code == 200
        response = redeem(client, create_code(client, tier="plus"))
        assert response.status_code == 400 and "Pro plan still runs" in response.text
        # The same tier adds its days.
        assert redeem(client, create_code(client, tier="pro", days=10.0)).status_code == 200
        assert "<strong>Pro</strong>" in client.get("/profile").text


def test_vouchers_guessing_is_throttled(tmp_path: Path) -> None:
    with billing_client(tmp_path, provider=False, voucher_attempts_per_hour=3) as (
        client,
        _,
        _,
    ):
        register(client, "alice")
        good = create_code(client)
        for _ in range(3):
            assert redeem(client, "AAAA-BBBB-CCCC-DDDD").status_code == 400
        blocked = redeem(client, good)
        assert blocked.status_code == 429 and "Too many codes" in blocked.text
        assert "<strong>Free</strong>" in client.get("/profile").text


def test_vouchers_admin_form_refuses_bad_input(tmp_path: Path) -> None:
    with billing_client(tmp_path, provider=False) as (client, _, _):
        register(client, "root")
        make_admin(client, "root")
        for data, message in (
            ({"tier": "gold", "days": "3"}, "Unknown tier"),
            ({"tier": "free", "days": "3"}, "free tier"),
            ({"tier": "plus", "days": "0"}, "Days must be"),
            ({"tier": "plus", "days": "nan"}, "must be a number"),
            ({"tier": "plus", "days": "3", "uses": "1.5"}, "Uses must be"),
            ({"tier": "plus", "days": "3", "uses": "0"}, "Uses must be"),
            ({"tier": "plus", "days": "3", "valid_days": "-1"}, "Valid days"),
            ({"tier": "plus", "days": "3", "note": "n" * 201}, "note"),
        ):
            response = client.post(
                "/admin/vouchers", data={"csrf_token": csrf(client, "/admin/vouchers"), **data}
            )
            assert response.status_code == 400, data
            assert message in response.text, data
        client.cookies.clear()
        register(client, "alice")
        assert client.get("/admin/vouchers").status_code == 403


def test_vouchers_cli_creates_a_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    assert main(["admin", *data, "create-voucher", "pro", "--days", "7", "--uses", "3"]) == 0
    code = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(r"[A-Z2-9]{4}(-[A-Z2-9]{4}){3}", code)
    assert main(["admin", *data, "create-voucher", "gold", "--days", "7"]) == 1
    assert "Unknown tier" in capsys.readouterr().err
    assert main(["admin", *data, "create-voucher", "pro", "--days", "-1"]) == 1


async def test_vouchers_concurrent_redemptions_of_a_one_use_code_succeed_once(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path / "data", auth_rate_per_minute=1000)
    async with running_coordinator(settings) as coordinator:
        code = await new_voucher(coordinator, "plus")
        answers = await redeem_at_once(coordinator, code, 8)
        assert sorted(answer.status_code for answer in answers) == [200] + [400] * 7
        assert all("used up" in a.text for a in answers if a.status_code == 400)
    assert await counts(settings) == (1, 1)


async def test_vouchers_one_user_twice_at_once_redeems_once(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    async with running_coordinator(settings) as coordinator:
        code = await new_voucher(coordinator, "plus", uses=5)
        async with Browser(coordinator) as browser:
            await browser.register("alice")
            token = await browser.csrf("/profile")
            answers = await asyncio.gather(
                *(
                    browser.http.post("/profile/voucher", data={"csrf_token": token, "code": code})
                    for _ in range(4)
                )
            )
        assert sorted(a.status_code for a in answers) == [200, 400, 400, 400]
    assert await counts(settings) == (1, 1)


def test_vouchers_admin_revokes_a_code(tmp_path: Path) -> None:
    with billing_client(tmp_path, provider=False) as (client, _, _):
        register(client, "root")
        make_admin(client, "root")
        code = create_code(client)

        async def voucher_id() -> int:
            async with farm(client).sessions() as db:
                found = await db.scalar(select(models.Voucher.id))
                assert found is not None
                return int(found)

        vid = run(client, voucher_id)
        token = csrf(client, "/admin/vouchers")
        revoked = client.post(f"/admin/vouchers/{vid}/revoke", data={"csrf_token": token})
        assert revoked.status_code == 303
        again = client.post(f"/admin/vouchers/{vid}/revoke", data={"csrf_token": token})
        assert again.status_code == 409
        assert "revoked" in client.get("/admin/vouchers").text

        async def actions() -> list[str]:
            async with farm(client).sessions() as db:
                return list(await db.scalars(select(models.AuditEntry.action)))

        assert "voucher.revoke" in run(client, actions)
        client.cookies.clear()
        register(client, "alice")
        response = redeem(client, code)
        assert response.status_code == 400 and "not valid" in response.text
