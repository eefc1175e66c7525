"""RTP/RTCP packet parsing and serialization (RFC 3550)."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from byeline.rtp.packet import (
    RtcpBye,
    RtcpOther,
    RtcpReceiverInfo,
    RtcpReceiverReport,
    RtcpSenderInfo,
    RtcpSenderReport,
    RtpPacket,
    is_rtcp,
    parse_rtcp,
)

# The first packet of SIPp's dtmf_2833_5.pcap: marker, PT 101, seq 0x1fdb, event 5, duration 0.
SIPP_DTMF_START = bytes.fromhex("80e51fdb0000a8c00e05384e050a0000")


def test_parse_real_packet() -> None:
    packet = RtpPacket.parse(SIPP_DTMF_START)
    assert packet.marker is True
    assert packet.payload_type == 101
    assert packet.sequence_number == 0x1FDB
    assert packet.timestamp == 0xA8C0
    assert packet.ssrc == 0x0E05384E
    assert packet.payload == bytes.fromhex("050a0000")
    assert packet.csrc == []
    assert packet.extension is None
    assert packet.serialize() == SIPP_DTMF_START


def test_round_trip_all_fields() -> None:
    packet = RtpPacket(
        payload_type=8,
        marker=True,
        sequence_number=65535,
        timestamp=0xFFFFFFFF,
        ssrc=0xDEADBEEF,
        payload=b"\xd5" * 160,
        csrc=[1, 2, 3],
        extension_profile=0xBEDE,
        extension=b"\x10\xaa\x00\x00",
        padding_size=4,
    )
    data = packet.serialize()
    assert len(data) == 12 + 12 + 4 + 4 + 160 + 4
    assert data[0] == 0x80 | 0x20 | 0x10 | 3
    assert data[-1] == 4
    assert RtpPacket.parse(data) == packet


def test_padding_is_stripped() -> None:
    header = struct.pack("!BBHII", 0xA0, 0, 1, 2, 3)
    packet = RtpPacket.parse(header + b"abc" + b"\x00\x00\x03")
    assert packet.payload == b"abc"
    assert packet.padding_size == 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "less than 12"),
        (b"\x80" * 11, "less than 12"),
        (bytes([0x40]) + bytes(11), "version 1"),
        (bytes([0x82]) + bytes(11) + bytes(4), "2 CSRCs"),
        (bytes([0x90]) + bytes(11) + b"\x00\x00", "truncated before its length"),
        (bytes([0x90]) + bytes(11) + b"\xbe\xde\x00\x02" + bytes(4), "announces 8 bytes"),
        (bytes([0xA0]) + bytes(11), "no padding octets"),
        (bytes([0xA0]) + bytes(11) + b"\x00", "padding count 0"),
        (bytes([0xA0]) + bytes(11) + b"ab\x09", "padding count 9"),
    ],
)
def test_malformed_rtp(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RtpPacket.parse(data)


def test_serialize_refuses_out_of_range() -> None:
    with pytest.raises(ValueError, match="payload type 128"):
        RtpPacket(payload_type=128).serialize()
    with pytest.raises(ValueError, match="15 CSRCs"):
        RtpPacket(csrc=list(range(16))).serialize()
    with pytest.raises(ValueError, match="multiple of 4"):
        RtpPacket(extension=b"abc").serialize()


def test_is_rtcp() -> None:
    rr = RtcpReceiverReport(ssrc=1).serialize()
    assert is_rtcp(rr)
    assert is_rtcp(bytes([0x80, 200]) + bytes(26))
    assert is_rtcp(bytes([0x81, 204]) + bytes(10))
    assert not is_rtcp(SIPP_DTMF_START)
    assert not is_rtcp(RtpPacket(payload_type=0, marker=True).serialize())
    assert not is_rtcp(RtpPacket(payload_type=8).serialize())
    assert not is_rtcp(b"\x80")
    assert not is_rtcp(bytes([0x00, 200]))  # version 0 is not RTCP


def test_rtcp_compound_round_trip() -> None:
    block = RtcpReceiverInfo(
        ssrc=7, fraction_lost=12, packets_lost=-3, highest_sequence=70000, jitter=40, lsr=5, dlsr=6
    )
    sr = RtcpSenderReport(
        ssrc=0x1234,
        sender_info=RtcpSenderInfo(
            ntp_timestamp=0x0123456789ABCDEF, rtp_timestamp=99, packet_count=10, octet_count=1600
        ),
        reports=[block],
    )
    rr = RtcpReceiverReport(ssrc=0x99, reports=[block, block])
    sdes = RtcpOther(packet_type=202, count=1, body=bytes(8))
    bye = RtcpBye(sources=[0x1234], reason="done")
    data = sr.serialize() + rr.serialize() + sdes.serialize() + bye.serialize()
    assert len(data) % 4 == 0
    assert parse_rtcp(data) == [sr, rr, sdes, bye]


def test_rtcp_loss_saturates() -> None:
    block = RtcpReceiverInfo(1, 0, 10_000_000, 0, 0, 0, 0)
    assert RtcpReceiverInfo.parse(block.serialize(), 0).packets_lost == 0x7FFFFF


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\xc9", "less than 4"),
        (bytes([0x40, 201, 0, 1]) + bytes(4), "version 1"),
        (bytes([0x80, 201, 0, 5]) + bytes(4), "announces 20 bytes"),
        (bytes([0x81, 201, 0, 1]) + bytes(4), "RR with 1 report blocks is truncated"),
        (bytes([0x81, 200, 0, 6]) + bytes(24), "SR with 1 report blocks is truncated"),
        (bytes([0x82, 203, 0, 1]) + bytes(4), "BYE with 2 sources"),
        (bytes([0x81, 203, 0, 2]) + bytes(4) + b"\x09abc", "reason is longer"),
        (bytes([0xA0, 201, 0, 0]), "padding bit set but no body"),
        (bytes([0xA0, 201, 0, 1]) + b"\x00\x00\x00\x09", "padding count 9"),
        (bytes([0x80, 201, 0, 1]) + bytes(4) + b"\x80", "truncated"),
    ],
)
def test_malformed_rtcp(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_rtcp(data)


@given(st.binary(max_size=200))
def test_rtp_parse_never_raises_other_errors(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except ValueError:
        return
    # Whatever parses serializes back to the same bytes, except padding octets' contents.
    again = packet.serialize()
    assert RtpPacket.parse(again) == packet
    if not packet.padding_size:
        assert again == data


@given(st.binary(max_size=200))
def test_rtcp_parse_never_raises_other_errors(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        parse_rtcp(data)


@given(
    payload_type=st.integers(0, 127),
    marker=st.booleans(),
    seq=st.integers(0, 0xFFFF),
    ts=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=64),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15),
    extension=st.none() | st.binary(max_size=16).map(lambda b: b + bytes(-len(b) % 4)),
    padding=st.integers(0, 255),
)
def test_rtp_round_trip_property(
    payload_type: int,
    marker: bool,
    seq: int,
    ts: int,
    ssrc: int,
    payload: bytes,
    csrc: list[int],
    extension: bytes | None,
    padding: int,
) -> None:
    packet = RtpPacket(
        payload_type, marker, seq, ts, ssrc, payload, csrc, 0x1000, extension, padding
    )
    parsed = RtpPacket.parse(packet.serialize())
    if extension is None:
        parsed.extension_profile = 0x1000  # the profile only exists on the wire with the X bit
    assert parsed == packet
