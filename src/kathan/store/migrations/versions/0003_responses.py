"""Stored responses (``POST /v1/responses`` with ``store: true``), and the endpoint of
each usage row.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "responses",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("owner", sa.String(length=48), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("items", sa.JSON(), nullable=False),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_responses"),
    )
    op.create_index("ix_responses_owner", "responses", ["owner"])
    # Rows written before this revision came from chat completions.
    op.add_column("usage", sa.Column("endpoint", sa.String(length=32), nullable=False,
                                     server_default="chat/completions"))


def downgrade() -> None:
    with op.batch_alter_table("usage") as batch:
        batch.drop_column("endpoint")
    op.drop_index("ix_responses_owner", table_name="responses")
    op.drop_table("responses")
