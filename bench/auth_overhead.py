"""What stored keys, rate limits and the usage ledger add to a request's latency.

Two measurements, printed side by side:

1. End to end: two Kathan servers, one with accounts on (a stored key with
   RPM, TPM, concurrency and a daily quota set, the ledger writing every
   request) and one with accounts off (a static key, nothing limited or
   recorded). Requests alternate between them (paired, so both see the same
   machine noise): non-streaming, ``max_tokens: 1``, the same prompt.
2. In process, without the model: the hot path alone (token check, limits
   acquire and release, the ledger row) timed per request, and the number of
   database statements it issues for a known key.

    python -m bench.auth_overhead [--requests 400] [--redis redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.common import KEY, pct, start_kathan

MESSAGES = [{"role": "user", "content": "Say hi."}]


def _limits() -> dict[str, Any]:
    return {"rpm": 1_000_000, "tpm": 2_000_000_000, "max_concurrent": 64,
            "quota_tokens": 2_000_000_000, "quota_period": "day"}


def end_to_end(requests: int, redis_url: str | None) -> None:
    env = {"KATHAN_REDIS_URL": redis_url} if redis_url else {}
    on = start_kathan(512, 2, env=env)
    off = start_kathan(512, 2, env={"KATHAN_ACCOUNTS": "false"})
    try:
        with httpx.Client(timeout=60) as admin:
            auth = {"Authorization": f"Bearer {KEY}"}
            account = admin.post(f"{on.url}/admin/accounts", headers=auth,
                                 json={"name": "bench"}).json()
            stored = admin.post(f"{on.url}/admin/keys", headers=auth, json={
                "account_id": account["id"], "name": "bench", "limits": _limits()}).json()["key"]
        latencies: dict[str, list[float]] = {"accounts on": [], "accounts off": []}
        targets = [("accounts on", on.url, stored), ("accounts off", off.url, KEY)]
        with httpx.Client(timeout=60) as client:
            for i in range(requests + 20):
                for name, url, key in targets if i % 2 else reversed(targets):
                    start = time.perf_counter()
                    r = client.post(f"{url}/v1/chat/completions",
                                    headers={"Authorization": f"Bearer {key}"},
                                    json={"model": "default", "messages": MESSAGES,
                                          "max_tokens": 1, "temperature": 0})
                    elapsed = (time.perf_counter() - start) * 1000
                    if r.status_code != 200:
                        raise RuntimeError(f"{name}: HTTP {r.status_code} {r.text[:200]}")
                    if i >= 20:  # warm-up
                        latencies[name].append(elapsed)
    finally:
        on.stop()
        off.stop()
    limiter = "Redis" if redis_url else "in-process"
    print(f"end to end, {requests} paired requests (max_tokens 1), limits {limiter}")
    print(f"{'server':<14} {'p50 ms':>8} {'p99 ms':>8}")
    for name, values in latencies.items():
        print(f"{name:<14} {pct(values, 50):8.2f} {pct(values, 99):8.2f}")
    a, b = latencies["accounts on"], latencies["accounts off"]
    paired = sorted(x - y for x, y in zip(a, b, strict=True))
    print(f"added p50 {pct(a, 50) - pct(b, 50):+.2f} ms, p99 {pct(a, 99) - pct(b, 99):+.2f} ms; "
          f"median of paired differences {statistics.median(paired):+.2f} ms")


async def hot_path(iterations: int, redis_url: str | None) -> None:
    from sqlalchemy import event

    from kathan.auth.authenticator import Authenticator
    from kathan.limits import make_limiter
    from kathan.limits.base import Limits
    from kathan.service.metering import Metering
    from kathan.store import repo
    from kathan.store.db import Database
    from kathan.store.ledger import UsageLedger

    folder = Path(tempfile.mkdtemp())
    db = Database(f"sqlite+aiosqlite:///{folder / 'bench.db'}")
    await db.upgrade()
    async with db.session() as s:
        account = await repo.create_account(s, name="bench")
        token, _ = await repo.create_key(s, account_id=account.id, name="bench",
                                         limits=Limits(**_limits()))
        await s.commit()
    statements = {"n": 0}

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):  # lookups, not ledger writes
            statements["n"] += 1

    event.listen(db.engine.sync_engine, "before_cursor_execute", count)

    async def write(rows: Any) -> None:
        async with db.session() as s:
            await repo.insert_usage(s, rows)
            await s.commit()

    ledger = UsageLedger(write, flush_seconds=0.25)
    ledger.start()
    limiter = make_limiter(redis_url)
    metering = Metering(limiter, ledger, None)
    auth = Authenticator(db=db, cache_seconds=3600)
    await auth.verify(token)  # the one lookup of a key this replica has not seen
    timings: list[float] = []
    before = statements["n"]
    for _ in range(iterations):
        start = time.perf_counter()
        principal = await auth.verify(token)
        assert principal is not None
        meter = metering.begin(principal, request_id=uuid.uuid4().hex, streamed=False)
        await meter.admit("smollm2-135m-instruct")
        await meter.finish("succeeded", prompt_tokens=20, completion_tokens=1, ttft=0.01,
                           finish_reason="length")
        timings.append((time.perf_counter() - start) * 1e6)
        await metering.drain()  # the lease goes back off the request path; keep them apart
    on_path = statements["n"] - before
    flush_start = time.perf_counter()
    await ledger.close()  # the batched writes, which a server does off the request path
    flush_us = (time.perf_counter() - flush_start) * 1e6 / max(1, ledger.written)
    await limiter.close()
    await db.dispose()
    print(f"hot path in process, {iterations} requests, limits "
          f"{'Redis' if redis_url else 'in-process'}: p50 {pct(timings, 50):.1f} us, "
          f"p99 {pct(timings, 99):.1f} us")
    print(f"database lookups (SELECT) during the loop: {on_path} for {iterations} requests")
    print(f"ledger: {ledger.written} rows written in batches of up to 500, "
          f"{flush_us:.1f} us per row, in a background task")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--redis", default=None, help="Use Redis for the limits.")
    args = parser.parse_args()
    asyncio.run(hot_path(args.iterations, args.redis))
    end_to_end(args.requests, args.redis)


if __name__ == "__main__":
    main()
