"""Open the store's database: URL normalisation and the SQLite connection settings."""

from __future__ import annotations

from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import event

#: Backends the writer's upsert supports.
SUPPORTED_BACKENDS: Final = frozenset({"sqlite", "postgresql"})

#: Default for ``PRAGMA busy_timeout``: how long SQLite waits on another writer's lock.
DEFAULT_BUSY_TIMEOUT: Final = 5.0


def database_url(target: str) -> sa.URL:
    """Turn ``target`` into a SQLAlchemy URL.

    A string with ``://`` is a SQLAlchemy URL (``sqlite:///calls.db``,
    ``postgresql+psycopg://user@host/db``); anything else is a SQLite file path
    (``./byeline.db`` becomes ``sqlite:///./byeline.db``). In-memory SQLite is refused: the writer
    thread and the readers use separate connections, which would each see a different database.
    """
    if not target:
        raise ValueError("database: empty URL or path")
    try:
        url = sa.make_url(target) if "://" in target else sa.URL.create("sqlite", database=target)
    except sa.exc.ArgumentError as exc:
        raise ValueError(f"database: not a URL: {target!r} ({exc})") from None
    if url.get_backend_name() == "postgres":  # the scheme libpq and many hosts hand out
        url = url.set(drivername="postgresql" + url.drivername[len("postgres") :])
    backend = url.get_backend_name()
    if backend not in SUPPORTED_BACKENDS:
        raise ValueError(
            f"database: unsupported backend {backend!r} in {target!r} "
            f"(use one of {', '.join(sorted(SUPPORTED_BACKENDS))})"
        )
    if backend == "sqlite" and (
        url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"
    ):
        raise ValueError(f"database: in-memory SQLite is not supported ({target!r}); use a file")
    return url


def create_store_engine(url: sa.URL, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> sa.Engine:
    """Create the engine; SQLite connections get WAL, ``synchronous=NORMAL``, a busy timeout and
    temporary files in memory.

    WAL lets readers (API, CLI) run while the writer commits; ``synchronous=NORMAL`` in WAL mode
    keeps the database consistent on power loss and costs no fsync per commit (a crash of the OS
    may lose the last transactions, a crash of the process loses nothing committed).

    ``temp_store=MEMORY`` keeps SQLite's temporary files in memory, the statement journal among
    them. Every multi-row statement of the record writer may fail half-way, so SQLite opens one
    for it; past 64 kB it spilled to a temporary file on disk, which took 3.1 of a call's 8.4
    ``pwrite`` system calls (``strace`` on ``bench/store_cost.py``), and is never read unless a
    statement fails. The journal lives only while its statement runs. Readers' sorts (the API's
    listings) are then made in memory too, of results the API returns whole anyway.
    """
    if url.drivername == "postgresql":
        # SQLAlchemy's default PostgreSQL driver is psycopg2; byeline depends on psycopg 3.
        url = url.set(drivername="postgresql+psycopg")
    options: dict[str, Any] = {}
    if url.get_backend_name() == "postgresql":
        # A server that went away must not leave dead connections in the pool, and connecting to
        # an unreachable one must fail fast (the writer spools instead of waiting on TCP).
        options = {"pool_pre_ping": True, "connect_args": {"connect_timeout": 5}}
    engine = sa.create_engine(url, **options)
    if engine.dialect.name == "sqlite":
        timeout_ms = int(busy_timeout * 1000)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute(f"PRAGMA busy_timeout={timeout_ms}")
                cursor.execute("PRAGMA temp_store=MEMORY")
            finally:
                cursor.close()

    return engine
