"""Call records and SIP traces: SQLite by default (WAL), PostgreSQL by URL.

:class:`CallStore` is the whole interface: non-blocking writes from the SIP loop committed by one
group-commit thread, synchronous reads for the HTTP API and the CLI, Alembic migrations run at
open. See :mod:`byeline.store.schema` for the tables and the portable type choices.
"""

from byeline.store.callstore import CALL_FIELDS, CallStore
from byeline.store.database import database_url
from byeline.store.records import CallRecord, TraceRecord
from byeline.store.schema import CALL_STATUSES, DELIVERIES, DIRECTIONS, ENDED_BY
from byeline.store.writer import StoreStats

__all__ = [
    "CALL_FIELDS",
    "CALL_STATUSES",
    "DELIVERIES",
    "DIRECTIONS",
    "ENDED_BY",
    "CallRecord",
    "CallStore",
    "StoreStats",
    "TraceRecord",
    "database_url",
]
