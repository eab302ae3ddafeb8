"""The store: accounts, API keys, sessions and the usage ledger (SQLAlchemy 2, async).

SQLite by default, PostgreSQL with ``KATHAN_DATABASE_URL``; one set of Alembic
migrations serves both.
"""
