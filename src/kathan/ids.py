"""Random ids for requests and leases: 128 random bits as 32 hex digits.

From ``random`` (Mersenne Twister, seeded from the OS at start and again in a
forked child), not ``os.urandom`` as ``uuid.uuid4`` does: these ids need to
be unique, not secret, and ``os.urandom`` gives the GIL away for its system
call, which under load can make the request wait for another thread's turn.
"""

from __future__ import annotations

import random


def random_id() -> str:
    return f"{random.getrandbits(128):032x}"
