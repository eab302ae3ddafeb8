"""A per-key (and per-account default) ceiling on max_tokens.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("accounts", "api_keys"):
        op.add_column(table, sa.Column("max_tokens", sa.Integer(), nullable=True))


def downgrade() -> None:
    for table in ("accounts", "api_keys"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("max_tokens")
