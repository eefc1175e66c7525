"""Property tests: every parser fed hostile input raises only its documented ValueError.

A short run of each (the long run is ``fuzz/run.py``).  The rule under test is the one every
sans-I/O core states: malformed input raises ``ValueError`` (or a subclass) with a reason, never
anything else, and never hangs.  Seeds come from the RFC 4475 torture messages and the test
vectors so that the mutations start close to the grammar.
"""

from __future__ import annotations

import contextlib
import json
import struct
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from byeline.agent.routes import parse_routes
from byeline.edge.trunk import parse_trunk
from byeline.rtp.dtmf import DtmfReceiver, TelephoneEvent, parse_dtmf_relay
from byeline.rtp.packet import RtpPacket, parse_rtcp
from byeline.sip import sdp
from byeline.sip.digest import (
    DigestChallenge,
    DigestChallenger,
    DigestCredentials,
    parse_auth_header,
)
from byeline.sip.message import SipParseError, StreamFramer, parse_message

ROOT = Path(__file__).resolve().parents[2]
RFC4475 = ROOT.parent / "shared" / "rfc4475"
TORTURE = [p.read_bytes() for p in sorted(RFC4475.glob("*.dat"))] if RFC4475.is_dir() else []

FAST = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

OFFER = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.5\r\ns=-\r\nc=IN IP4 192.0.2.5\r\nt=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
)
AUTH = (
    'Digest username="five9", realm="byeline", nonce="abc", uri="sip:x@y", '
    'response="0123456789abcdef0123456789abcdef", algorithm=MD5, qop=auth, nc=00000001, '
    'cnonce="xyz", opaque="op"'
)


def _mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    """Byte-level edits of ``seed``: flips, cuts, insertions of grammar-significant bytes."""
    specials = st.sampled_from(
        [
            b"\r\n",
            b"\n",
            b"\r",
            b" ",
            b"\t",
            b":",
            b";",
            b",",
            b'"',
            b"<",
            b">",
            b"\x00",
            b"\xff",
            b"%",
            b"=",
            b"[",
            b"]",
            b"\r\n\r\n",
            b"Content-Length: 99999\r\n",
            b"9" * 40,
        ]
    )

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(seed)
        for _ in range(draw(st.integers(1, 8))):
            if not data:
                data += draw(specials)
                continue
            pos = draw(st.integers(0, len(data)))
            kind = draw(st.integers(0, 3))
            if kind == 0:
                data[pos:pos] = draw(specials)
            elif kind == 1:
                del data[pos : pos + draw(st.integers(1, 16))]
            elif kind == 2 and pos < len(data):
                data[pos] = draw(st.integers(0, 255))
            else:
                data[pos:pos] = draw(st.binary(max_size=16))
        return bytes(data)

    return mutate()


def _sip_inputs() -> st.SearchStrategy[bytes]:
    seeds = TORTURE or [b"OPTIONS sip:a@b SIP/2.0\r\n\r\n"]
    return st.one_of(
        st.binary(max_size=512),
        st.sampled_from(seeds),
        st.sampled_from(seeds).flatmap(_mutations),
    )


# -- SIP message and stream framing ---------------------------------------------------------


@FAST
@given(_sip_inputs(), st.booleans())
def test_parse_message_raises_only_sip_parse_error(data: bytes, stream: bool) -> None:
    try:
        message = parse_message(data, stream=stream)
    except SipParseError as exc:
        assert exc.status in (400, 505)
        return
    # Whatever parsed serializes back without an injected line (the echo path of a 400/200).
    try:
        wire = message.serialize()
    except ValueError:
        return
    assert b"\r\n\r\n" in wire


@FAST
@given(st.lists(_sip_inputs(), max_size=4), st.integers(1, 64))
def test_stream_framer_raises_only_sip_parse_error(chunks: list[bytes], split: int) -> None:
    framer = StreamFramer()
    joined = b"".join(chunks)
    out: list[bytes] = []
    try:
        for i in range(0, len(joined), split):
            framer.feed(joined[i : i + split])
            out.extend(framer.messages())
    except SipParseError:
        return
    assert sum(map(len, out)) <= len(joined)
    for message in out:
        with contextlib.suppress(SipParseError):
            parse_message(message, stream=True)


# -- SDP ------------------------------------------------------------------------------------


@FAST
@given(st.one_of(st.binary(max_size=400), _mutations(OFFER)))
def test_sdp_parse_and_answer_raise_only_value_error(data: bytes) -> None:
    try:
        offer = sdp.SessionDescription.parse(data)
    except ValueError:
        return
    try:
        negotiated = sdp.answer_offer(
            offer, media_ip="127.0.0.1", media_port=4000, session_id=1, session_version=1
        )
    except ValueError:
        return
    # Our answer is always parseable by ourselves.
    sdp.SessionDescription.parse(negotiated.sdp)


# -- RTP, RTCP, RFC 4733, dtmf-relay ----------------------------------------------------------


RTP_SEED = struct.pack("!BBHII", 0x80, 101, 1, 160, 0x1234) + b"\x05\x0a\x00\xa0"
RTCP_SEED = (
    struct.pack("!BBHI", 0x80, 200, 6, 1) + bytes(20) + struct.pack("!BBHI", 0x81, 203, 1, 1)
)


@FAST
@given(st.one_of(st.binary(max_size=200), _mutations(RTP_SEED), _mutations(RTCP_SEED)))
def test_rtp_and_rtcp_parse_raise_only_value_error(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        RtpPacket.parse(data)
    with contextlib.suppress(ValueError):
        parse_rtcp(data)


@FAST
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.binary(max_size=8)), max_size=20))
def test_telephone_event_and_receiver_raise_only_value_error(
    packets: list[tuple[int, bytes]],
) -> None:
    receiver = DtmfReceiver()
    for timestamp, payload in packets:
        with contextlib.suppress(ValueError):
            TelephoneEvent.parse(payload)
        try:
            digit = receiver.receive_payload(timestamp, payload)
        except ValueError:
            continue
        assert digit is None or digit.digit in "0123456789*#ABCD"


@FAST
@given(st.one_of(st.binary(max_size=120), _mutations(b"Signal=5\r\nDuration=160\r\n")))
def test_dtmf_relay_never_raises(body: bytes) -> None:
    digit = parse_dtmf_relay(body)
    assert digit is None or (len(digit) == 1 and digit in "0123456789*#ABCD")


# -- Digest ---------------------------------------------------------------------------------


def _text(seed: str) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=200),
        _mutations(seed.encode()).map(lambda b: b.decode("utf-8", "replace")),
    )


@FAST
@given(_text(AUTH))
def test_digest_parsers_raise_only_value_error(value: str) -> None:
    for parse in (parse_auth_header, DigestCredentials.parse, DigestChallenge.parse):
        with contextlib.suppress(ValueError):
            parse(value)


@FAST
@given(_text(AUTH), st.sampled_from(["INVITE", "BYE", "", "IN\x00VITE"]))
def test_digest_verify_never_raises(value: str, method: str) -> None:
    challenger = DigestChallenger("byeline", b"k" * 32)
    verification = challenger.verify(method, value, "five9", "secret", 1000.0)
    assert not verification.ok


# -- Configuration loaders (files an operator or a tool may hand us) ----------------------------

json_like: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)

TRUNK_KEYS = st.sampled_from(
    [
        "name",
        "numbers",
        "allowed_addresses",
        "allowed_numbers",
        "auth_username",
        "auth_password",
        "headers",
        "headers_to_attributes",
        "attributes_to_headers",
        "include_headers",
        "media_encryption",
        "krisp_enabled",
        "ringing_timeout",
        "max_call_duration",
        "metadata",
        "trunk_id",
        "bogus",
    ]
)


@FAST
@given(
    st.one_of(
        json_like,
        st.dictionaries(TRUNK_KEYS, json_like, max_size=5).map(lambda t: {"trunk": t}),
    )
)
def test_parse_trunk_raises_only_value_error(data: Any) -> None:
    with contextlib.suppress(ValueError):
        parse_trunk(data)


ROUTE_KEYS = st.sampled_from(
    ["name", "dtmf", "phrases", "type", "value", "reason", "goodbye", "prompt", "x"]
)
TOP_KEYS = st.sampled_from(
    [
        "routes",
        "greeting",
        "result_attributes",
        "fallback",
        "on_shutdown",
        "no_input_timeout",
        "max_attempts",
        "x",
    ]
)


@FAST
@given(
    st.one_of(
        json_like,
        st.dictionaries(
            TOP_KEYS,
            st.one_of(json_like, st.lists(st.dictionaries(ROUTE_KEYS, json_like, max_size=6))),
            max_size=5,
        ),
    )
)
def test_parse_routes_raises_only_value_error(data: Any) -> None:
    with contextlib.suppress(ValueError):
        parse_routes(data)


@FAST
@given(st.text(max_size=40))
@example("")
def test_json_roundtrip_of_trunk_names(name: str) -> None:
    """A trunk name of any text either loads or is refused with a reason, never a crash."""
    doc = {"trunk": {"name": name, "allowed_addresses": ["127.0.0.1"]}}
    try:
        parse_trunk(json.loads(json.dumps(doc)))
    except ValueError as exc:
        assert str(exc)
