"""The writer's prepared SQL per dialect: COPY only where the driver can run it."""

from __future__ import annotations

from sqlalchemy.dialects import postgresql, sqlite

from byeline.store.writer import Statements


def test_copy_is_used_with_psycopg_3_only() -> None:
    # psycopg 3 (what byeline installs) has cursor.copy(); psycopg2 and pg8000 URLs are accepted
    # too, and must insert the SIP messages instead of failing every batch.
    assert Statements(postgresql.psycopg.dialect()).trace_copy is not None
    assert Statements(postgresql.psycopg2.dialect()).trace_copy is None
    assert Statements(sqlite.pysqlite.dialect()).trace_copy is None


def test_an_upsert_binds_only_its_shape_and_the_columns_a_new_row_needs() -> None:
    statement, columns = Statements(sqlite.pysqlite.dialect()).call_upsert(
        frozenset({"ended_at", "status"})
    )
    # Table order; started_at and updated_at for a row that does not exist yet.
    assert columns == ("started_at", "ended_at", "status", "updated_at")
    assert statement.startswith(
        "INSERT INTO calls (call_id, started_at, ended_at, status, updated_at) "
        "VALUES (?, ?, ?, ?, ?)"
    )
    # An existing row keeps its started_at: only the shape and updated_at are set.
    assert statement.endswith(
        "ON CONFLICT (call_id) DO UPDATE SET ended_at = excluded.ended_at, "
        "status = excluded.status, updated_at = excluded.updated_at"
    )


def test_sqlite_binds_messages_as_bytearray_and_postgresql_as_they_are() -> None:
    assert Statements(sqlite.pysqlite.dialect()).blob is bytearray
    assert Statements(postgresql.psycopg.dialect()).blob is None


def test_sqlite_takes_many_rows_per_statement_and_postgresql_one() -> None:
    statements = Statements(sqlite.pysqlite.dialect())
    upsert, columns = statements.call_upsert(frozenset({"status"}))
    text = statements.rows_statement(upsert, 3)
    assert text is not None
    row = "(" + ", ".join(["?"] * (1 + len(columns))) + ")"
    assert text == upsert.replace(row, f"{row}, {row}, {row}")
    assert text.endswith("updated_at = excluded.updated_at")
    trace = statements.rows_statement(statements.trace_insert, 2)
    assert trace == statements.trace_insert + ", (?, ?, ?, ?, ?, ?, ?)"
    assert statements.rows_statement("INSERT INTO calls (call_id) VALUES (?)", 2) is None
    assert Statements(postgresql.psycopg.dialect()).rows_statement(upsert, 2) is None
