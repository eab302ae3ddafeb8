"""Random ids for requests and leases: 128 random bits as 32 hex digits, like
``uuid.uuid4().hex`` but without building a UUID object (a quarter of the cost,
on every request)."""

from __future__ import annotations

import os


def random_id() -> str:
    return os.urandom(16).hex()
