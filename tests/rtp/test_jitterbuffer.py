"""Fixed-delay jitter buffer."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from byeline.rtp.jitterbuffer import JitterBuffer
from byeline.rtp.packet import RtpPacket

TICK = 0.02


def rtp(seq: int, ts: int | None = None) -> RtpPacket:
    seq &= 0xFFFF
    timestamp = (seq * 160 if ts is None else ts) & 0xFFFFFFFF
    return RtpPacket(sequence_number=seq, timestamp=timestamp, payload=seq.to_bytes(2, "big"))


def label(payload: bytes | None) -> int | None:
    return None if payload is None else int.from_bytes(payload, "big")


def test_holds_back_by_delay_then_plays_in_order() -> None:
    jb = JitterBuffer(delay=0.06)
    jb.push(rtp(10), 0.0)
    assert jb.pop(0.02) is None
    assert jb.pop(0.04) is None
    jb.push(rtp(12), 0.045)
    jb.push(rtp(11), 0.05)  # reordered
    assert [label(jb.pop(t)) for t in (0.06, 0.08, 0.10)] == [10, 11, 12]
    assert jb.stats.played == 3


def test_loss_is_concealed_and_late_packet_dropped() -> None:
    jb = JitterBuffer(delay=0.04)
    for seq in (1, 3):
        jb.push(rtp(seq), 0.0)
    assert label(jb.pop(0.04)) == 1
    assert jb.pop(0.06) is None  # 2 is missing: conceal
    assert jb.stats.concealed == 1
    assert jb.push(rtp(2), 0.065) is False  # too late now
    assert jb.stats.late == 1
    assert label(jb.pop(0.08)) == 3


def test_duplicates_dropped() -> None:
    jb = JitterBuffer()
    assert jb.push(rtp(5), 0.0)
    assert jb.push(rtp(6), 0.0)
    assert jb.push(rtp(6), 0.001) is False
    assert jb.stats.duplicates == 1
    assert len(jb) == 2


def test_sequence_wrap_around() -> None:
    jb = JitterBuffer(delay=0.12)
    seqs = [65533, 65535, 65534, 0, 2, 1]
    for i, seq in enumerate(seqs):
        jb.push(rtp(seq, ts=1000 + ((seq - 65533) & 0xFFFF) * 160), i * 0.001)
    played = [label(jb.pop(0.12 + i * TICK)) for i in range(6)]
    assert played == [65533, 65534, 65535, 0, 1, 2]
    assert jb.stats.resyncs == 0


def test_timestamp_jump_resyncs() -> None:
    jb = JitterBuffer(delay=0.02)
    jb.push(rtp(1, ts=160), 0.0)
    jb.push(rtp(2, ts=320), 0.0)
    # Contiguous sequence number but a timestamp 10 s later: the sender restarted its clock.
    jb.push(rtp(3, ts=320 + 80_000), 0.01)
    assert jb.stats.resyncs == 1
    assert len(jb) == 1
    assert label(jb.pop(0.03)) == 3


def test_sequence_jump_resyncs() -> None:
    jb = JitterBuffer(delay=0.02, capacity=16)
    jb.push(rtp(100), 0.0)
    jb.push(rtp(5000), 0.001)
    assert jb.stats.resyncs == 1
    assert label(jb.pop(0.03)) == 5000


def test_reordered_first_packets_during_resume() -> None:
    jb = JitterBuffer(delay=0.04)
    jb.push(rtp(1), 0.0)
    assert label(jb.pop(0.04)) == 1
    assert jb.pop(0.06) is None  # dry
    jb.push(rtp(5), 0.07)
    jb.push(rtp(4), 0.075)  # reordered: may still play, playout has not restarted
    jb.push(rtp(1), 0.076)  # already played: late
    assert jb.stats.late == 1
    assert [label(jb.pop(t)) for t in (0.12, 0.14)] == [4, 5]


def test_resumes_in_order_after_running_dry() -> None:
    jb = JitterBuffer(delay=0.04)
    jb.push(rtp(1), 0.0)
    assert label(jb.pop(0.04)) == 1
    # The sender pauses for 10 ticks (silence suppression / telephone events take seq 2-8).
    for i in range(10):
        assert jb.pop(0.06 + i * TICK) is None
    assert jb.stats.underruns == 1
    jb.push(rtp(9), 0.3)
    jb.push(rtp(10), 0.31)
    # Re-primed by the delay, then the resumed audio plays without waiting for 2-8.
    assert jb.pop(0.32) is None
    assert [label(jb.pop(t)) for t in (0.34, 0.36)] == [9, 10]
    assert jb.stats.late == 0


def test_overflow_drops_oldest_to_bound_latency() -> None:
    jb = JitterBuffer(delay=0.04, capacity=64)  # target 2 frames, max 7
    for seq in range(20):
        jb.push(rtp(seq), 0.0)
    assert label(jb.pop(0.05)) == 18
    assert jb.stats.overflow_dropped == 18
    assert label(jb.pop(0.07)) == 19


def test_memory_is_bounded() -> None:
    jb = JitterBuffer(capacity=8)
    for seq in range(1000):
        jb.push(rtp(seq * 3), seq * 0.001)
        assert len(jb) <= 8


def test_reset() -> None:
    jb = JitterBuffer(delay=0.0)
    jb.push(rtp(7), 0.0)
    jb.reset()
    assert len(jb) == 0
    assert jb.pop(1.0) is None
    jb.push(rtp(30000), 1.0)
    assert label(jb.pop(1.0)) == 30000


def test_bad_configuration() -> None:
    with pytest.raises(ValueError, match="power of two"):
        JitterBuffer(capacity=50)
    with pytest.raises(ValueError, match="must not be negative"):
        JitterBuffer(delay=-1)


@given(
    st.lists(
        st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.booleans()),
        max_size=200,
    )
)
def test_never_fails_and_stays_bounded(events: list[tuple[int, int, bool]]) -> None:
    jb = JitterBuffer(capacity=16)
    now = 0.0
    for seq, ts, pop in events:
        now += 0.01
        if pop:
            jb.pop(now)
        else:
            jb.push(RtpPacket(sequence_number=seq, timestamp=ts, payload=b"x"), now)
        assert 0 <= len(jb) <= 16


@given(st.permutations(list(range(12))), st.integers(0, 0xFFFF))
def test_any_reordering_within_delay_plays_in_order(order: list[int], start: int) -> None:
    # The first packet to arrive need not be the first sent; nothing is late before playout.
    jb = JitterBuffer(delay=0.3)
    for i, offset in enumerate(order):
        jb.push(rtp(start + offset, ts=(start + offset) * 160), i * 0.001)
    played = [label(jb.pop(0.3 + i * TICK)) for i in range(12)]
    assert played == [(start + i) & 0xFFFF for i in range(12)]
