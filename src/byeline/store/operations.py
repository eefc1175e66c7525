"""What the store's writer thread is asked to do: the operations on its queue.

Compiled with mypyc (a call makes nine of these). Each ``__init__`` is written out: the one
``@dataclass`` generates would run as interpreted Python even in the compiled module.
"""

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

    def __init__(self, call_id: str, fields: dict[str, object], at: float) -> None:
        self.call_id = call_id
        self.fields = fields
        self.at = at


@dataclass(slots=True)
class TraceWrite:
    """One SIP message to append to ``sip_messages``."""

    call_id: str
    at: float
    direction: str
    transport: str
    peer: str
    data: bytes

    def __init__(
        self, call_id: str, at: float, direction: str, transport: str, peer: str, data: bytes
    ) -> None:
        self.call_id = call_id
        self.at = at
        self.direction = direction
        self.transport = transport
        self.peer = peer
        self.data = data


@dataclass(slots=True)
class TranscriptWrite:
    """One utterance to append to ``transcripts``."""

    call_id: str
    at: float
    role: str
    text: str

    def __init__(self, call_id: str, at: float, role: str, text: str) -> None:
        self.call_id = call_id
        self.at = at
        self.role = role
        self.text = text


@dataclass(slots=True)
class Barrier:
    """Calls ``notify(committed)`` from the writer once everything enqueued before it is done."""

    notify: Callable[[bool], None]

    def __init__(self, notify: Callable[[bool], None]) -> None:
        self.notify = notify


#: The operations that become rows (and that the spool keeps while the database is away).
Record = CallWrite | TraceWrite | TranscriptWrite
RECORD_TYPES = (CallWrite, TraceWrite, TranscriptWrite)
