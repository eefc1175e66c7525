"""Local overload control for new calls (RFC 6357 §4, "local overload control").

A UDP SIP server that falls behind does not fail at once: its socket queues the requests it
has not read, so every message waits longer.  Past T1 (500 ms) the callers retransmit their
INVITEs, ACKs wait behind them, our 2xx are retransmitted for calls whose ACK is in the queue,
and calls the caller completed end on our ACK timer: the work per call grows with the backlog,
and the backlog with the work.  Measured before this gate: at twice its capacity for 10 s,
byeline recorded 7,787 of 18,046 completed calls as ended by its own ACK timer.

A core that keeps up with SIP can still fall behind on its call records: the writer thread
shares the core (and the GIL) with the event loop, which wins.  At 2,000 calls/s on this
project's benchmark core the queue of record writes grew by ~6,000 a second.  So the gate also
refuses new INVITEs while more than ``max_records`` writes wait for the store's writer.

The gate refuses new INVITEs (503 with Retry-After) while a message waits longer than
``max_delay`` on the SIP socket before it is read, so that the calls already admitted (their
ACKs, their BYEs) keep being served well inside T1.  A refusal costs a parse and a response,
about a tenth of a call.  The wait is measured, not estimated: the transport sends itself a
time-stamped probe datagram every ``probe_interval`` (``net.sip_transport.QueueProbe``), which
waits in the queue behind everything before it.  Sans-I/O: the edge passes the wait in.
"""

from __future__ import annotations


def probe_interval(max_delay: float) -> float:
    """How often to probe the queue for a gate at ``max_delay``: a fifth of it, 10–50 ms."""
    return min(0.05, max(0.01, max_delay / 5))


class OverloadGate:
    """Admit or refuse a new INVITE from how long messages wait unread (seconds) and how many
    call-record writes wait for the database."""

    def __init__(self, max_delay: float, max_records: int = 0) -> None:
        if max_delay < 0:
            raise ValueError(f"max_delay {max_delay!r}: need >= 0 seconds (0: no gate)")
        if max_records < 0:
            raise ValueError(f"max_records {max_records!r}: need >= 0 writes (0: no limit)")
        self.max_delay = max_delay
        self.max_records = max_records
        self.delay = 0.0  # the wait when last asked
        self.records = 0  # the record writes waiting when last asked
        self.refused = 0

    @property
    def enabled(self) -> bool:
        """False when ``max_delay`` is 0: the SIP queue is not probed."""
        return self.max_delay > 0

    @property
    def active(self) -> bool:
        """Whether any limit is set: False admits every INVITE without asking."""
        return self.max_delay > 0 or self.max_records > 0

    def admit(self, delay: float, records: int = 0) -> bool:
        """Whether a new INVITE may become a call while messages wait ``delay`` seconds and
        ``records`` call-record writes wait for the store's writer.

        The second limit bounds what a core too busy to write its records keeps in memory:
        past it, a call's records would wait longer and longer to be committed (and be lost
        with the process if it died), so new calls are refused until the writer catches up.
        """
        self.delay = delay
        self.records = records
        if (self.max_delay > 0 and delay > self.max_delay) or (
            self.max_records > 0 and records > self.max_records
        ):
            self.refused += 1
            return False
        return True
