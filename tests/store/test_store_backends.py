"""The store on both backends, SQLite and a real PostgreSQL: schema, records, transcripts,
filters, the webhook outbox and retention."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from byeline.store import CallStore, RetentionTask, WebhookTargets, database_url
from byeline.store.database import create_store_engine
from byeline.store.schema import metadata, webhook_outbox

INVITE = b"INVITE sip:agent@127.0.0.1 SIP/2.0\r\nX-CallID: 300000000001\r\n\r\n"
BYE = b"BYE sip:five9@127.0.0.1 SIP/2.0\r\nX-RouteValue: Billing\r\nCSeq: 2 BYE\r\n\r\n\xff\x00"


def _open(url: str, **options: object) -> CallStore:
    return CallStore.open(url, spool=False, **options)  # type: ignore[arg-type]


def _end_call(store: CallStore, call_id: str, *, started: float, route: dict[str, str]) -> None:
    store.call_started(call_id, five9_call_id="f9-" + call_id, started_at=started, caller="+1555")
    store.trace(call_id, at=started, direction="in", transport="udp", peer="p:1", data=INVITE)
    store.call_updated(call_id, status="active", answered_at=started + 0.1)
    store.trace(call_id, at=started + 1, direction="out", transport="udp", peer="p:1", data=BYE)
    store.call_updated(
        call_id,
        status="ended",
        ended_at=started + 2,
        ended_by="agent",
        route=route,
        bye_headers=[["X-RouteValue", route.get("five9.route_value", "")]],
        delivery="delivered",
        delivery_code=200,
    )


def test_models_and_migrations_agree(store_url: str) -> None:
    store = _open(store_url)
    try:
        with store.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
            version = connection.exec_driver_sql("SELECT version_num FROM alembic_version")
            assert version.scalar() == "0002"
        assert store.engine.dialect.name == database_url(store_url).get_backend_name()
    finally:
        store.close()


def test_call_trace_transcript_and_filters(store_url: str) -> None:
    store = _open(store_url)
    try:
        now = time.time()
        _end_call(store, "c1", started=now - 10, route={"five9.route_value": "Billing"})
        _end_call(store, "c2", started=now - 5, route={"five9.route_value": "Sales_1%"})
        store.transcript("c1", "agent", "Say billing or press 1.", at=now - 9)
        store.transcript("c1", "caller", "billing — «ça»", at=now - 8)
        assert store.flush(10)

        record = store.get_call("c1")
        assert record is not None
        assert [m.raw for m in record.trace] == [INVITE, BYE]  # bytes exactly, NUL and 0xff too
        assert [(t.role, t.text) for t in record.transcript] == [
            ("agent", "Say billing or press 1."),
            ("caller", "billing — «ça»"),
        ]
        assert record.to_json()["transcript"][1]["text"] == "billing — «ça»"
        assert "trace" not in record.to_json(trace=False)

        def ids(**filters: object) -> list[str]:
            return [r.call_id for r in store.list_calls(**filters)]  # type: ignore[arg-type]

        assert ids() == ["c2", "c1"]
        assert ids(route="Billing") == ["c1"]
        assert ids(route="five9.route_value=Sales_1%") == ["c2"]
        assert ids(route="Sales") == []  # whole values only
        assert ids(route="Sales_1_") == []  # LIKE wildcards are literal
        assert ids(route="five9.route_value") == []  # a name is not a value
        assert ids(status="ended", delivery="delivered", ended_by="agent") == ["c2", "c1"]
        assert ids(since=now - 6) == ["c2"]
        assert store.count_calls() == 2 and store.count_calls(route="Billing") == 1
        latest = store.latest_for_five9_call("f9-c2")
        assert latest is not None and latest.call_id == "c2"
        assert store.latest_for_five9_call("nope") is None
        assert store.ping()
    finally:
        store.close()


def test_outbox_rows_written_with_the_call_end(store_url: str) -> None:
    store = _open(store_url)
    try:
        store.enable_webhooks(
            WebhookTargets(("http://a/hook", "http://b/hook"), lambda r: {"id": r.call_id})
        )
        now = time.time()
        _end_call(store, "c1", started=now, route={"five9.route_value": "Billing"})
        store.call_updated("c1", status="ended")  # ended again: no second delivery
        store.call_started("c2")  # still ringing: nothing yet
        assert store.flush(10)
        outbox = store.outbox
        entries = outbox.for_call("c1")
        assert [(e.url, e.state, e.payload) for e in entries] == [
            ("http://a/hook", "pending", '{"id":"c1"}'),
            ("http://b/hook", "pending", '{"id":"c1"}'),
        ]
        assert outbox.for_call("c2") == []

        # A crash left c2 ringing: marking it interrupted sends its result too.
        assert store.mark_interrupted(time.time()) == 1
        assert len(outbox.for_call("c2")) == 2

        due = outbox.due(time.time() + 1)
        assert len(due) == 4
        outbox.delivered(due[0].id, status=204, now=now)
        outbox.failed_attempt(due[1].id, status=500, error="HTTP 500", next_attempt_at=now + 3600)
        outbox.failed_attempt(due[2].id, status=None, error="refused", next_attempt_at=None)
        assert outbox.counts() == {"delivered": 1, "pending": 2, "failed": 1}
        assert len(outbox.due(time.time() + 1)) == 1
        assert outbox.next_due() is not None
    finally:
        store.close()


async def test_retention_purges_old_records_but_not_pending_webhooks(store_url: str) -> None:
    store = _open(store_url)
    try:
        store.enable_webhooks(WebhookTargets(("http://a/hook",)))
        old = time.time() - 40 * 86400
        _end_call(store, "old", started=old, route={})
        store.transcript("old", "caller", "hello", at=old)
        _end_call(store, "new", started=time.time(), route={})
        assert store.flush(10)
        [pending] = store.outbox.for_call("old")

        task = RetentionTask(store, max_age=30 * 86400, interval=3600)
        assert await task.run_once() == 1
        assert store.get_call("old") is None and store.get_call("new") is not None
        with store.engine.connect() as connection:
            for table in ("sip_messages", "transcripts"):
                count = connection.execute(
                    sa.text(f"SELECT count(*) FROM {table} WHERE call_id = 'old'")
                ).scalar()
                assert count == 0, table
        # Its webhook is still on its way: kept until delivered.
        assert [e.id for e in store.outbox.for_call("old")] == [pending.id]
        store.outbox.delivered(pending.id, status=200, now=time.time())
        with store.engine.begin() as connection:
            connection.execute(webhook_outbox.update().values(created_at=old))
        store.purge(time.time() - 30 * 86400)
        assert store.outbox.for_call("old") == []
        task.start()
        await task.stop()
    finally:
        store.close()


@pytest.mark.parametrize(
    ("target", "driver"),
    [
        ("postgresql://u@db/byeline", "postgresql+psycopg"),
        ("postgres://u@db/byeline", "postgresql+psycopg"),
        ("postgresql+psycopg://u@db/byeline", "postgresql+psycopg"),
        ("sqlite:///x.db", "sqlite"),
    ],
)
def test_postgresql_urls_use_psycopg(target: str, driver: str) -> None:
    engine = create_store_engine(database_url(target))
    try:
        assert engine.url.drivername == driver
    finally:
        engine.dispose()


def test_retention_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="retention"):
        RetentionTask(None, max_age=0)  # type: ignore[arg-type]
