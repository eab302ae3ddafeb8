"""The usage ledger: one row per model request (every endpoint), written in batches off the request path."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, Literal

from kathan.outage import Outage
from kathan.store.journal import Journal

logger = logging.getLogger(__name__)

Status = Literal["succeeded", "failed", "cancelled", "rate_limited"]


@dataclass(frozen=True, slots=True)
class UsageRow:
    """What one request used, through which endpoint, and how it ended (the ``usage`` table's columns)."""

    id: str
    created_at: datetime
    account_id: str | None
    key_id: str | None
    key_prefix: str | None
    model: str
    status: Status
    http_status: int
    streamed: bool
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float | None = None
    latency_ms: float = 0.0
    finish_reason: str | None = None
    error_code: str | None = None
    endpoint: str = "chat/completions"  # the API: its path after /v1/

    def as_record(self) -> dict[str, Any]:
        # Flat fields only, so a shallow copy (asdict deep-copies, which is slow).
        record = {name: getattr(self, name) for name in _FIELDS}
        created = self.created_at.astimezone(UTC)
        record["day"] = f"{created.year:04d}-{created.month:02d}-{created.day:02d}"
        return record


_FIELDS = tuple(f.name for f in fields(UsageRow))

Writer = Callable[[Sequence[Mapping[str, Any]]], Awaitable[None]]


class UsageLedger:
    """Buffers rows and writes them together, at most ``flush_seconds`` after they arrive.

    ``record`` never waits for the database. Rows are written idempotently
    (by request id), so a batch that failed is simply tried again. ``close``
    writes everything still buffered; a graceful shutdown loses nothing. With a
    ``journal`` (``store/journal.py``), each row is also appended to a file as it
    is recorded, so a killed process loses none: ``recover`` stores what a
    process that died left there.
    The background writer runs from ``start()`` (on a running event loop) until
    ``await close()``.
    """

    def __init__(
        self,
        write: Writer,
        *,
        flush_seconds: float = 0.25,
        max_batch: int = 10_000,
        wake_rows: int = 500,
        max_pending: int = 500_000,
        journal: Journal | None = None,
    ) -> None:
        self._write = write
        self._journal = journal
        self._flush_seconds = flush_seconds
        self._max_batch = max_batch
        self._wake_rows = wake_rows
        self._rows: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._max_pending = max_pending
        self._closing = False
        self.written = 0
        self.dropped = 0
        kept = "in memory and in the journal" if journal is not None else "in memory"
        self._outage = Outage(
            "the usage store", f"Usage rows are kept ({kept}) and written once it is back.",
            logger)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="kathan-ledger")

    def record(self, row: UsageRow) -> None:
        if len(self._rows) >= self._max_pending:
            # The store has been unreachable for long: keep memory bounded, say so loudly.
            self.dropped += 1
            if self.dropped % 10_000 == 1:
                logger.error("usage ledger buffer full (%d rows): dropped %d rows so far",
                             len(self._rows), self.dropped)
            return
        record = row.as_record()
        if self._journal is not None:
            self._journal.append(record)  # before the request's answer goes out
        self._rows.append(record)
        if len(self._rows) >= self._wake_rows:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._rows)

    async def _run(self) -> None:
        while not self._closing:
            try:
                await asyncio.wait_for(self._wake.wait(), self._flush_seconds)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    async def flush(self) -> bool:
        """Write what is buffered now; on failure keep it for the next try. True when all
        of it was written.

        Rows that arrive while a batch is being written wait for the next flush:
        chasing them would turn a busy server's ledger into a stream of tiny
        transactions, each with the full cost of a commit.
        """
        remaining = len(self._rows)
        if remaining and self._journal is not None:
            self._journal.rotate()  # rows from now on go to a new segment
        while remaining > 0:
            batch = self._rows[: min(self._max_batch, remaining)]
            try:
                await self._write(batch)
            except Exception as exc:  # noqa: BLE001 - kept and retried, whatever the cause
                self._outage.failed(exc)
                return False
            self._outage.succeeded()
            del self._rows[: len(batch)]
            self.written += len(batch)
            remaining -= len(batch)
        if self._journal is not None:
            self._journal.drop()  # every row of the rotated segments is stored
        return True

    async def recover(self) -> int:
        """Store the rows that processes killed before their flush left in the journal;
        how many there were. Run before ``start``."""
        if self._journal is None:
            return 0
        rows, segments = self._journal.recover()
        for start in range(0, len(rows), self._max_batch):
            await self._write(rows[start:start + self._max_batch])
        self._journal.forget(segments)
        if rows:
            logger.warning("stored %d usage rows left in the journal by a stopped process",
                           len(rows))
        return len(rows)

    async def close(self, *, attempts: int = 5) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        failures = 0
        while self._rows and failures < attempts:
            # Requests still finishing may add rows while a batch is written.
            if not await self.flush():
                failures += 1
                await asyncio.sleep(0.2 * failures)
        if not self._rows:
            if self._journal is not None:
                self._journal.close()
            return
        # The journal keeps them: the next start stores them.
        logger.error("%d usage rows could not be written at shutdown", len(self._rows))
