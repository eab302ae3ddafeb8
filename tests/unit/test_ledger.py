"""The usage ledger's batching, with a fake writer at its seam."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kathan.store.journal import Journal
from kathan.store.ledger import UsageLedger, UsageRow


def _row(n: int) -> UsageRow:
    return UsageRow(id=f"req-{n}", created_at=datetime(2026, 1, 2, tzinfo=UTC), account_id=None,
                    key_id=None, key_prefix=None, model="m", status="succeeded",
                    http_status=200, streamed=False)


class Writer:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.fail = 0
        self.during: list[UsageRow] = []  # recorded while a batch is being written
        self.ledger: UsageLedger | None = None

    async def __call__(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if self.fail:
            self.fail -= 1
            raise OSError("store down")
        self.batches.append([r["id"] for r in rows])
        assert self.ledger is not None
        while self.during:
            self.ledger.record(self.during.pop(0))


async def test_rows_arriving_during_a_write_wait_for_the_next_flush() -> None:
    writer = Writer()
    ledger = writer.ledger = UsageLedger(writer, max_batch=2)
    for n in range(3):
        ledger.record(_row(n))
    writer.during = [_row(10), _row(11)]
    assert await ledger.flush()
    # The three rows buffered when the flush began, in batches of two; not the newcomers.
    assert writer.batches == [["req-0", "req-1"], ["req-2"]]
    assert ledger.pending == 2
    assert await ledger.flush()
    assert writer.batches[-1] == ["req-10", "req-11"]
    assert ledger.pending == 0 and ledger.written == 5


async def test_a_failed_write_keeps_its_rows_for_the_next_try() -> None:
    writer = Writer()
    ledger = writer.ledger = UsageLedger(writer)
    ledger.record(_row(1))
    writer.fail = 1
    assert not await ledger.flush()
    assert ledger.pending == 1
    assert await ledger.flush()
    assert writer.batches == [["req-1"]]


async def test_close_writes_everything_including_rows_that_arrive_meanwhile() -> None:
    writer = Writer()
    ledger = writer.ledger = UsageLedger(writer, flush_seconds=60)
    ledger.start()
    ledger.record(_row(1))
    writer.during = [_row(2)]
    writer.fail = 1
    await ledger.close()
    assert [i for batch in writer.batches for i in batch] == ["req-1", "req-2"]
    assert ledger.pending == 0


class Store:
    """A writer that keeps whole rows; ``down`` makes it fail."""

    def __init__(self) -> None:
        self.rows: list[Mapping[str, Any]] = []
        self.down = False

    async def __call__(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if self.down:
            raise OSError("store down")
        self.rows.extend(rows)


async def test_the_journal_keeps_what_a_killed_process_had_not_stored(tmp_path: Path) -> None:
    dead = UsageLedger(Store(), journal=Journal(tmp_path))
    for n in range(3):
        dead.record(_row(n))
    assert await dead.flush()
    for n in range(3, 5):
        dead.record(_row(n))  # recorded, never flushed: the process is "killed" here
    # A live process's segment is locked: a process starting meanwhile leaves it alone.
    meanwhile = Journal(tmp_path)
    assert meanwhile.recover()[0] == []
    meanwhile.close()
    os.close(dead._journal._fd)  # type: ignore[union-attr]  # what the kill does to its lock
    store = Store()
    revived = UsageLedger(store, journal=Journal(tmp_path))
    assert await revived.recover() == 2
    assert [r["id"] for r in store.rows] == ["req-3", "req-4"]
    assert store.rows[0]["created_at"] == _row(3).created_at
    await revived.close()
    assert not list(tmp_path.glob("*.jsonl"))  # recovered and closed: nothing left


async def test_a_flushed_segment_is_dropped_and_a_failed_flush_keeps_it(tmp_path: Path) -> None:
    store = Store()
    ledger = UsageLedger(store, journal=Journal(tmp_path))
    ledger.record(_row(1))
    store.down = True
    assert not await ledger.flush()
    assert len(list(tmp_path.glob("*.jsonl"))) == 2  # the rotated one waits, and the new one
    store.down = False
    assert await ledger.flush()
    assert len(list(tmp_path.glob("*.jsonl"))) == 1  # only the current segment
    await ledger.close()
    assert not list(tmp_path.glob("*.jsonl"))


async def test_a_store_outage_is_one_line_when_it_begins_and_one_when_it_ends(
        caplog: pytest.LogCaptureFixture) -> None:
    writer = Writer()
    ledger = writer.ledger = UsageLedger(writer)
    ledger.record(_row(1))
    writer.fail = 5
    with caplog.at_level(logging.WARNING, logger="kathan.store.ledger"):
        for _ in range(5):
            assert not await ledger.flush()
        assert await ledger.flush()
        assert await ledger.flush()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("the usage store unreachable (OSError: store down)")
    assert "kept (in memory) and written once it is back" in lines[0]
    assert lines[1].startswith("the usage store reachable again after")
    assert "(5 failed calls)" in lines[1]
