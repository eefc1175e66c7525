"""SQLite inserts from a thread that shares the GIL with a busy one: ``executemany`` against
the multi-row statements the store's writer uses (``byeline.store.writer.execute_rows``).

Python's sqlite3 lets go of the GIL around every step, one per row of an ``executemany``. While
another thread keeps the interpreter busy (as the event loop does under load), getting it back
waits for that thread to yield it, up to the switch interval (5 ms). The writer thread of
``byeline serve`` is in that place. This inserts the same rows (the shape of ``sip_messages``)
both ways, alone and beside a thread that only spins, in one run, and prints wall and CPU time
per row with the ratio (alone: medians of alternated runs). Each way writes into a fresh WAL
database in a temporary directory.

    .venv/bin/python bench/store_gil.py [--rows 6000] [--batch 300]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.dialects import sqlite as sqlite_dialect

from byeline.store.writer import Statements, insert_rows

_STATEMENTS = Statements(sqlite_dialect.dialect())  # the writer's own SQL for SQLite
RAW = bytearray(b"x" * 700)  # about a Five9 INVITE


def _database(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(
        "CREATE TABLE sip_messages (id INTEGER PRIMARY KEY, call_id TEXT NOT NULL, at REAL, "
        "direction TEXT, transport TEXT, peer TEXT, first_line TEXT, raw BLOB)"
    )
    db.execute("CREATE INDEX ix_sip_messages_call_id ON sip_messages (call_id)")
    return db


def _rows(count: int, base: int) -> list[tuple[object, ...]]:
    return [
        (f"SCL_{(base + i) // 6:012d}", 1.7e9 + i, "in", "UDP", "127.0.0.1:5060", "INVITE", RAW)
        for i in range(count)
    ]


def execute_many(db: sqlite3.Connection, rows: list[tuple[object, ...]]) -> None:
    db.executemany(_STATEMENTS.trace_insert, rows)


def multirow(db: sqlite3.Connection, rows: list[tuple[object, ...]]) -> None:
    """What the writer does on SQLite: its own statements of 128, 64, ... rows, in order."""
    cursor = db.cursor()
    try:
        insert_rows(cursor, _STATEMENTS, _STATEMENTS.trace_insert, rows)
    finally:
        cursor.close()


def measure(
    insert: Callable[[sqlite3.Connection, list[tuple[object, ...]]], None],
    total: int,
    batch: int,
    busy: bool,
    work: Path,
) -> tuple[float, float]:
    """Wall and writer-thread CPU seconds per row, for ``total`` rows in batches of ``batch``."""
    path = work / f"{insert.__name__}-{busy}-{time.monotonic_ns()}.db"
    db = _database(path)
    batches = [_rows(batch, n * batch) for n in range(total // batch)]
    stop = threading.Event()

    def spin() -> None:
        n = 0
        while not stop.is_set():
            n += 1

    spinner = threading.Thread(target=spin, daemon=True)
    if busy:
        spinner.start()
    try:
        wall, cpu = time.perf_counter(), time.thread_time()
        for rows in batches:
            db.execute("BEGIN")
            insert(db, rows)
            db.execute("COMMIT")
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    finally:
        stop.set()
        if busy:
            spinner.join()
        db.close()
    written = len(batches) * batch
    return wall / written, cpu / written


def _medians(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=6_000)
    parser.add_argument("--batch", type=int, default=300, help="rows per transaction")
    parser.add_argument("--repeats", type=int, default=5, help="alternations alone (median)")
    args = parser.parse_args()
    print(
        f"{args.rows} rows in transactions of {args.batch}; µs per row (wall / writer CPU), "
        f"alone the median of {args.repeats} alternations, beside a busy thread one each"
    )
    with tempfile.TemporaryDirectory(prefix="byeline-store-gil-") as tmp:
        work = Path(tmp)
        for busy, repeats in ((False, args.repeats), (True, 1)):
            results: dict[str, list[tuple[float, float]]] = {"many": [], "multi": []}
            for _ in range(repeats):  # alternated, the median of each
                results["many"].append(measure(execute_many, args.rows, args.batch, busy, work))
                results["multi"].append(measure(multirow, args.rows, args.batch, busy, work))
            many_wall, many_cpu = _medians(results["many"])
            multi_wall, multi_cpu = _medians(results["multi"])
            print(
                f"{'beside a busy thread' if busy else 'alone':22s}"
                f" executemany {1e6 * many_wall:8.1f} / {1e6 * many_cpu:6.1f}"
                f"   multi-row {1e6 * multi_wall:8.1f} / {1e6 * multi_cpu:6.1f}"
                f"   ratio {many_wall / multi_wall:6.1f}× wall, {many_cpu / multi_cpu:4.1f}× CPU",
                flush=True,
            )


if __name__ == "__main__":
    main()
