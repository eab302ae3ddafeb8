"""Alembic migrations of the store, applied in-process by ``Database.upgrade()``.

To add one: write ``versions/NNNN_<what>.py`` from ``script.py.mako`` (or with
``alembic revision`` and a config whose ``script_location`` is this directory);
each must run on SQLite and PostgreSQL alike.
"""
