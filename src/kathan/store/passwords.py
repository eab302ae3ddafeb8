"""Account passwords, hashed with argon2id.

The functions are synchronous and take tens of milliseconds on purpose; async
callers run them in a thread (``asyncio.to_thread``), as ``kathan.store.repo`` does.

>>> stored = hash_password("correct horse")
>>> verify_password(stored, "correct horse")
True
>>> verify_password(stored, "wrong")
False
"""

from __future__ import annotations

import functools
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError


@functools.cache
def _hasher() -> PasswordHasher:
    # argon2-cffi's defaults (RFC 9106 low-memory profile: argon2id, t=3, m=64 MiB, p=4).
    return PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """A hash of a random password, computed once per process, on first need."""
    return _hasher().hash(secrets.token_urlsafe(24))


def hash_password(password: str) -> str:
    """Hash ``password`` with a fresh salt; the result holds its own parameters."""
    return _hasher().hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True when ``password`` matches; False on a mismatch or a malformed hash."""
    try:
        return _hasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with weaker parameters than the current ones."""
    try:
        return _hasher().check_needs_rehash(password_hash)
    except (InvalidHashError, ValueError):
        return False


def burn_verify_time(password: str) -> None:
    """Spend as long as a real verification, so an unknown email is not told apart by timing."""
    verify_password(_dummy_hash(), password)
