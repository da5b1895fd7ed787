"""What one claim of the webhook outbox costs with a backlog waiting.

    python -m bench.outbox --rows 10000 --keys 100 --busy 4
    python -m bench.outbox --rows 10000 --root /tmp/sf-before   # another tree's query

A migrated SQLite database gets ``--rows`` deliveries spread over ``--keys`` API keys,
``--busy`` of those keys with an attempt in flight; then the claim a sender pump makes
(``coordinator.services.outbox.claim_due`` with the webhook outbox's due query, four
free senders) runs ``--repeat`` times in one transaction, as the Writer runs it on the
event loop. Prints the median and the slowest, and with ``--write-docs`` keeps them in
docs/benchmarks.md ("Webhook outbox").
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import machine, write_section

SECTION = "Webhook outbox"


def _rows(rows: int, keys: int, busy: int) -> tuple[list[dict[str, Any]], ...]:
    key_rows = [
        {"id": f"k{k:04d}", "user_id": 1, "name": "n", "key_hash": "h", "created_at": 0.0,
         "webhook_url": "http://x/", "webhook_secret": "s"}
        for k in range(keys)
    ]  # fmt: skip
    jobs = [
        {"id": f"j{i:07d}", "user_id": 1, "prompt": "p", "seed": 1, "guidance": 15.0,
         "steps": 8, "state": "succeeded", "attempt": 1, "attempt_base": 0, "created_at": 0.0,
         "enqueued_at": 0.0, "model": "shap-e", "kind": "text", "public": False,
         "hidden": False}
        for i in range(rows)
    ]  # fmt: skip
    waiting = [
        {"job_id": f"j{i:07d}", "api_key_id": f"k{i % keys:04d}", "url": "http://x/",
         "per_job": False, "delivery_id": f"d{i}", "body": "{}", "attempts": 0,
         "created_at": float(i), "next_at": float(i), "claim": "elsewhere" if i < busy else None,
         "claimed_until": 1e12 if i < busy else 0.0}
        for i in range(rows)
    ]  # fmt: skip
    return key_rows, jobs, waiting


def measure(rows: int, keys: int, busy: int, repeat: int) -> list[float]:
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from coordinator.services import api_webhooks, outbox
    from coordinator.store import models
    from coordinator.store.migrations import upgrade

    folder = Path(tempfile.mkdtemp(prefix="shapefarm-outbox-"))
    asyncio.run(upgrade(f"sqlite+aiosqlite:///{folder}/bench.db"))
    engine = create_engine(f"sqlite:///{folder}/bench.db")
    key_rows, jobs, waiting = _rows(rows, keys, busy)
    with Session(engine) as db:
        db.add(models.User(id=1, username="bench", password_hash="x", created_at=0.0))
        db.flush()
        db.execute(models.ApiKey.__table__.insert(), key_rows)
        db.execute(models.Job.__table__.insert(), jobs)
        db.execute(models.WebhookOutbox.__table__.insert(), waiting)
        db.commit()
    times: list[float] = []
    with engine.begin() as conn:
        for i in range(repeat):
            claim = conn.begin_nested()  # each claim sees the same backlog
            started = time.perf_counter()
            taken, _ = outbox.claim_due(
                conn, api_webhooks._DUE, api_webhooks.ROWS, 1e9, f"c{i}", 4, 60.0
            )
            times.append(time.perf_counter() - started)
            claim.rollback()
            if len(taken) != 4:
                raise RuntimeError(f"a claim took {len(taken)} rows, not 4")
    engine.dispose()
    return times


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--busy", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--root", type=Path, help="import the coordinator from this tree")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    if not 0 <= args.busy <= args.keys - 4 or args.keys > args.rows or args.repeat < 1:
        parser.error(
            "need 0 <= --busy <= --keys - 4 (four senders), --keys <= --rows, --repeat >= 1"
        )
    if args.root is not None:
        sys.path.insert(0, str(args.root))
    times = measure(args.rows, args.keys, args.busy, args.repeat)
    median, worst = statistics.median(times) * 1000, max(times) * 1000
    line = f"| {args.rows:,} | {args.keys} | {args.busy} | {median:.2f} ms | {worst:.2f} ms |"
    print(line)
    if args.write_docs:
        body = (
            f"Command: `python -m bench.outbox --rows {args.rows} --keys {args.keys} "
            f"--busy {args.busy}` ({machine()}).\n\n"
            "One claim of four senders' work from the webhook outbox (the query that takes "
            "the earliest due row of each key with no attempt in flight), run on the "
            "event loop by the Writer.\n\n"
            "| rows waiting | keys | keys busy | median | slowest |\n"
            "|---:|---:|---:|---:|---:|\n" + line + "\n"
        )
        write_section(SECTION, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
