"""A throwaway static key, for a server run without the store (``accounts: false``)."""

from __future__ import annotations

import secrets


def generate_key() -> str:
    return "sk-kathan-" + secrets.token_urlsafe(32)
