"""The key-verification seam and its static implementation.

Keys are compared in constant time, and only their SHA-256 digests are kept
in memory after start-up.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from typing import Protocol


class KeyVerifier(Protocol):
    """Decides whether a bearer token is a valid API key.

    >>> await verifier.verify("sk-...")
    True
    """

    async def verify(self, key: str) -> bool: ...


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class StaticKeys:
    """Keys given in configuration (``KATHAN_API_KEYS``)."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = tuple(_digest(k) for k in keys)

    async def verify(self, key: str) -> bool:
        candidate = _digest(key)
        found = False
        # Look at every key, so timing does not reveal which one matched.
        for digest in self._digests:
            found |= hmac.compare_digest(candidate, digest)
        return found


def generate_key() -> str:
    return "sk-kathan-" + secrets.token_urlsafe(32)
