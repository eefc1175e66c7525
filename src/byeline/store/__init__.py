"""Call records and SIP traces: SQLite by default (WAL), PostgreSQL by URL.

:class:`CallStore` is the whole interface: non-blocking writes from the SIP loop committed by one
group-commit thread, synchronous reads for the HTTP API and the CLI, Alembic migrations run at
open. See :mod:`byeline.store.schema` for the tables and the portable type choices,
:mod:`byeline.store.spool` for what happens while the database is unreachable,
:mod:`byeline.store.outbox` for webhook deliveries and :mod:`byeline.store.retention` for purging.
"""

from byeline.store.callstore import CALL_FIELDS, CallStore, RecordListener
from byeline.store.database import database_url
from byeline.store.operations import CallWrite, Record, TraceWrite, TranscriptWrite
from byeline.store.outbox import CALL_ENDED, Outbox, OutboxEntry, WebhookTargets
from byeline.store.records import CallRecord, TraceRecord, TranscriptRecord
from byeline.store.retention import RetentionTask
from byeline.store.schema import CALL_STATUSES, DELIVERIES, DIRECTIONS, ENDED_BY
from byeline.store.spool import Spool, default_spool_dir
from byeline.store.writer import StoreStats

__all__ = [
    "CALL_ENDED",
    "CALL_FIELDS",
    "CALL_STATUSES",
    "DELIVERIES",
    "DIRECTIONS",
    "ENDED_BY",
    "CallRecord",
    "CallStore",
    "CallWrite",
    "Outbox",
    "OutboxEntry",
    "Record",
    "RecordListener",
    "RetentionTask",
    "Spool",
    "StoreStats",
    "TraceRecord",
    "TraceWrite",
    "TranscriptRecord",
    "TranscriptWrite",
    "WebhookTargets",
    "database_url",
    "default_spool_dir",
]
