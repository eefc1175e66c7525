"""Random bytes for tags, branches and identifiers, drawn from the OS in blocks.

RFC 3261 §19.3 wants tags and Call-IDs cryptographically random; ``os.urandom`` is, but it
costs a ``getrandom`` system call each time, and a call needs several (To tag, call id, SDP
session id).  The bytes here come from the same source, read 4 kB at a time and handed out
once each.  A forked child starts with an empty pool, so parent and child never share bytes.
"""

from __future__ import annotations

import os
import threading
from typing import Final

__all__ = ["random_bytes", "random_hex"]

_BLOCK: Final = 4096
_pool = b""  # the current block; bytes before _used have been handed out
_used = _BLOCK
_lock = threading.Lock()


def _forget() -> None:
    global _lock, _pool, _used
    _lock = threading.Lock()  # a lock held by another thread at fork would never be released
    _pool, _used = b"", _BLOCK


os.register_at_fork(after_in_child=_forget)


def random_bytes(n: int) -> bytes:
    """``n`` bytes from the OS's CSPRNG, never handed out twice."""
    global _pool, _used
    if n > _BLOCK:
        return os.urandom(n)
    lock = _lock
    lock.acquire()  # not "with": in the compiled module that is four generic calls more
    try:
        start = _used
        if start + n > _BLOCK:
            _pool, start = os.urandom(_BLOCK), 0
        _used = start + n
        return _pool[start : start + n]
    finally:
        lock.release()


def random_hex(n: int) -> str:
    """``n`` random bytes as ``2n`` hex digits."""
    return random_bytes(n).hex()
