"""Schema and migrations of the call-record store, on real SQLite files."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.dialects import postgresql

from byeline.store import CallStore, database_url
from byeline.store.migrate import alembic_config
from byeline.store.schema import calls, metadata


def test_open_creates_schema_and_indexes(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    CallStore.open(str(path)).close()

    inspector = sa.inspect(sa.create_engine(f"sqlite:///{path}"))
    assert set(inspector.get_table_names()) == {
        "alembic_version",
        "calls",
        "sip_messages",
        "transcripts",
        "webhook_outbox",
        "spool_segments",
    }
    call_columns = {column["name"] for column in inspector.get_columns("calls")}
    assert call_columns == {column.name for column in calls.columns}
    assert {
        "call_id",
        "five9_call_id",
        "bye_headers",
        "header_refusals",
        "delivery_code",
        "updated_at",
    } <= call_columns
    assert {index["name"] for index in inspector.get_indexes("calls")} == {
        "ix_calls_started_at",
        "ix_calls_ended_at",
        "ix_calls_five9_call_id",
        "ix_calls_sip_call_id",
    }
    assert {index["name"] for index in inspector.get_indexes("sip_messages")} == {
        "ix_sip_messages_call_id"
    }
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT version_num FROM alembic_version").fetchall() == [("0002",)]
        # WAL is a property of the database file: it persists after close.
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_connection_pragmas(tmp_path: Path) -> None:
    store = CallStore.open(str(tmp_path / "calls.db"), busy_timeout=1.5)
    try:
        with store.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1500
            # The statement journal of a multi-row insert is not spilled to a file on disk.
            assert connection.exec_driver_sql("PRAGMA temp_store").scalar() == 2  # MEMORY
    finally:
        store.close()


def test_reopen_existing_database_keeps_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    store = CallStore.open(url)
    store.call_started("c1", caller="+15550001")
    store.close()
    for _ in range(2):  # migrating an up-to-date database is a no-op
        store = CallStore.open(url)
        record = store.get_call("c1")
        assert record is not None and record.caller == "+15550001"
        store.close()
    with sqlite3.connect(tmp_path / "calls.db") as raw:
        assert raw.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)


def test_models_and_migrations_agree(tmp_path: Path) -> None:
    store = CallStore.open(str(tmp_path / "calls.db"))
    try:
        with store.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
            # Alembic's own `alembic check`, through the packaged env.py.
            command.check(alembic_config(connection=connection))
    finally:
        store.close()


def test_migration_renders_for_postgresql() -> None:
    config = alembic_config("postgresql://byeline@localhost/byeline")
    buffer = io.StringIO()
    config.output_buffer = buffer
    command.upgrade(config, "head", sql=True)
    ddl = buffer.getvalue()
    assert "CREATE TABLE calls" in ddl
    assert "id BIGSERIAL NOT NULL" in ddl
    assert "started_at FLOAT NOT NULL" in ddl
    assert "raw BYTEA NOT NULL" in ddl
    assert "CREATE INDEX ix_calls_five9_call_id" in ddl


def test_upsert_compiles_for_postgresql() -> None:
    insert = postgresql.insert(calls)
    statement = insert.on_conflict_do_update(
        index_elements=[calls.c.call_id], set_={"status": insert.excluded["status"]}
    )
    sql = str(statement.compile(dialect=sa.make_url("postgresql://").get_dialect()()))
    assert "ON CONFLICT (call_id) DO UPDATE SET status = excluded.status" in sql


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("./byeline.db", "sqlite:///./byeline.db"),
        ("/var/lib/byeline/calls.db", "sqlite:////var/lib/byeline/calls.db"),
        ("sqlite:///calls.db", "sqlite:///calls.db"),
        ("postgresql://u@db/byeline", "postgresql://u@db/byeline"),
        ("postgresql+psycopg://u@db/byeline", "postgresql+psycopg://u@db/byeline"),
    ],
)
def test_database_url_accepts_paths_and_urls(target: str, expected: str) -> None:
    assert database_url(target).render_as_string(hide_password=False) == expected


@pytest.mark.parametrize(
    "target", ["", "sqlite://", "sqlite:///:memory:", "mysql://u@db/x", ":memory:"]
)
def test_database_url_refusals(target: str) -> None:
    with pytest.raises(ValueError, match="database"):
        database_url(target)
