"""The sans-I/O media stream: receive side, statistics, timeout, send side and DTMF."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from byeline.rtp.dtmf import DtmfReceiver, TelephoneEvent
from byeline.rtp.g711 import PCMA, PCMU, alaw_encode, ulaw_decode, ulaw_encode
from byeline.rtp.packet import RtcpBye, RtcpReceiverReport, RtpPacket
from byeline.rtp.stream import RELATCH_QUIET, MediaStream

SDP = ("192.0.2.10", 20000)
NAT = ("198.51.100.7", 31000)
TONE = (np.sin(np.arange(160) / 4) * 8000).astype("<i2").tobytes()


def audio(seq: int, ts: int | None = None, ssrc: int = 0x1111, pt: int = PCMU) -> bytes:
    timestamp = seq * 160 if ts is None else ts
    return RtpPacket(
        payload_type=pt,
        sequence_number=seq & 0xFFFF,
        timestamp=timestamp & 0xFFFFFFFF,
        ssrc=ssrc,
        payload=ulaw_encode(TONE),
    ).serialize()


def event(ts: int, digit_event: int, end: bool = False, seq: int = 0) -> bytes:
    return RtpPacket(
        payload_type=101,
        sequence_number=seq,
        timestamp=ts,
        ssrc=0x1111,
        payload=TelephoneEvent(digit_event, end, 10, 160).serialize(),
    ).serialize()


def make_stream(**options: object) -> MediaStream:
    return MediaStream(remote_address=SDP, rng=random.Random(1), **options)  # type: ignore[arg-type]


def test_symmetric_rtp_latches_first_valid_packet() -> None:
    stream = make_stream()
    assert stream.remote_address == SDP
    stream.receive(b"garbage", ("203.0.113.1", 1), 0.0)  # invalid: must not latch
    stream.receive(audio(1, pt=9), ("203.0.113.1", 1), 0.0)  # wrong payload type: no latch
    assert stream.remote_address == SDP
    assert not stream.latched
    stream.receive(audio(1), NAT, 0.0)
    assert stream.latched
    assert stream.remote_address == NAT
    # Another address can no longer take over.
    stream.receive(audio(2), ("203.0.113.1", 1), 0.02)
    assert stream.remote_address == NAT
    assert stream.foreign_source == 1
    assert stream.statistics.packets_received == 1
    # A new SDP (re-INVITE) unlatches.
    stream.set_remote_address(SDP)
    stream.receive(audio(3), SDP, 0.04)
    assert stream.remote_address == SDP


def test_without_symmetric_rtp_sdp_address_wins() -> None:
    stream = make_stream(symmetric_rtp=False)
    stream.receive(audio(1), NAT, 0.0)
    stream.receive(audio(2), NAT, 0.02)
    assert stream.remote_address == SDP
    assert stream.remote_source == NAT
    assert stream.statistics.packets_received == 2
    stream.receive(audio(3), ("203.0.113.1", 1), 0.04)  # only the latched source is accepted
    assert stream.foreign_source == 1
    stream.receive(audio(4), SDP, 0.06)  # the SDP address too, but not while NAT is talking
    assert stream.foreign_source == 2
    stream.receive(audio(5), SDP, 0.02 + RELATCH_QUIET)  # NAT silent since 0.02 s: it takes over
    assert stream.remote_source == SDP
    assert stream.relatched_to_sdp == 1


def test_stale_sender_on_a_reused_port_cannot_lock_out_the_sdp_peer() -> None:
    # A previous call's peer still sends to this port: its packet arrives first and latches.
    stream = make_stream()
    stale = ("192.0.2.99", 40000)
    stream.receive(audio(1, ssrc=0xDEAD), stale, 0.0)
    assert stream.remote_address == stale
    # The caller the SDP names starts sending; once the stale sender is quiet, it takes over,
    # both ways.
    stream.receive(audio(500, ssrc=0xBEEF), SDP, 0.02)
    assert stream.remote_source == stale and stream.foreign_source == 1
    stream.receive(audio(501, ssrc=0xBEEF), SDP, RELATCH_QUIET)
    stream.receive(audio(502, ssrc=0xBEEF), SDP, RELATCH_QUIET + 0.02)
    assert stream.remote_source == SDP
    assert stream.remote_address == SDP
    assert stream.remote_ssrc == 0xBEEF
    # The stale sender is now the foreign one.
    stream.receive(audio(2, ssrc=0xDEAD), stale, RELATCH_QUIET + 0.04)
    assert stream.foreign_source == 2
    assert stream.relatched_to_sdp == 1


def test_a_spoofed_packet_from_the_sdp_address_cannot_take_a_talking_peer() -> None:
    stream = make_stream()
    for i in range(5):
        stream.receive(audio(i), NAT, 0.02 * i)  # the peer behind NAT talks
    stream.receive(audio(900, ssrc=0x666), SDP, 0.09)
    assert stream.remote_source == NAT
    assert stream.relatched_to_sdp == 0


def test_no_sdp_address_learns_from_first_packet() -> None:
    stream = MediaStream(remote_address=None, symmetric_rtp=False)
    assert stream.remote_address is None
    stream.receive(audio(1), NAT, 0.0)
    assert stream.remote_address == NAT


def test_rtcp_and_malformed_are_ignored() -> None:
    stream = make_stream()
    stream.receive(RtcpReceiverReport(ssrc=5).serialize(), NAT, 0.0)
    stream.receive(RtcpBye([5]).serialize(), NAT, 0.0)
    stream.receive(b"\x80\x00", NAT, 0.0)
    assert not stream.media_started
    stream.receive(event(100, 1)[:14], NAT, 0.0)  # valid RTP, truncated telephone event
    assert stream.rtcp_received == 2
    assert stream.malformed == 2


def test_audio_goes_through_the_jitter_buffer() -> None:
    stream = make_stream(jitter_delay=0.04)
    stream.receive(audio(2), SDP, 0.001)
    stream.receive(audio(1), SDP, 0.002)
    assert stream.pop_pcm(0.02) is None  # priming
    assert stream.pop_pcm(0.042) == ulaw_decode(ulaw_encode(TONE))
    assert stream.pop_audio(0.062) == ulaw_encode(TONE)
    assert stream.pop_audio(0.082) is None


def test_dtmf_reported_once() -> None:
    stream = make_stream()
    digits = [stream.receive(event(8000, 11, seq=s), SDP, s * 0.02) for s in range(5)]
    digits += [stream.receive(event(8000, 11, end=True, seq=5 + s), SDP, 0.1) for s in range(3)]
    assert [d.digit for d in digits if d is not None] == ["#"]


def test_dtmf_not_negotiated_is_unknown_payload() -> None:
    stream = make_stream(telephone_event_pt=None)
    assert stream.receive(event(8000, 1), SDP, 0.0) is None
    assert stream.unknown_payload_type == 1
    with pytest.raises(ValueError, match="not negotiated"):
        stream.send_dtmf("1")


def test_statistics_loss_and_wrap() -> None:
    stream = make_stream()
    now = 0.0
    for seq in [*range(65530, 65536), *range(0, 10)]:
        if seq in (65534, 3, 4):
            continue  # lost
        stream.receive(audio(seq, ts=seq * 160 if seq > 100 else (seq + 65536) * 160), SDP, now)
        now += 0.02
    stats = stream.statistics
    assert stats.packets_expected == 16
    assert stats.packets_received == 13
    assert stats.packets_lost == 3
    assert stats.highest_sequence == 65536 + 9
    # The timestamps follow the arrival times except where packets were lost (the clock went on).
    assert stats.jitter_ms < 20


def test_jitter_estimate_matches_rfc3550() -> None:
    stream = make_stream()
    # Packets every 20 ms of media, arriving alternately 0 and 10 ms late.
    for i in range(200):
        stream.receive(audio(i), SDP, i * 0.02 + (0.01 if i % 2 else 0.0))
    # |D| is 80 timestamp units every packet, so J converges to 80 units = 10 ms.
    assert stream.statistics.jitter == pytest.approx(80, rel=0.01)
    assert stream.statistics.jitter_ms == pytest.approx(10, rel=0.01)


def test_duplicates_make_loss_negative() -> None:
    stream = make_stream()
    for _ in range(3):
        stream.receive(audio(1), SDP, 0.0)
    assert stream.statistics.packets_lost == -2


def test_sender_restart_after_two_sequential_packets() -> None:
    stream = make_stream()
    for seq in range(10):
        stream.receive(audio(seq), SDP, seq * 0.02)
    stream.receive(audio(40000), SDP, 0.3)  # big jump: not believed yet
    assert stream.statistics.packets_received == 10
    stream.receive(audio(40001), SDP, 0.32)  # sequential: the source restarted
    stats = stream.statistics
    assert stats.packets_received == 1
    assert stats.packets_expected == 1


def test_ssrc_change_resets_source_state() -> None:
    stream = make_stream(jitter_delay=0.0)
    for seq in range(5):
        stream.receive(audio(seq, ssrc=1), SDP, seq * 0.02)
    stream.receive(audio(9000, ssrc=2), SDP, 0.1)
    assert stream.ssrc_changes == 1
    assert stream.remote_ssrc == 2
    assert stream.statistics.packets_received == 1
    # A late straggler of the old source is ignored rather than switching back.
    stream.receive(audio(5, ssrc=1), SDP, 0.11)
    assert stream.remote_ssrc == 2
    assert stream.stale_source == 1
    assert len(stream.jitter_buffer) == 1
    # Much later the old source is believed to be back.
    stream.receive(audio(6, ssrc=1), SDP, 5.0)
    assert stream.remote_ssrc == 1
    assert stream.ssrc_changes == 2


def test_media_timeout_and_hold() -> None:
    stream = make_stream(timeout=5.0)
    assert not stream.media_timeout(100.0)  # media never started
    stream.receive(audio(1), SDP, 10.0)
    assert not stream.media_timeout(14.9)
    assert stream.media_timeout(15.0)
    stream.set_on_hold(True, 15.0)
    assert not stream.media_timeout(60.0)
    stream.set_on_hold(False, 60.0)
    assert not stream.media_timeout(64.0)
    assert stream.media_timeout(65.0)
    stream.receive(audio(2), SDP, 65.5)
    assert not stream.media_timeout(66.0)


def test_comfort_noise_keeps_media_alive() -> None:
    stream = make_stream(timeout=1.0)
    stream.receive(audio(1), SDP, 0.0)
    stream.receive(
        RtpPacket(payload_type=13, sequence_number=2, timestamp=320, ssrc=0x1111).serialize(),
        SDP,
        0.9,
    )
    assert not stream.media_timeout(1.5)
    assert len(stream.jitter_buffer) == 1


def test_packetize_sequence_timestamp_marker() -> None:
    stream = MediaStream(rng=random.Random(7))
    seq0, ts0, ssrc = stream.sequence_number, stream.timestamp, stream.ssrc
    first = RtpPacket.parse(stream.packetize(TONE))
    second = RtpPacket.parse(stream.packetize(ulaw_encode(TONE), encoded=True))
    assert (first.sequence_number, first.timestamp, first.ssrc) == (seq0, ts0, ssrc)
    assert first.marker and not second.marker
    assert second.sequence_number == (seq0 + 1) & 0xFFFF
    assert second.timestamp == (ts0 + 160) & 0xFFFFFFFF
    assert first.payload == second.payload == ulaw_encode(TONE)
    stream.skip(5)  # silence suppressed for 100 ms
    third = RtpPacket.parse(stream.packetize(TONE))
    assert third.marker
    assert third.timestamp == (ts0 + 7 * 160) & 0xFFFFFFFF
    assert third.sequence_number == (seq0 + 2) & 0xFFFF
    forced = RtpPacket.parse(stream.packetize(TONE, marker=True))
    assert forced.marker
    assert stream.packets_sent == 4
    assert stream.octets_sent == 640


def test_packetize_pcma_and_odd_sizes() -> None:
    stream = MediaStream(payload_type=PCMA)
    packet = RtpPacket.parse(stream.packetize(TONE[:80]))  # a 5 ms frame is allowed
    assert packet.payload_type == PCMA
    assert packet.payload == alaw_encode(TONE[:80])
    assert stream.timestamp == (packet.timestamp + 40) & 0xFFFFFFFF


def test_random_starts_differ() -> None:
    a, b = MediaStream(), MediaStream()
    assert (a.ssrc, a.sequence_number, a.timestamp) != (b.ssrc, b.sequence_number, b.timestamp)


def test_sequence_and_timestamp_wrap_on_send() -> None:
    stream = MediaStream()
    stream.sequence_number = 0xFFFF
    stream.timestamp = 0xFFFFFFFF - 100
    stream.packetize(TONE)
    assert stream.sequence_number == 0
    assert stream.timestamp == 59


def test_dtmf_send_shares_sequence_and_timestamp_space() -> None:
    stream = MediaStream(telephone_event_pt=101, rng=random.Random(3))
    stream.packetize(TONE)
    seq0, ts0 = stream.sequence_number, stream.timestamp
    stream.send_dtmf("7")
    stream.send_dtmf("#", duration_ms=40)
    assert stream.dtmf_pending
    packets = []
    while (data := stream.next_dtmf_packet()) is not None:
        packets.append(RtpPacket.parse(data))
    assert not stream.dtmf_pending
    assert len(packets) == 7 + 4
    assert [p.sequence_number for p in packets] == [(seq0 + i) & 0xFFFF for i in range(11)]
    assert {p.payload_type for p in packets} == {101}
    assert {p.timestamp for p in packets[:7]} == {ts0}
    assert {p.timestamp for p in packets[7:]} == {(ts0 + 7 * 160) & 0xFFFFFFFF}
    assert [p.marker for p in packets] == [True] + [False] * 6 + [True] + [False] * 3
    # Audio resumes with the clock having moved on, as a new talkspurt.
    after = RtpPacket.parse(stream.packetize(TONE))
    assert after.timestamp == (ts0 + 11 * 160) & 0xFFFFFFFF
    assert after.marker
    # And a receiver gets exactly the two digits.
    receiver = DtmfReceiver()
    got = [receiver.receive(p) for p in packets]
    assert [d.digit for d in got if d is not None] == ["7", "#"]


def test_send_dtmf_validates_digit_now() -> None:
    stream = MediaStream()
    with pytest.raises(ValueError, match="not a DTMF digit"):
        stream.send_dtmf("x")
    assert not stream.dtmf_pending


def test_bad_configuration() -> None:
    with pytest.raises(ValueError, match=r"not G\.711"):
        MediaStream(payload_type=18)
    with pytest.raises(ValueError, match="96-127"):
        MediaStream(telephone_event_pt=13)


def test_round_trip_between_two_streams() -> None:
    alice = MediaStream(remote_address=("10.0.0.2", 4000), jitter_delay=0.04)
    bob = MediaStream(remote_address=("10.0.0.1", 5000), jitter_delay=0.04)
    sent = [(np.full(160, 1000 * i, dtype="<i2")).tobytes() for i in range(10)]
    received = []
    for i, frame in enumerate(sent):
        bob.receive(alice.packetize(frame), ("10.0.0.1", 5000), i * 0.02)
        received.append(bob.pop_pcm(i * 0.02 + 0.001))
    alice.send_dtmf("3")
    digits = []
    for i in range(7):
        data = alice.next_dtmf_packet()
        assert data is not None
        digits.append(bob.receive(data, ("10.0.0.1", 5000), 0.2 + i * 0.02))
        received.append(bob.pop_pcm(0.2 + i * 0.02 + 0.001))
    assert [d.digit for d in digits if d is not None] == ["3"]
    # The delay of 40 ms shows as two silent ticks before the first frame.
    assert received[:2] == [None, None]
    assert [r for r in received if r is not None] == [ulaw_decode(ulaw_encode(f)) for f in sent]
    assert bob.statistics.packets_lost == 0


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=40), max_size=30))
def test_receive_never_raises(datagrams: list[bytes]) -> None:
    stream = make_stream()
    for i, data in enumerate(datagrams):
        stream.receive(data, SDP, i * 0.01)
        stream.pop_audio(i * 0.01)
