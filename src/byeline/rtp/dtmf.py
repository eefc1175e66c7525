"""DTMF as RFC 4733 telephone events in RTP, and as SIP INFO ``application/dtmf-relay`` bodies.

``DtmfReceiver`` turns the packets of a telephone-event stream into one ``DtmfDigit`` per key press;
``DtmfSender`` produces the packet sequence for one key press. Both are pure: the media stream owns
sequence numbers, timestamps and the clock.
"""

from __future__ import annotations

import re
import struct
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from byeline.rtp.packet import RtpPacket

__all__ = [
    "DTMF_EVENTS",
    "DtmfDigit",
    "DtmfPacket",
    "DtmfReceiver",
    "DtmfSender",
    "TelephoneEvent",
    "digit_to_event",
    "event_to_digit",
    "parse_dtmf_relay",
]

DTMF_EVENTS: Final = "0123456789*#ABCD"
"""The DTMF characters in RFC 4733 event-code order: event ``n`` is ``DTMF_EVENTS[n]``."""

_TELEPHONE_EVENT: Final = struct.Struct("!BBH")
_MAX_DURATION: Final = 0xFFFF


def event_to_digit(event: int) -> str | None:
    """Return the DTMF character of an RFC 4733 event code, or ``None`` for other events."""
    return DTMF_EVENTS[event] if 0 <= event < len(DTMF_EVENTS) else None


def digit_to_event(digit: str) -> int:
    """Return the RFC 4733 event code of a DTMF character (case-insensitive for A-D)."""
    event = DTMF_EVENTS.find(digit.upper()) if len(digit) == 1 else -1
    if event < 0:
        raise ValueError(f"{digit!r} is not a DTMF digit (0-9, *, #, A-D)")
    return event


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """The 4-byte RFC 4733 telephone-event payload (section 2.3).

    ``duration`` is in RTP timestamp units since the event's timestamp; ``volume`` is the power
    level in -dBm0 (0-63).
    """

    event: int
    end: bool = False
    volume: int = 10
    duration: int = 0

    @classmethod
    def parse(cls, data: bytes) -> TelephoneEvent:
        """Parse a telephone-event payload; raise ``ValueError`` if it is shorter than 4 bytes.

        Bytes after the first four are ignored: some gateways pad the payload, and RFC 4733 only
        defines one event per plain (non-RFC 2198) payload. The reserved bit is ignored on receipt
        as section 2.3.3 requires.
        """
        if len(data) < 4:
            raise ValueError(f"telephone-event payload is {len(data)} bytes, expected 4")
        event, flags, duration = _TELEPHONE_EVENT.unpack_from(data)
        return TelephoneEvent(
            event=event, end=bool(flags & 0x80), volume=flags & 0x3F, duration=duration
        )

    def serialize(self) -> bytes:
        """Return the 4-byte payload; raise ``ValueError`` for fields out of range."""
        if not 0 <= self.event <= 255:
            raise ValueError(f"telephone-event code {self.event} is not in 0-255")
        if not 0 <= self.volume <= 63:
            raise ValueError(f"telephone-event volume {self.volume} is not in 0-63")
        if not 0 <= self.duration <= _MAX_DURATION:
            raise ValueError(f"telephone-event duration {self.duration} is not in 0-65535")
        flags = (0x80 if self.end else 0) | self.volume
        return _TELEPHONE_EVENT.pack(self.event, flags, self.duration)


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    """A key press recognised on the receive side.

    ``timestamp`` is the RTP timestamp of the event (its start), ``duration`` the longest duration
    seen so far in timestamp units (it may be short when the digit is reported at its start).
    """

    digit: str
    timestamp: int
    duration: int
    volume: int


class DtmfReceiver:
    """Report each RFC 4733 event exactly once from its stream of packets.

    A sender repeats an event in many packets with one RTP timestamp (start, updates, then three
    end packets), so events are keyed by timestamp: the first packet of a timestamp not seen
    before reports the digit at once (the agent wants the key press without waiting for the
    release), and every later packet of that timestamp is a duplicate. This also covers a lost
    start, when only updates or end packets arrive, and reordered stragglers of an older event,
    because the last few timestamps are remembered. A long event that the sender splits into
    segments of 65535 units (section 2.5.1.3) continues with timestamp ``previous + 65535`` and
    the same event code; it is not reported again.

    Call ``reset()`` when the remote SSRC changes: the timestamp space starts over.
    """

    def __init__(self, history: int = 16) -> None:
        self._seen: deque[int] = deque(maxlen=history)
        self._last_timestamp: int | None = None
        self._last_event: TelephoneEvent | None = None
        self.duplicates = 0
        """Packets that belonged to an event already reported."""

    def reset(self) -> None:
        """Forget every event (new source)."""
        self._seen.clear()
        self._last_timestamp = None
        self._last_event = None

    def receive(self, packet: RtpPacket) -> DtmfDigit | None:
        """Feed one telephone-event packet; return the digit when it starts a new event.

        Raises ``ValueError`` for a malformed payload. Events that are not DTMF digits (flash,
        tones) are tracked for deduplication but return ``None``.
        """
        return self.receive_payload(packet.timestamp, packet.payload)

    def receive_payload(self, timestamp: int, payload: bytes) -> DtmfDigit | None:
        """Like ``receive`` for the RTP timestamp and payload of a packet."""
        event = TelephoneEvent.parse(payload)
        if timestamp in self._seen:
            self.duplicates += 1
            if timestamp == self._last_timestamp:
                self._last_event = event
            return None
        previous = self._last_event
        continuation = (
            previous is not None
            and self._last_timestamp is not None
            and not previous.end
            and previous.event == event.event
            and timestamp == (self._last_timestamp + _MAX_DURATION) & 0xFFFFFFFF
        )
        self._seen.append(timestamp)
        self._last_timestamp = timestamp
        self._last_event = event
        if continuation:
            return None
        digit = event_to_digit(event.event)
        if digit is None:
            return None
        return DtmfDigit(digit, timestamp, event.duration, event.volume)


@dataclass(frozen=True, slots=True)
class DtmfPacket:
    """One packet of an outgoing event: the stream adds sequence number, SSRC and payload type."""

    payload: bytes
    marker: bool
    timestamp: int
    duration: int
    end: bool


class DtmfSender:
    """The packet sequence of one key press, one packet per ``packet_ms`` (section 2.5.1).

    All packets carry the event's start ``timestamp``. The first has the marker bit and one
    packet time of duration; updates grow the duration; the end of the tone is sent three times
    with the final duration, as section 2.5.1.4 recommends against loss. A 100 ms tone at 20 ms
    gives durations 160, 320, 480, 640, then 800 three times with the end bit: 7 packets, i.e. the
    sender occupies 7 packet slots of the stream.
    """

    END_REPEATS: Final = 3

    def __init__(
        self,
        digit: str,
        timestamp: int,
        *,
        duration_ms: int = 100,
        volume: int = 10,
        clock_rate: int = 8000,
        packet_ms: int = 20,
    ) -> None:
        self.event = digit_to_event(digit)
        self.digit = DTMF_EVENTS[self.event]
        self.timestamp = timestamp & 0xFFFFFFFF
        if not 0 <= volume <= 63:
            raise ValueError(f"telephone-event volume {volume} is not in 0-63")
        if packet_ms <= 0:
            raise ValueError(f"packet interval {packet_ms} ms must be positive")
        step = clock_rate * packet_ms // 1000
        total = clock_rate * duration_ms // 1000
        if total < step:
            raise ValueError(f"DTMF duration {duration_ms} ms is shorter than one packet")
        if total > _MAX_DURATION:
            raise ValueError(f"DTMF duration {duration_ms} ms exceeds one event segment")
        self.volume = volume
        self._step = step
        self._total = total

    def __iter__(self) -> Iterator[DtmfPacket]:
        return iter(self.packets())

    def __len__(self) -> int:
        return len(self.packets())

    def packets(self) -> list[DtmfPacket]:
        """Return every packet of the key press in sending order."""
        packets: list[DtmfPacket] = []
        duration = self._step
        while duration < self._total:
            packets.append(self._packet(duration, end=False, marker=not packets))
            duration += self._step
        for _ in range(self.END_REPEATS):
            packets.append(self._packet(self._total, end=True, marker=not packets))
        return packets

    def _packet(self, duration: int, *, end: bool, marker: bool) -> DtmfPacket:
        payload = TelephoneEvent(self.event, end, self.volume, duration).serialize()
        return DtmfPacket(payload, marker, self.timestamp, duration, end)


# One "Signal=<value>" line; [ \t] rather than \s so that the match cannot run into the next line.
_RELAY_SIGNAL: Final = re.compile(
    rb"^[ \t]*signal[ \t]*=[ \t]*(\S+)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE
)
# Cisco and others send the flash as "!" or event 16; other digits must map onto DTMF_EVENTS.
_RELAY_NAMES: Final = {b"10": "*", b"11": "#", b"12": "A", b"13": "B", b"14": "C", b"15": "D"}


def parse_dtmf_relay(body: bytes) -> str | None:
    """Return the digit of a SIP INFO ``application/dtmf-relay`` body, or ``None``.

    The body is ``Signal=5`` and ``Duration=160`` lines (CRLF or LF). Some endpoints send ``*``
    and ``#`` as event numbers 10 and 11; those are accepted too. ``None`` means no DTMF signal
    (a flash, a missing or unknown Signal line).
    """
    match = _RELAY_SIGNAL.search(body)
    if match is None:
        return None
    value = match.group(1)
    if value in _RELAY_NAMES:
        return _RELAY_NAMES[value]
    if len(value) == 1:
        index = DTMF_EVENTS.find(value.decode("latin-1").upper())
        if index >= 0:
            return DTMF_EVENTS[index]
    return None
