"""The call-record schema: the ``calls`` and ``sip_messages`` tables.

This metadata is the source of truth that the Alembic migrations under ``migrations/versions``
must reproduce; a test runs Alembic's compare to keep the two in agreement.

Portable choices, so the same schema runs on SQLite (the default) and PostgreSQL:

- Timestamps are ``Float`` epoch seconds (UTC by definition; ``DOUBLE PRECISION`` on
  PostgreSQL). SIP traces need sub-millisecond order, floats compare and index cheaply, and unlike
  ``DateTime`` they do not depend on the backend's time-zone handling (SQLite stores no zone).
- JSON columns are ``Text`` holding UTF-8 JSON. The writer encodes the value when it is
  *enqueued*, so the row holds a snapshot of the caller's dict at that instant (the edge keeps
  mutating its attributes) and an unencodable value fails in the caller's thread, not in the writer.
- Enumerated columns (``status``, ``ended_by``, ``delivery``, ``direction``) are plain strings
  checked in Python before enqueueing; adding a value needs no migration.
- ``sip_messages.call_id`` has no foreign key: messages that belong to no call row (an OPTIONS
  ping, an INVITE refused before a call exists) are traced too.
"""

from __future__ import annotations

from typing import Final

import sqlalchemy as sa

#: Naming convention so constraint names are identical on every backend and in migrations.
NAMING_CONVENTION: Final = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata: Final = sa.MetaData(naming_convention=NAMING_CONVENTION)

#: ``calls.status`` values.
CALL_STATUSES: Final = frozenset({"ringing", "active", "ended"})
#: ``calls.ended_by`` values: who or what ended the call.
ENDED_BY: Final = frozenset(
    {"agent", "caller", "timeout", "error", "shutdown", "interrupted", "rejected"}
)
#: ``calls.delivery`` values: the fate of the routing headers sent to Five9 on the BYE.
DELIVERIES: Final = frozenset({"pending", "delivered", "rejected", "timeout", "not_sent"})
#: ``sip_messages.direction`` values, seen from byeline.
DIRECTIONS: Final = frozenset({"in", "out"})

calls: Final = sa.Table(
    "calls",
    metadata,
    sa.Column("call_id", sa.String(), primary_key=True),  # byeline's id (sip.callID)
    sa.Column("sip_call_id", sa.String(), nullable=True, index=True),
    sa.Column("trunk_id", sa.String(), nullable=True),
    sa.Column("rule_id", sa.String(), nullable=True),
    sa.Column("caller", sa.String(), nullable=True),
    sa.Column("callee", sa.String(), nullable=True),
    sa.Column("five9_call_id", sa.String(), nullable=True, index=True),
    sa.Column("five9_session_id", sa.String(), nullable=True),
    sa.Column("transport", sa.String(), nullable=True),
    sa.Column("remote", sa.String(), nullable=True),  # peer ip:port
    sa.Column("started_at", sa.Float(), nullable=False, index=True),
    sa.Column("answered_at", sa.Float(), nullable=True),
    sa.Column("ended_at", sa.Float(), nullable=True, index=True),
    sa.Column("status", sa.String(), nullable=False),
    sa.Column("ended_by", sa.String(), nullable=True),
    sa.Column("final_code", sa.Integer(), nullable=True),  # INVITE final response
    sa.Column("attributes", sa.Text(), nullable=True),
    sa.Column("route", sa.Text(), nullable=True),
    sa.Column("bye_headers", sa.Text(), nullable=True),  # [[name, value], ...]
    sa.Column("header_refusals", sa.Text(), nullable=True),  # [{name, reason}]
    sa.Column("delivery", sa.String(), nullable=True),
    sa.Column("delivery_code", sa.Integer(), nullable=True),
    sa.Column("updated_at", sa.Float(), nullable=False),
)

sip_messages: Final = sa.Table(
    "sip_messages",
    metadata,
    sa.Column(
        "id",
        # INTEGER PRIMARY KEY is SQLite's rowid alias (autoincrement); BIGINT elsewhere.
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("call_id", sa.String(), nullable=False, index=True),
    sa.Column("at", sa.Float(), nullable=False),
    sa.Column("direction", sa.String(), nullable=False),
    sa.Column("transport", sa.String(), nullable=False),
    sa.Column("peer", sa.String(), nullable=False),
    sa.Column("first_line", sa.Text(), nullable=False),
    sa.Column("raw", sa.LargeBinary(), nullable=False),
)

transcripts: Final = sa.Table(
    "transcripts",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("call_id", sa.String(), nullable=False, index=True),
    sa.Column("at", sa.Float(), nullable=False),
    sa.Column("role", sa.String(), nullable=False),  # "caller" or "agent" (free text)
    sa.Column("text", sa.Text(), nullable=False),
)

#: ``webhook_outbox.state`` values.
OUTBOX_STATES: Final = frozenset({"pending", "delivered", "failed"})

webhook_outbox: Final = sa.Table(
    "webhook_outbox",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("call_id", sa.String(), nullable=False),
    sa.Column("url", sa.Text(), nullable=False),
    sa.Column("event", sa.String(), nullable=False),
    # The JSON body, frozen when the call ended: a retry sends the same bytes.
    sa.Column("payload", sa.Text(), nullable=False),
    sa.Column("created_at", sa.Float(), nullable=False),
    sa.Column("state", sa.String(), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("next_attempt_at", sa.Float(), nullable=False),
    sa.Column("delivered_at", sa.Float(), nullable=True),
    sa.Column("last_status", sa.Integer(), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    # One row per call and receiver: a call end replayed from the spool enqueues nothing twice.
    sa.UniqueConstraint("call_id", "url", "event", name="uq_webhook_outbox_call_id"),
    sa.Index("ix_webhook_outbox_state", "state", "next_attempt_at"),
)

spool_segments: Final = sa.Table(
    "spool_segments",
    metadata,
    # The name of a spool file replayed into the database, written in the replay's own
    # transaction: a crash between that commit and the file's removal cannot replay it twice.
    sa.Column("name", sa.String(), primary_key=True),
    sa.Column("applied_at", sa.Float(), nullable=False),
)
