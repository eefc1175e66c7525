"""What the store's writer thread is asked to do: the operations on its queue."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class CallWrite:
    """Upsert of one call row: ``fields`` hold column values already encoded for the database."""

    call_id: str
    fields: dict[str, object]
    at: float
    """When it was enqueued; becomes ``updated_at`` (and ``started_at`` if the row is new)."""


@dataclass(slots=True)
class TraceWrite:
    """One SIP message to append to ``sip_messages``."""

    call_id: str
    at: float
    direction: str
    transport: str
    peer: str
    data: bytes


@dataclass(slots=True)
class TranscriptWrite:
    """One utterance to append to ``transcripts``."""

    call_id: str
    at: float
    role: str
    text: str


@dataclass(slots=True)
class Barrier:
    """Calls ``notify(committed)`` from the writer once everything enqueued before it is done."""

    notify: Callable[[bool], None]


#: The operations that become rows (and that the spool keeps while the database is away).
Record = CallWrite | TraceWrite | TranscriptWrite
RECORD_TYPES = (CallWrite, TraceWrite, TranscriptWrite)
