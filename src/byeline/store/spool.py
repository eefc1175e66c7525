"""The local durable spool: where records wait while the database cannot be reached.

A call must go on and its record must not be lost when PostgreSQL restarts or the SQLite disk is
unavailable. When a batch cannot be committed (the database is unreachable after the writer's
retries), the writer appends it here as one *segment* file and goes on; every later batch goes to
the spool too, so the database receives writes in their original order. When the database is back
the writer replays the segments oldest first, each in one transaction that also records the
segment's name in ``spool_segments``: a crash between that commit and the file's removal cannot
apply a segment twice.

A segment is JSON Lines: a header line ``{"spool": 1, "records": N}`` and one line per record.
It is written to a temporary name, fsynced, then renamed (and the directory fsynced), so a
segment is either whole or absent. Names sort in the order the segments were written.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa

from byeline.store.operations import CallWrite, Record, TraceWrite, TranscriptWrite

SPOOL_VERSION: Final = 1
_SUFFIX: Final = ".jsonl"


def default_spool_dir(url: sa.URL) -> Path:
    """Where the spool of the database at ``url`` lives unless configured.

    SQLite: beside the database file (``calls.db`` → ``calls.db-spool/``). Other backends:
    ``$BYELINE_SPOOL_DIR`` if set, else ``$XDG_STATE_HOME/byeline/spool-<hash of the URL>``
    (``~/.local/state`` by default), so two databases never share a spool.
    """
    if url.get_backend_name() == "sqlite" and url.database:
        return Path(url.database + "-spool")
    configured = os.environ.get("BYELINE_SPOOL_DIR")
    if configured:
        return Path(configured)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    digest = hashlib.sha256(url.render_as_string(hide_password=True).encode()).hexdigest()[:16]
    return Path(state) / "byeline" / f"spool-{digest}"


class SpoolError(ValueError):
    """A segment file that cannot be read back (it is quarantined, never silently skipped)."""


class Spool:
    """A directory of segment files, written and replayed by the store's writer thread only."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self._counter = itertools.count()
        self._lock_file: int | None = None

    def __repr__(self) -> str:
        return f"<Spool {self.directory}>"

    # -- writing ----------------------------------------------------------------------------

    def write(self, records: Iterable[Record]) -> tuple[str, int]:
        """Append ``records`` as one new segment; return its name and how many records it holds.

        Raises ``OSError`` if the segment cannot be made durable.
        """
        lines = [_encode(record) for record in records]
        self.directory.mkdir(parents=True, exist_ok=True)
        self.acquire()
        name = f"seg-{time.time_ns():020d}-{os.getpid()}-{next(self._counter):06d}{_SUFFIX}"
        temporary = self.directory / f".{name}.tmp"
        header = json.dumps({"spool": SPOOL_VERSION, "records": len(lines)})
        with open(temporary, "w", encoding="utf-8") as out:
            out.write(header + "\n")
            for line in lines:
                out.write(line + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.directory / name)
        self._sync_directory()
        return name, len(lines)

    # -- reading ----------------------------------------------------------------------------

    def segments(self) -> list[str]:
        """Names of the segments waiting, oldest first."""
        try:
            names = [
                entry.name
                for entry in os.scandir(self.directory)
                if entry.name.startswith("seg-") and entry.name.endswith(_SUFFIX)
            ]
        except FileNotFoundError:
            return []
        return sorted(names)

    def read(self, name: str) -> list[Record]:
        """The records of one segment, in the order they were written."""
        try:
            with open(self.directory / name, encoding="utf-8") as source:
                header = json.loads(source.readline())
                if not isinstance(header, dict) or header.get("spool") != SPOOL_VERSION:
                    raise SpoolError(f"{name}: not a version {SPOOL_VERSION} spool segment")
                records = [_decode(json.loads(line)) for line in source if line.strip()]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise SpoolError(f"{name}: unreadable spool segment: {exc}") from None
        if len(records) != header.get("records"):
            raise SpoolError(f"{name}: {len(records)} records, header says {header['records']}")
        return records

    def count(self) -> int:
        """How many records wait in the spool (reads every segment's header line)."""
        total = 0
        for name in self.segments():
            with (
                contextlib.suppress(OSError, ValueError, TypeError),
                open(self.directory / name, encoding="utf-8") as source,
            ):
                total += int(json.loads(source.readline()).get("records", 0))
        return total

    def remove(self, name: str) -> None:
        """Delete a segment that has been applied."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.directory / name)

    def quarantine(self, name: str) -> Path:
        """Set a segment that cannot be applied aside (``*.bad``), for a human to look at."""
        bad = self.directory / (name + ".bad")
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.directory / name, bad)
        return bad

    # -- one replaying process --------------------------------------------------------------

    def acquire(self) -> bool:
        """Take the spool's lock (kept until :meth:`release`); False if another process has it.

        The server that owns the spool replays it; a second process opening the same database
        (``byeline calls list``) must not replay it from under it.
        """
        if self._lock_file is not None:
            return True
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            handle = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return False
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(handle)
            return False
        self._lock_file = handle
        return True

    def release(self) -> None:
        """Give the lock back (at close)."""
        if self._lock_file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            os.close(self._lock_file)
            self._lock_file = None

    def _sync_directory(self) -> None:
        handle = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def _encode(record: Record) -> str:
    data: dict[str, Any]
    if isinstance(record, CallWrite):
        data = {"kind": "call", "call_id": record.call_id, "at": record.at, "fields": record.fields}
    elif isinstance(record, TraceWrite):
        data = {
            "kind": "trace",
            "call_id": record.call_id,
            "at": record.at,
            "direction": record.direction,
            "transport": record.transport,
            "peer": record.peer,
            "data": base64.b64encode(record.data).decode("ascii"),
        }
    else:
        data = {
            "kind": "transcript",
            "call_id": record.call_id,
            "at": record.at,
            "role": record.role,
            "text": record.text,
        }
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _decode(data: dict[str, Any]) -> Record:
    kind = data["kind"]
    if kind == "call":
        return CallWrite(str(data["call_id"]), dict(data["fields"]), float(data["at"]))
    if kind == "trace":
        return TraceWrite(
            str(data["call_id"]),
            float(data["at"]),
            str(data["direction"]),
            str(data["transport"]),
            str(data["peer"]),
            base64.b64decode(data["data"], validate=True),
        )
    if kind == "transcript":
        return TranscriptWrite(
            str(data["call_id"]), float(data["at"]), str(data["role"]), str(data["text"])
        )
    raise ValueError(f"unknown record kind {kind!r}")
