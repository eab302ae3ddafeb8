"""Backends turn a chat request into one normalized stream of ``Delta`` events."""
