"""RFC 4733 telephone events, the receiver against SIPp's captures, and SIP INFO dtmf-relay."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from byeline.rtp.dtmf import (
    DtmfDigit,
    DtmfReceiver,
    DtmfSender,
    TelephoneEvent,
    digit_to_event,
    event_to_digit,
    parse_dtmf_relay,
)
from byeline.rtp.packet import RtpPacket

SIPP_CAPTURES = Path("/usr/share/sip-tester")


def pcap_udp_payloads(path: Path) -> Iterator[bytes]:
    """Yield the UDP payloads of a classic libpcap file of Ethernet/IPv4/UDP frames."""
    data = path.read_bytes()
    magic = data[:4]
    if magic == b"\xd4\xc3\xb2\xa1":
        endian = "<"
    elif magic == b"\xa1\xb2\xc3\xd4":
        endian = ">"
    else:
        raise ValueError(f"{path} is not a classic pcap file")
    (linktype,) = struct.unpack_from(endian + "I", data, 20)
    assert linktype == 1, "Ethernet"
    offset = 24
    while offset + 16 <= len(data):
        _, _, captured, _ = struct.unpack_from(endian + "IIII", data, offset)
        frame = data[offset + 16 : offset + 16 + captured]
        offset += 16 + captured
        (ethertype,) = struct.unpack_from("!H", frame, 12)
        if ethertype != 0x0800:
            continue
        ip = frame[14:]
        header_length = (ip[0] & 0x0F) * 4
        if ip[9] != 17:  # UDP
            continue
        udp = ip[header_length:]
        (udp_length,) = struct.unpack_from("!H", udp, 4)
        yield udp[8:udp_length]


CAPTURE_DIGITS = {str(d): str(d) for d in range(10)} | {"star": "*", "pound": "#"}


@pytest.mark.parametrize("name", sorted(CAPTURE_DIGITS))
def test_receiver_on_sipp_capture(name: str) -> None:
    path = SIPP_CAPTURES / f"dtmf_2833_{name}.pcap"
    if not path.exists():
        pytest.skip(f"{path} not installed (Debian package sip-tester)")
    receiver = DtmfReceiver()
    digits: list[DtmfDigit] = []
    packets = [RtpPacket.parse(payload) for payload in pcap_udp_payloads(path)]
    assert len(packets) == 10  # 7 updates and 3 redundant end packets
    for packet in packets:
        digit = receiver.receive(packet)
        if digit is not None:
            digits.append(digit)
    assert [d.digit for d in digits] == [CAPTURE_DIGITS[name]]
    assert receiver.duplicates == 9
    # Without the start (and all updates): the end packets alone still give the digit once.
    receiver = DtmfReceiver()
    tail = [receiver.receive(packet) for packet in packets[-3:]]
    assert [d.digit for d in tail if d is not None] == [CAPTURE_DIGITS[name]]


def test_telephone_event_round_trip() -> None:
    event = TelephoneEvent(event=11, end=True, volume=63, duration=65535)
    assert event.serialize() == b"\x0b\xbf\xff\xff"
    assert TelephoneEvent.parse(event.serialize()) == event
    # The reserved bit is ignored, extra bytes too.
    assert TelephoneEvent.parse(b"\x05\x4a\x00\xa0\x00") == TelephoneEvent(5, False, 10, 160)


def test_telephone_event_errors() -> None:
    with pytest.raises(ValueError, match="3 bytes, expected 4"):
        TelephoneEvent.parse(b"\x01\x02\x03")
    with pytest.raises(ValueError, match="volume 64"):
        TelephoneEvent(1, volume=64).serialize()
    with pytest.raises(ValueError, match="duration 65536"):
        TelephoneEvent(1, duration=65536).serialize()
    with pytest.raises(ValueError, match="code 256"):
        TelephoneEvent(256).serialize()


def test_event_digit_mapping() -> None:
    assert [event_to_digit(e) for e in range(16)] == list("0123456789*#ABCD")
    assert event_to_digit(16) is None  # flash
    assert digit_to_event("#") == 11
    assert digit_to_event("d") == 15
    with pytest.raises(ValueError, match="'E' is not a DTMF digit"):
        digit_to_event("E")
    with pytest.raises(ValueError, match="not a DTMF digit"):
        digit_to_event("12")


def packet(ts: int, event: int, end: bool = False, duration: int = 160, seq: int = 0) -> RtpPacket:
    payload = TelephoneEvent(event, end, 10, duration).serialize()
    return RtpPacket(payload_type=101, timestamp=ts, sequence_number=seq, payload=payload)


def test_receiver_new_timestamp_is_new_event() -> None:
    receiver = DtmfReceiver()
    got = []
    for ts in (1000, 2600):
        for duration in (160, 320, 480):
            got.append(receiver.receive(packet(ts, 1, duration=duration)))
        for _ in range(3):
            got.append(receiver.receive(packet(ts, 1, end=True, duration=480)))
    digits = [d for d in got if d is not None]
    assert [(d.digit, d.timestamp) for d in digits] == [("1", 1000), ("1", 2600)]


def test_receiver_ignores_reordered_straggler_of_older_event() -> None:
    receiver = DtmfReceiver()
    assert receiver.receive(packet(1000, 4)) is not None
    assert receiver.receive(packet(2000, 5)) is not None
    assert receiver.receive(packet(1000, 4, end=True)) is None


def test_receiver_long_event_segments_are_one_digit() -> None:
    receiver = DtmfReceiver()
    assert receiver.receive(packet(5000, 0, duration=65535)) is not None
    # RFC 4733 2.5.1.3: the next segment starts at timestamp + 65535 with the same event.
    assert receiver.receive(packet(5000 + 65535, 0, duration=160)) is None
    assert receiver.receive(packet(5000 + 65535, 0, end=True, duration=800)) is None
    # A later press of the same key after the end is a new digit.
    assert receiver.receive(packet(5000 + 2 * 65535, 0)) is not None


def test_receiver_non_digit_events_and_reset() -> None:
    receiver = DtmfReceiver()
    assert receiver.receive(packet(10, 16)) is None  # flash
    assert receiver.receive(packet(20, 3)) is not None
    receiver.reset()
    assert receiver.receive(packet(20, 3)) is not None  # a new source may reuse the timestamp
    with pytest.raises(ValueError):
        receiver.receive(RtpPacket(payload_type=101, payload=b"\x01"))


def test_sender_default_sequence() -> None:
    sender = DtmfSender("5", timestamp=0xFFFFFF00)
    packets = sender.packets()
    assert len(sender) == 7
    assert [p.duration for p in packets] == [160, 320, 480, 640, 800, 800, 800]
    assert [p.end for p in packets] == [False] * 4 + [True] * 3
    assert [p.marker for p in packets] == [True] + [False] * 6
    assert {p.timestamp for p in packets} == {0xFFFFFF00}
    events = [TelephoneEvent.parse(p.payload) for p in packets]
    assert {e.event for e in events} == {5}
    assert events[-1] == TelephoneEvent(5, True, 10, 800)


def test_sender_to_receiver_round_trip() -> None:
    receiver = DtmfReceiver()
    digits = []
    for timestamp, key in enumerate("0123456789*#ABCD"):
        for p in DtmfSender(key, timestamp * 10_000, duration_ms=60):
            rtp = RtpPacket(payload_type=101, timestamp=p.timestamp, payload=p.payload)
            digit = receiver.receive(rtp)
            if digit is not None:
                digits.append(digit.digit)
    assert "".join(digits) == "0123456789*#ABCD"


def test_sender_errors() -> None:
    with pytest.raises(ValueError, match="shorter than one packet"):
        DtmfSender("1", 0, duration_ms=10)
    with pytest.raises(ValueError, match="exceeds one event segment"):
        DtmfSender("1", 0, duration_ms=9000)
    with pytest.raises(ValueError, match="not a DTMF digit"):
        DtmfSender("x", 0)
    with pytest.raises(ValueError, match="volume 99"):
        DtmfSender("1", 0, volume=99)


@pytest.mark.parametrize(
    ("body", "digit"),
    [
        (b"Signal=5\r\nDuration=160\r\n", "5"),
        (b"Signal=5\r\nDuration=160", "5"),
        (b"signal = *\nduration=100\n", "*"),
        (b"Signal=#\r\nDuration=250\r\n", "#"),
        (b"Duration=160\r\nSignal=d\r\n", "D"),
        (b"Signal=10\r\nDuration=160\r\n", "*"),
        (b"Signal=11\r\n", "#"),
        (b"Signal=16\r\nDuration=160\r\n", None),
        (b"Signal=!\r\n", None),
        (b"Duration=160\r\n", None),
        (b"", None),
        (b"Signal=\r\nDuration=160", None),
    ],
)
def test_parse_dtmf_relay(body: bytes, digit: str | None) -> None:
    assert parse_dtmf_relay(body) == digit


@given(st.binary(max_size=8))
def test_telephone_event_parse_robust(data: bytes) -> None:
    try:
        event = TelephoneEvent.parse(data)
    except ValueError:
        assert len(data) < 4
        return
    assert event.serialize() == bytes([data[0], data[1] & 0xBF]) + data[2:4]


@given(st.binary(max_size=64))
def test_parse_dtmf_relay_robust(body: bytes) -> None:
    result = parse_dtmf_relay(body)
    assert result is None or result in "0123456789*#ABCD"
