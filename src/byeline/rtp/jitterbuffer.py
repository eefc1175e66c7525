"""A fixed-delay jitter buffer for 20 ms G.711 frames, without I/O.

The caller pushes packets as they arrive and pops one frame per 20 ms tick of its own clock.
Playout is ordered by RTP sequence number: the frame for the next sequence number is returned if it
has arrived, ``None`` (conceal: play silence) if not. The buffer holds playout back by ``delay``
seconds after the first packet of a talkspurt so that packets arriving up to that much late still
play in order.

Rules:

- A packet older than the next one to play is late and dropped; a second copy is a duplicate.
- Sequence numbers compare modulo 65536 (a signed 16-bit distance), so wrap-around is seamless.
- A packet ``capacity`` or more ahead, or far behind, or whose timestamp disagrees with its
  sequence number by more than ``max_timestamp_jump`` samples (the sender restarted, or resumed
  after silence suppression), resynchronises: the buffer restarts from that packet.
- When the buffer runs dry, playout pauses instead of racing ahead: the next packet re-primes the
  delay and playout continues from it. Otherwise every packet after a pause would count as late,
  and a gap of telephone-event packets would add its length to the delay for good.
- When the sender's clock runs faster than ours the buffer grows; once it holds more than
  ``max_frames`` the oldest frames are dropped back to the target delay, which bounds latency.

Memory is bounded by ``capacity`` slots whatever arrives.
"""

from __future__ import annotations

from dataclasses import dataclass

from byeline.rtp.packet import RtpPacket

__all__ = ["JitterBuffer", "JitterBufferStats"]


@dataclass(slots=True)
class JitterBufferStats:
    """Counters for monitoring; none of them affects behaviour."""

    pushed: int = 0
    played: int = 0
    concealed: int = 0
    late: int = 0
    duplicates: int = 0
    resyncs: int = 0
    overflow_dropped: int = 0
    underruns: int = 0

    # Written out so that mypyc compiles it (the one @dataclass generates runs interpreted).
    def __init__(self) -> None:
        self.pushed = 0
        self.played = 0
        self.concealed = 0
        self.late = 0
        self.duplicates = 0
        self.resyncs = 0
        self.overflow_dropped = 0
        self.underruns = 0


class JitterBuffer:
    """Fixed-delay playout of RTP frames ordered by sequence number.

    ``delay`` is the playout delay in seconds after the first packet of a talkspurt;
    ``frame_duration`` the packet time; ``samples_per_frame`` the timestamp step per packet.
    """

    def __init__(
        self,
        *,
        delay: float = 0.06,
        capacity: int = 64,
        frame_duration: float = 0.02,
        samples_per_frame: int = 160,
        max_timestamp_jump: int = 8000,
        max_frames: int | None = None,
    ) -> None:
        if capacity < 2 or capacity & (capacity - 1) or capacity > 0x8000:
            # A power of two divides 65536, so seq % capacity stays collision-free across the
            # sequence number wrap-around.
            raise ValueError(f"jitter buffer capacity {capacity} must be a power of two, 2-32768")
        if delay < 0:
            raise ValueError(f"jitter buffer delay {delay} must not be negative")
        self.delay = delay
        self.capacity = capacity
        self.samples_per_frame = samples_per_frame
        self.max_timestamp_jump = max_timestamp_jump
        target = max(1, round(delay / frame_duration))
        self.target_frames = target
        self.max_frames = min(capacity, max_frames if max_frames is not None else 2 * target + 3)
        self.stats = JitterBufferStats()
        self._slots: list[bytes | None] = [None] * capacity
        self._count = 0
        self._next_seq = 0  # sequence number to play next
        self._newest_seq = 0  # highest sequence number stored or played
        self._last_seq = 0  # the last accepted packet, for the timestamp check
        self._last_ts = 0
        self._started = False
        self._play_at: float | None = None  # None while waiting for the first packet
        self._priming = False  # nothing played since playout was (re)armed
        self._floor = 0  # while priming, the earliest sequence number that may still play

    def __len__(self) -> int:
        """Number of frames waiting to be played."""
        return self._count

    def reset(self) -> None:
        """Drop everything, e.g. when the remote source (SSRC) changes."""
        self._slots = [None] * self.capacity
        self._count = 0
        self._started = False
        self._play_at = None

    def push(self, packet: RtpPacket, now: float) -> bool:
        """Store a packet that arrived at ``now``; return False if it was dropped."""
        seq = packet.sequence_number
        self.stats.pushed += 1
        if not self._started:
            self._restart(packet, now)
            return True
        distance = _seq_distance(seq, self._next_seq)
        ts_error = _ts_distance(
            packet.timestamp,
            self._last_ts + _seq_distance(seq, self._last_seq) * self.samples_per_frame,
        )
        if (
            distance >= self.capacity
            or distance < -self.capacity
            or (abs(ts_error) > self.max_timestamp_jump)
        ):
            self.stats.resyncs += 1
            self._restart(packet, now)
            return True
        if self._count == 0 and self._play_at is None and distance > 0:
            # Resuming after running dry: the gap before this packet is either lost or was not
            # audio (telephone events share the sequence space); waiting for it would only add
            # latency for good, so playout jumps to this packet. Until playout starts, a
            # reordered packet of the gap may still move the start back, but never before what
            # was already played.
            self._floor = self._next_seq
            self._next_seq = self._newest_seq = seq
            self._priming = True
            distance = 0
        elif (
            distance < 0
            and self._priming
            and _seq_distance(seq, self._floor) >= 0
            and _seq_distance(self._newest_seq, seq) < self.capacity
        ):
            # Nothing played yet: the first packet to arrive need not be the first one sent.
            self._next_seq = seq
            distance = 0
        if distance < 0:
            self.stats.late += 1
            return False
        index = seq % self.capacity
        if self._slots[index] is not None:
            self.stats.duplicates += 1
            return False
        self._slots[index] = packet.payload
        self._count += 1
        if _seq_distance(seq, self._newest_seq) > 0:
            self._newest_seq = seq
        self._last_seq = seq
        self._last_ts = packet.timestamp
        if self._play_at is None:
            # First packet after running dry: hold playout back by the delay again.
            self._play_at = now + self.delay
        return True

    def pop(self, now: float) -> bytes | None:
        """Return the next frame's payload at tick ``now``, or ``None`` to conceal."""
        if self._play_at is None or now < self._play_at:
            return None
        if self._count == 0:
            # Nothing to play: pause rather than advance, so a sender that paused (silence
            # suppression, hold, a slow clock) resumes in order instead of arriving "late".
            self.stats.underruns += 1
            self._play_at = None
            return None
        ahead = _seq_distance(self._newest_seq, self._next_seq) + 1
        if ahead > self.max_frames:
            for _ in range(ahead - self.target_frames):
                self._take()
                self.stats.overflow_dropped += 1
        self._priming = False
        payload = self._take()
        if payload is None:
            self.stats.concealed += 1
        else:
            self.stats.played += 1
        return payload

    def _take(self) -> bytes | None:
        index = self._next_seq % self.capacity
        payload = self._slots[index]
        if payload is not None:
            self._slots[index] = None
            self._count -= 1
        self._next_seq = (self._next_seq + 1) & 0xFFFF
        return payload

    def _restart(self, packet: RtpPacket, now: float) -> None:
        self._slots = [None] * self.capacity
        seq = packet.sequence_number
        self._slots[seq % self.capacity] = packet.payload
        self._count = 1
        self._next_seq = self._newest_seq = self._last_seq = seq
        self._last_ts = packet.timestamp
        self._started = True
        self._play_at = now + self.delay
        self._priming = True
        self._floor = (seq - self.capacity + 1) & 0xFFFF


def _seq_distance(a: int, b: int) -> int:
    """Signed distance a - b between 16-bit sequence numbers."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


def _ts_distance(a: int, b: int) -> int:
    """Signed distance a - b between 32-bit RTP timestamps."""
    return ((a - b + 0x80000000) & 0xFFFFFFFF) - 0x80000000
