"""The webhook outbox: call results waiting to be POSTed to the configured receivers.

A row is inserted in the same transaction that records a call's end (by the writer thread, or
by :meth:`~byeline.store.CallStore.mark_interrupted` for calls cut by a crash), with the JSON body
frozen at that moment. A sender (:mod:`byeline.web.webhooks`) takes due rows, POSTs them and
records the outcome; a failed attempt is retried later with backoff. Nothing lives only in
memory, so a restart loses no webhook: delivery is at least once, and every request carries the
row id so a receiver can drop duplicates.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from byeline.store.records import CallRecord
from byeline.store.schema import calls, webhook_outbox

log = logging.getLogger("byeline.store")

#: The only event so far: a call is over and its routing result is final.
CALL_ENDED: Final = "call.ended"

PayloadBuilder = Callable[[CallRecord], Mapping[str, Any]]


def default_payload(record: CallRecord) -> dict[str, Any]:
    """The call's row as JSON, without its SIP trace and transcript."""
    return record.to_json(trace=False)


@dataclass(frozen=True)
class WebhookTargets:
    """Where call results go, and how the body is built from a call's record.

    ``payload`` runs in the store's writer thread inside the transaction that ends the call; it
    must be quick and must not touch the database. If it raises, :func:`default_payload` is used.
    """

    urls: tuple[str, ...]
    payload: PayloadBuilder = field(default=default_payload)


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One webhook delivery, as stored in ``webhook_outbox``."""

    id: int
    call_id: str
    url: str
    event: str
    payload: str
    created_at: float
    state: str
    attempts: int
    next_attempt_at: float
    delivered_at: float | None
    last_status: int | None
    last_error: str | None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict without the payload."""
        return {
            "id": self.id,
            "url": self.url,
            "event": self.event,
            "state": self.state,
            "attempts": self.attempts,
            "created_at": self.created_at,
            "next_attempt_at": self.next_attempt_at,
            "delivered_at": self.delivered_at,
            "last_status": self.last_status,
            "last_error": self.last_error,
        }


def enqueue_call_ended(
    connection: sa.Connection, call_ids: Iterable[str], targets: WebhookTargets, now: float
) -> int:
    """Insert one outbox row per ended call and receiver (none twice); return rows inserted."""
    ids = sorted(set(call_ids))
    if not ids or not targets.urls:
        return 0
    rows: list[dict[str, object]] = []
    for row in connection.execute(sa.select(calls).where(calls.c.call_id.in_(ids))).mappings():
        record = CallRecord.from_row(row)
        try:
            body: Mapping[str, Any] = targets.payload(record)
            text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except Exception:
            log.exception("webhooks: payload builder failed for %s; sending the record", row)
            text = json.dumps(default_payload(record), ensure_ascii=False, separators=(",", ":"))
        for url in targets.urls:
            rows.append(
                {
                    "call_id": record.call_id,
                    "url": url,
                    "event": CALL_ENDED,
                    "payload": text,
                    "created_at": now,
                    "state": "pending",
                    "attempts": 0,
                    "next_attempt_at": now,
                }
            )
    if not rows:
        return 0
    insert = (postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert)(
        webhook_outbox
    )
    statement = insert.on_conflict_do_nothing(index_elements=["call_id", "url", "event"])
    inserted = 0
    for values in rows:  # one by one: rowcount tells which ones were new
        inserted += connection.execute(statement, values).rowcount
    return inserted


class Outbox:
    """Synchronous access to ``webhook_outbox`` (call it from a thread, not the event loop)."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def due(self, now: float, limit: int = 20) -> list[OutboxEntry]:
        """Pending deliveries whose next attempt is due, oldest first."""
        query = (
            sa.select(webhook_outbox)
            .where(webhook_outbox.c.state == "pending", webhook_outbox.c.next_attempt_at <= now)
            .order_by(webhook_outbox.c.next_attempt_at, webhook_outbox.c.id)
            .limit(limit)
        )
        with self._engine.connect() as connection:
            return [OutboxEntry(**row) for row in connection.execute(query).mappings()]

    def next_due(self) -> float | None:
        """When the earliest pending delivery is due, if any."""
        query = sa.select(sa.func.min(webhook_outbox.c.next_attempt_at)).where(
            webhook_outbox.c.state == "pending"
        )
        with self._engine.connect() as connection:
            value = connection.execute(query).scalar()
        return None if value is None else float(value)

    def delivered(self, entry_id: int, *, status: int, now: float) -> None:
        """Record a 2xx answer: the delivery is done."""
        self._update(
            entry_id,
            state="delivered",
            attempts=webhook_outbox.c.attempts + 1,
            delivered_at=now,
            last_status=status,
            last_error=None,
        )

    def failed_attempt(
        self,
        entry_id: int,
        *,
        status: int | None,
        error: str,
        next_attempt_at: float | None,
    ) -> None:
        """Record a failed attempt; ``next_attempt_at=None`` gives up (state ``failed``)."""
        values: dict[str, Any] = {
            "attempts": webhook_outbox.c.attempts + 1,
            "last_status": status,
            "last_error": error[:500],
        }
        if next_attempt_at is None:
            values["state"] = "failed"
        else:
            values["next_attempt_at"] = next_attempt_at
        self._update(entry_id, **values)

    def for_call(self, call_id: str) -> list[OutboxEntry]:
        """Every delivery of one call, in id order."""
        query = (
            sa.select(webhook_outbox)
            .where(webhook_outbox.c.call_id == call_id)
            .order_by(webhook_outbox.c.id)
        )
        with self._engine.connect() as connection:
            return [OutboxEntry(**row) for row in connection.execute(query).mappings()]

    def counts(self) -> dict[str, int]:
        """How many deliveries are in each state."""
        query = sa.select(webhook_outbox.c.state, sa.func.count()).group_by(webhook_outbox.c.state)
        with self._engine.connect() as connection:
            return {str(state): int(n) for state, n in connection.execute(query)}

    def _update(self, entry_id: int, **values: Any) -> None:
        with self._engine.begin() as connection:
            connection.execute(
                webhook_outbox.update().where(webhook_outbox.c.id == entry_id).values(**values)
            )


def call_ids_ended(fields_by_call: Mapping[str, Mapping[str, object]]) -> Sequence[str]:
    """The calls whose pending writes set ``status`` to ``ended``."""
    return [
        call_id for call_id, fields in fields_by_call.items() if fields.get("status") == "ended"
    ]
