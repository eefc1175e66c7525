"""The exception and the carrier type of :mod:`byeline.net.ports`, kept apart from it.

``ports`` is compiled with mypyc, which compiles neither subclasses of built-in exceptions nor
``Protocol`` classes; here they stay plain Python and ``ports`` re-exports them.
"""

from __future__ import annotations

from typing import Protocol


class PortRangeExhausted(RuntimeError):
    """No RTP port of the range could be bound."""


class Carrier(Protocol):
    """What carries a parked port: its open transport (asyncio's ``close`` is enough)."""

    def close(self) -> None: ...
