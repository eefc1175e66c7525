"""Initial schema: calls and sip_messages.

Revision ID: 0001
Revises:
Create Date: 2025-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the ``calls`` and ``sip_messages`` tables and their indexes."""
    op.create_table(
        "calls",
        sa.Column("call_id", sa.String(), nullable=False),
        sa.Column("sip_call_id", sa.String(), nullable=True),
        sa.Column("trunk_id", sa.String(), nullable=True),
        sa.Column("rule_id", sa.String(), nullable=True),
        sa.Column("caller", sa.String(), nullable=True),
        sa.Column("callee", sa.String(), nullable=True),
        sa.Column("five9_call_id", sa.String(), nullable=True),
        sa.Column("five9_session_id", sa.String(), nullable=True),
        sa.Column("transport", sa.String(), nullable=True),
        sa.Column("remote", sa.String(), nullable=True),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("answered_at", sa.Float(), nullable=True),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("ended_by", sa.String(), nullable=True),
        sa.Column("final_code", sa.Integer(), nullable=True),
        sa.Column("attributes", sa.Text(), nullable=True),
        sa.Column("route", sa.Text(), nullable=True),
        sa.Column("bye_headers", sa.Text(), nullable=True),
        sa.Column("header_refusals", sa.Text(), nullable=True),
        sa.Column("delivery", sa.String(), nullable=True),
        sa.Column("delivery_code", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("call_id", name="pk_calls"),
    )
    op.create_index("ix_calls_started_at", "calls", ["started_at"])
    op.create_index("ix_calls_ended_at", "calls", ["ended_at"])
    op.create_index("ix_calls_five9_call_id", "calls", ["five9_call_id"])
    op.create_index("ix_calls_sip_call_id", "calls", ["sip_call_id"])

    op.create_table(
        "sip_messages",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("call_id", sa.String(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("direction", sa.String(), nullable=False),
        sa.Column("transport", sa.String(), nullable=False),
        sa.Column("peer", sa.String(), nullable=False),
        sa.Column("first_line", sa.Text(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sip_messages"),
    )
    op.create_index("ix_sip_messages_call_id", "sip_messages", ["call_id"])


def downgrade() -> None:
    """Drop everything :func:`upgrade` created."""
    op.drop_index("ix_sip_messages_call_id", table_name="sip_messages")
    op.drop_table("sip_messages")
    op.drop_index("ix_calls_sip_call_id", table_name="calls")
    op.drop_index("ix_calls_five9_call_id", table_name="calls")
    op.drop_index("ix_calls_ended_at", table_name="calls")
    op.drop_index("ix_calls_started_at", table_name="calls")
    op.drop_table("calls")
