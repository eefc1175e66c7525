"""A real PostgreSQL for the store's tests: Debian's server binaries, a cluster in a temporary
directory, listening on 127.0.0.1 on a free port, stopped at the end of the session.

Root cannot run PostgreSQL, so as root the cluster belongs to the ``postgres`` user (created by
Debian's package). Without the binaries the PostgreSQL tests are skipped, unless
``BYELINE_REQUIRE_PG`` is set (``make test`` sets it after installing them): then they fail.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from pg_cluster import PgCluster, bin_dir


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    binaries = bin_dir()
    if binaries is None:
        if os.environ.get("BYELINE_REQUIRE_PG"):
            pytest.fail("BYELINE_REQUIRE_PG is set but /usr/lib/postgresql/*/bin/pg_ctl is absent")
        pytest.skip("PostgreSQL server binaries absent (apt-get install postgresql)")
    cluster = PgCluster(binaries)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> str:
    """The URL of a fresh database on the session's cluster (which is running)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return pg_cluster.create_database()
        except sa.exc.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each backend in turn: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "calls.db")
    return str(request.getfixturevalue("pg_url"))
