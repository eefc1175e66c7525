"""Alembic environment for the byeline call-record store.

byeline runs it in code (see :mod:`byeline.store.migrate`), handing over an open connection in
``config.attributes["connection"]``; no ``alembic.ini`` is involved. A URL in the
``sqlalchemy.url`` main option is used otherwise, and for offline (``--sql``) generation.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from byeline.store.schema import metadata


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds tables for later revisions.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_offline() -> None:
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_online() -> None:
    connection = context.config.attributes.get("connection")
    if isinstance(connection, sa.Connection):
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("byeline migrations need a connection or sqlalchemy.url")
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    _run_offline()
else:
    _run_online()
