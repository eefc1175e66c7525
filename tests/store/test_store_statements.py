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
