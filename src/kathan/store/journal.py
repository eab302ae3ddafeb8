"""``Journal``: the usage ledger's write-ahead file, so that a killed process loses no row.

Each row the ledger records is appended to this process's current segment file
(``usage-*.jsonl`` in the data directory) with one ``write`` before the request's
answer goes out. A process that is killed (``kill -9``, a crash) leaves its
rows in the kernel's page cache, hence in the file; only the machine losing
power within the kernel's write-back delay loses them, since nothing is
``fsync``-ed (that would put a disk flush on every request).

The ledger ``rotate``s before it writes a batch to the database and ``drop``s
the segments whose rows are all stored. At start-up ``recover`` reads the
segments left by processes that are gone (a live process holds an exclusive
``flock`` on its current segment) and the ledger stores their rows; the
store's inserts skip ids it has, so a row in a segment and the database is
written once.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic_core import to_json

logger = logging.getLogger(__name__)

PATTERN = "usage-*.jsonl"


class Journal:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._closed_segments: list[Path] = []
        self._path, self._fd = self._open()

    def _open(self) -> tuple[Path, int]:
        path = self.directory / f"usage-{os.getpid()}-{secrets.token_hex(4)}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours while this process lives
        return path, fd

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one row to the current segment (one system call, no fsync)."""
        os.write(self._fd, to_json(record) + b"\n")  # datetimes as ISO 8601

    def rotate(self) -> None:
        """Start a new segment; the current one waits for ``drop``."""
        old_path, old_fd = self._path, self._fd
        self._path, self._fd = self._open()
        os.close(old_fd)
        self._closed_segments.append(old_path)

    def drop(self) -> None:
        """Delete the segments rotated out so far: their rows are stored."""
        for path in self._closed_segments:
            path.unlink(missing_ok=True)
        self._closed_segments.clear()

    def close(self) -> None:
        """At a graceful stop, after every row was stored: nothing is left to keep."""
        os.close(self._fd)
        self._closed_segments.append(self._path)
        self.drop()

    def recover(self) -> tuple[list[dict[str, Any]], list[Path]]:
        """The rows in segments of processes that are gone, and those segments (delete
        them with ``forget`` once the rows are stored)."""
        rows: list[dict[str, Any]] = []
        found: list[Path] = []
        for path in sorted(self.directory.glob(PATTERN)):
            if path == self._path:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # its owner dropped it meanwhile
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live process writes it
                with os.fdopen(os.dup(fd), "rb") as segment:
                    data = segment.read()
            finally:
                os.close(fd)
            for line in data.splitlines():
                try:
                    rows.append(_decode(json.loads(line)))
                except ValueError:
                    # A line cut by the kill (its row's request was never answered).
                    logger.warning("skipping a partial line in %s", path.name)
            found.append(path)
        return rows, found

    @staticmethod
    def forget(paths: list[Path]) -> None:
        for path in paths:
            path.unlink(missing_ok=True)


def _decode(record: dict[str, Any]) -> dict[str, Any]:
    record["created_at"] = datetime.fromisoformat(record["created_at"])
    return record
