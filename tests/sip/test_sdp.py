"""SDP parsing/writing and offer/answer with real-world offers."""

from __future__ import annotations

import contextlib
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from byeline.sip.sdp import (
    Attribute,
    Connection,
    Direction,
    MediaSession,
    Negotiated,
    NoCommonCodec,
    RtpMap,
    SessionDescription,
    UnsupportedProfile,
    _answer_description,
    _rendered_answer,
    accept_answer,
    answer_offer,
    create_offer,
)

# A Five9-style offer (Five9 media gateway behind the trunk): G.711 both laws, RFC 4733 DTMF.
FIVE9_OFFER = (
    b"v=0\r\n"
    b"o=Five9 1687345523 1687345523 IN IP4 198.51.100.20\r\n"
    b"s=Five9 SIP\r\n"
    b"c=IN IP4 198.51.100.20\r\n"
    b"t=0 0\r\n"
    b"m=audio 26514 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)

# SIPp's built-in uac scenario (LF-only as in the scenario XML, no rtpmap for static PT 0).
SIPP_UAC_OFFER = (
    b"v=0\n"
    b"o=user1 53655765 2353687637 IN IP4 127.0.0.1\n"
    b"s=-\n"
    b"c=IN IP4 127.0.0.1\n"
    b"t=0 0\n"
    b"m=audio 6000 RTP/AVP 0\n"
    b"a=rtpmap:0 PCMU/8000\n"
)

G729_ONLY_OFFER = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 18 101\r\na=rtpmap:18 G729/8000\r\na=fmtp:18 annexb=no\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
)

IPV6_OFFER = (
    b"v=0\r\no=- 7 7 IN IP6 2001:db8::10\r\ns=-\r\nc=IN IP6 2001:db8::10\r\nt=0 0\r\n"
    b"m=audio 30000 RTP/AVP 8 0 96\r\na=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-15\r\n"
)

VIDEO_OFFER = (
    b"v=0\r\no=- 20518 0 IN IP4 203.0.113.1\r\ns=-\r\nc=IN IP4 203.0.113.1\r\nt=0 0\r\n"
    b"m=video 51372 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
    b"m=audio 49170 RTP/AVP 8 0\r\nc=IN IP4 203.0.113.2\r\n"
    b"m=application 5000 UDP/BFCP *\r\n"
)

SAVP_OFFER = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/SAVP 0 8\r\n"
    b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 "
    b"inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4\r\n"
)


def answer_as_us(
    offer: bytes | SessionDescription,
    *,
    media_ip: str = "192.0.2.99",
    supported: tuple[str, ...] = ("PCMU", "PCMA"),
) -> Negotiated:
    """Negotiated with our fixed media address and o= values."""
    return answer_offer(
        offer,
        media_ip=media_ip,
        media_port=20000,
        supported=supported,
        session_id=42,
        session_version=1,
    )


def test_parse_five9_offer_fields() -> None:
    sdp = SessionDescription.parse(FIVE9_OFFER)
    assert sdp.origin.username == "Five9"
    assert sdp.origin.session_version == 1687345523
    assert sdp.connection == Connection("198.51.100.20")
    (audio,) = sdp.media
    assert (audio.media, audio.port, audio.proto, audio.formats) == (
        "audio",
        26514,
        "RTP/AVP",
        ("0", "8", "101"),
    )
    assert [c.encoding for c in audio.codecs()] == ["PCMU", "PCMA", "telephone-event"]
    assert audio.fmtp(101) == "0-16"
    assert audio.ptime == 20
    assert audio.direction is Direction.SENDRECV
    assert sdp.serialize() == FIVE9_OFFER


def test_parse_lf_only_and_round_trip_to_crlf() -> None:
    sdp = SessionDescription.parse(SIPP_UAC_OFFER)
    assert sdp.serialize() == SIPP_UAC_OFFER.replace(b"\n", b"\r\n")


def test_unknown_lines_and_attributes_preserved_in_rfc_order() -> None:
    text = (
        "v=0\r\no=- 1 2 IN IP4 192.0.2.1\r\ns=x\r\ni=info\r\nc=IN IP4 192.0.2.1\r\n"
        "b=AS:64\r\nt=0 0\r\na=tool:foo\r\na=group:BUNDLE 0\r\n"
        "m=audio 1 RTP/AVP 0\r\ni=media info\r\nb=TIAS:64000\r\na=rtcp:2\r\n"
        "a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:abc\r\na=x-custom\r\n"
    )
    sdp = SessionDescription.parse(text)
    assert sdp.serialize().decode() == text
    assert sdp.media[0].crypto == ["1 AES_CM_128_HMAC_SHA1_32 inline:abc"]
    assert Attribute("x-custom") in sdp.media[0].attributes


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "first line must be v="),
        ("o=- 1 1 IN IP4 1.2.3.4\r\n", "first line must be v="),
        ("v=1\r\n", "larger than 0"),
        ("v=0\r\ns=-\r\n", "no o= line"),
        ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n", "no s= line"),
        ("v=0\r\no=- x 1 IN IP4 1.2.3.4\r\ns=-\r\n", "line 2: o= session id"),
        ("v=0\r\no=- 1 1 IN IP4\r\ns=-\r\n", "o= needs 6 fields"),
        ("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nm=audio 70000 RTP/AVP 0\r\n", "m= port"),
        ("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nm=audio\r\n", "m= needs"),
        ("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nc=IN IP4\r\n", "c= needs 3"),
        ("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\na=:x\r\n", "attribute name"),
        ("v=0\r\nhello\r\n", "line 2: not '<letter>=<value>'"),
        ("v=0\r\nv=0\r\n", "v= appears twice"),
        ("v=0\r\no=- 1 1 IN IP4 a\r\no=- 1 1 IN IP4 a\r\ns=-\r\n", "o= appears twice"),
        ("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\ns=-\r\n", "s= appears twice"),
        ("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nc=IN IP4 a\r\nc=IN IP4 b\r\n", "c= appears twice"),
        ("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\na=x\ry\r\n", "CR or NUL inside"),
        ("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nm=audio 1 RTP/AVP 0\r\ns=x\r\n", "not allowed"),
    ],
)
def test_parse_errors_are_precise(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SessionDescription.parse(text)


def test_serialize_refuses_line_breaks_in_values() -> None:
    sdp = SessionDescription.parse(SIPP_UAC_OFFER)
    for bad in (
        replace(sdp, session_name="x\r\na=injected"),
        replace(sdp, attributes=(Attribute("tool", "a\nb"),)),
        replace(sdp, attributes=(Attribute("bad name"),)),
        replace(sdp, origin=replace(sdp.origin, username="a b")),
        replace(sdp, connection=Connection("")),
        replace(sdp, media=(replace(sdp.media[0], formats=("0 8",)),)),
    ):
        with pytest.raises(ValueError):
            bad.serialize()


def test_parse_rejects_non_utf8() -> None:
    with pytest.raises(ValueError, match="not UTF-8"):
        SessionDescription.parse(b"v=0\r\ns=\xff\r\n")


def test_rtpmap_parse() -> None:
    assert RtpMap.parse("101 telephone-event/8000") == RtpMap(101, "telephone-event", 8000)
    assert RtpMap.parse("97 opus/48000/2").channels == 2
    for bad in ("x PCMU/8000", "0 PCMU", "0 /8000", "200 PCMU/8000"):
        with pytest.raises(ValueError):
            RtpMap.parse(bad)


# -- answer_offer ---------------------------------------------------------------------------


def test_answer_five9_offer() -> None:
    answer = answer_as_us(FIVE9_OFFER)
    assert (answer.codec, answer.payload_type, answer.clock_rate) == ("PCMU", 0, 8000)
    assert answer.telephone_event_pt == 101
    assert answer.remote_rtp == ("198.51.100.20", 26514)
    assert answer.direction is Direction.SENDRECV
    assert not answer.on_hold
    assert answer.remote_ptime == 20
    assert answer.sdp == (
        b"v=0\r\n"
        b"o=byeline 42 1 IN IP4 192.0.2.99\r\n"
        b"s=byeline\r\n"
        b"c=IN IP4 192.0.2.99\r\n"
        b"t=0 0\r\n"
        b"m=audio 20000 RTP/AVP 0 101\r\n"
        b"a=rtpmap:0 PCMU/8000\r\n"
        b"a=rtpmap:101 telephone-event/8000\r\n"
        b"a=fmtp:101 0-16\r\n"
        b"a=ptime:20\r\n"
        b"a=sendrecv\r\n"
    )


def test_answer_follows_offerer_preference() -> None:
    offer = FIVE9_OFFER.replace(b"RTP/AVP 0 8 101", b"RTP/AVP 8 0 101")
    assert answer_as_us(offer).codec == "PCMA"
    # Our own list only filters; its order does not override the offerer's.
    assert answer_as_us(offer, supported=("PCMU", "PCMA")).payload_type == 8
    assert answer_as_us(offer, supported=("PCMU",)).payload_type == 0


def test_answer_sipp_default_uac() -> None:
    answer = answer_as_us(SIPP_UAC_OFFER)
    assert (answer.codec, answer.payload_type) == ("PCMU", 0)
    assert answer.telephone_event_pt is None
    assert answer.remote_rtp == ("127.0.0.1", 6000)
    assert answer.remote_ptime is None
    assert b"m=audio 20000 RTP/AVP 0\r\n" in answer.sdp
    assert b"telephone-event" not in answer.sdp


def test_static_payload_type_without_rtpmap() -> None:
    offer = SIPP_UAC_OFFER.replace(b"a=rtpmap:0 PCMU/8000\n", b"").replace(b" 0\n", b" 8\n")
    assert answer_as_us(offer).codec == "PCMA"


def test_g729_only_is_no_common_codec() -> None:
    with pytest.raises(NoCommonCodec, match="G729/8000"):
        answer_as_us(G729_ONLY_OFFER)
    assert issubclass(NoCommonCodec, ValueError)


def test_ipv6_offer_and_ipv6_answer() -> None:
    answer = answer_as_us(IPV6_OFFER, media_ip="2001:db8::99")
    assert answer.remote_rtp == ("2001:db8::10", 30000)
    assert (answer.codec, answer.telephone_event_pt) == ("PCMA", 96)
    assert b"c=IN IP6 2001:db8::99\r\n" in answer.sdp
    assert b"o=byeline 42 1 IN IP6 2001:db8::99\r\n" in answer.sdp
    assert b"a=rtpmap:8 PCMA/8000\r\n" in answer.sdp


def test_other_m_lines_rejected_with_port_zero() -> None:
    answer = answer_as_us(VIDEO_OFFER)
    # media-level c= wins over session-level
    assert answer.remote_rtp == ("203.0.113.2", 49170)
    sdp = SessionDescription.parse(answer.sdp)
    assert [(m.media, m.port, m.proto, m.formats) for m in sdp.media] == [
        ("video", 0, "RTP/AVP", ("96",)),
        ("audio", 20000, "RTP/AVP", ("8",)),
        ("application", 0, "UDP/BFCP", ("*",)),
    ]


def test_second_audio_line_rejected() -> None:
    offer = FIVE9_OFFER + b"m=audio 26516 RTP/AVP 0\r\n"
    sdp = SessionDescription.parse(answer_as_us(offer).sdp)
    assert [m.port for m in sdp.media] == [20000, 0]


def test_savp_only_is_unsupported_profile() -> None:
    with pytest.raises(UnsupportedProfile, match="RTP/SAVP"):
        answer_as_us(SAVP_OFFER)
    assert SessionDescription.parse(SAVP_OFFER).media[0].crypto[0].startswith("1 AES_CM")


def test_savp_plus_avp_alternative_answers_the_avp_line() -> None:
    offer = SAVP_OFFER + b"m=audio 4002 RTP/AVP 8\r\n"
    answer = answer_as_us(offer)
    assert answer.remote_rtp == ("192.0.2.1", 4002)
    assert [m.port for m in SessionDescription.parse(answer.sdp).media] == [0, 20000]


def test_no_audio_at_all() -> None:
    offer = VIDEO_OFFER.replace(b"m=audio 49170", b"m=audio 0")
    with pytest.raises(NoCommonCodec, match="no active audio"):
        answer_as_us(offer)


def test_missing_connection_is_value_error() -> None:
    offer = SIPP_UAC_OFFER.replace(b"c=IN IP4 127.0.0.1\n", b"")
    with pytest.raises(ValueError, match="no c= line"):
        answer_as_us(offer)


@pytest.mark.parametrize(
    ("offered", "answered", "on_hold"),
    [
        (b"a=sendrecv", Direction.SENDRECV, False),
        (b"a=sendonly", Direction.RECVONLY, True),
        (b"a=recvonly", Direction.SENDONLY, False),
        (b"a=inactive", Direction.INACTIVE, True),
    ],
)
def test_direction_mirrors_offer(offered: bytes, answered: Direction, on_hold: bool) -> None:
    answer = answer_as_us(FIVE9_OFFER.replace(b"a=sendrecv", offered))
    assert answer.direction is answered
    assert answer.on_hold is on_hold
    assert f"a={answered}\r\n".encode() in answer.sdp


def test_session_level_direction_applies() -> None:
    offer = FIVE9_OFFER.replace(b"a=sendrecv\r\n", b"").replace(
        b"t=0 0\r\n", b"t=0 0\r\na=sendonly\r\n"
    )
    assert answer_as_us(offer).direction is Direction.RECVONLY


def test_old_style_hold_c_zero() -> None:
    offer = FIVE9_OFFER.replace(b"c=IN IP4 198.51.100.20", b"c=IN IP4 0.0.0.0")
    answer = answer_as_us(offer)
    assert answer.on_hold
    assert answer.direction is Direction.RECVONLY
    assert answer.remote_rtp == ("0.0.0.0", 26514)


# -- late offer ------------------------------------------------------------------------------


def test_create_offer_default() -> None:
    offer = create_offer("192.0.2.99", 20000, session_id=5, session_version=5)
    assert offer == (
        b"v=0\r\n"
        b"o=byeline 5 5 IN IP4 192.0.2.99\r\n"
        b"s=byeline\r\n"
        b"c=IN IP4 192.0.2.99\r\n"
        b"t=0 0\r\n"
        b"m=audio 20000 RTP/AVP 0 8 101\r\n"
        b"a=rtpmap:0 PCMU/8000\r\n"
        b"a=rtpmap:8 PCMA/8000\r\n"
        b"a=rtpmap:101 telephone-event/8000\r\n"
        b"a=fmtp:101 0-16\r\n"
        b"a=ptime:20\r\n"
        b"a=sendrecv\r\n"
    )


def test_create_offer_validation() -> None:
    with pytest.raises(ValueError, match="opus"):
        create_offer("192.0.2.99", 20000, session_id=1, session_version=1, supported=("opus",))
    with pytest.raises(ValueError, match="dynamic"):
        create_offer("192.0.2.99", 20000, session_id=1, session_version=1, telephone_event_pt=8)
    with pytest.raises(ValueError):
        create_offer("not-an-ip", 20000, session_id=1, session_version=1)
    with pytest.raises(ValueError, match="port"):
        create_offer("192.0.2.99", 0, session_id=1, session_version=1)


def test_late_offer_round_trip() -> None:
    """We offer in the 200 OK; the peer (running our own answerer) answers in the ACK."""
    offer = create_offer("192.0.2.99", 20000, session_id=5, session_version=5)
    peer = answer_offer(
        offer, media_ip="198.51.100.20", media_port=26514, session_id=9, session_version=9
    )
    ours = accept_answer(offer, peer.sdp)
    assert (ours.codec, ours.payload_type, ours.telephone_event_pt) == ("PCMU", 0, 101)
    assert ours.remote_rtp == ("198.51.100.20", 26514)
    assert ours.direction is Direction.SENDRECV and not ours.on_hold
    assert ours.sdp == peer.sdp


def test_accept_answer_uses_answerer_order_and_pt() -> None:
    offer = create_offer("192.0.2.99", 20000, session_id=5, session_version=5)
    answer = (
        b"v=0\r\no=- 1 1 IN IP4 198.51.100.20\r\ns=-\r\nc=IN IP4 198.51.100.20\r\nt=0 0\r\n"
        b"m=audio 3000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendonly\r\n"
    )
    result = accept_answer(offer, answer)
    assert (result.codec, result.telephone_event_pt) == ("PCMA", 101)
    assert result.direction is Direction.RECVONLY and result.on_hold


def test_accept_answer_errors() -> None:
    offer = create_offer("192.0.2.99", 20000, session_id=5, session_version=5)
    head = b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\n"
    with pytest.raises(NoCommonCodec, match="rejected"):
        accept_answer(offer, head + b"m=audio 0 RTP/AVP 0\r\n")
    with pytest.raises(NoCommonCodec, match="none of the offered"):
        accept_answer(offer, head + b"m=audio 3000 RTP/AVP 18\r\n")
    with pytest.raises(UnsupportedProfile):
        accept_answer(offer, head + b"m=audio 3000 RTP/SAVP 0\r\n")
    with pytest.raises(ValueError, match="2 m= lines"):
        accept_answer(offer, head + b"m=audio 3000 RTP/AVP 0\r\nm=video 0 RTP/AVP 96\r\n")


# -- MediaSession: versions across re-INVITEs, hold and resume -------------------------------


def _version(sdp: bytes) -> int:
    return SessionDescription.parse(sdp).origin.session_version


def test_answer_alias() -> None:
    from byeline.sip import sdp

    assert sdp.Answer is Negotiated


def test_media_session_remote_hold_resume() -> None:
    session = MediaSession("192.0.2.99", 20000, session_id=77, session_version=3)
    first = session.answer(FIVE9_OFFER)
    assert _version(first.sdp) == 3

    refresh = session.answer(FIVE9_OFFER)  # session refresh: same SDP, same version
    assert refresh.sdp == first.sdp

    held = session.answer(FIVE9_OFFER.replace(b"a=sendrecv", b"a=sendonly"))
    assert held.on_hold and held.direction is Direction.RECVONLY
    assert _version(held.sdp) == 4

    old_style = session.answer(
        FIVE9_OFFER.replace(b"IN IP4 198.51.100.20\r\nt", b"IN IP4 0.0.0.0\r\nt")
    )
    assert old_style.on_hold and _version(old_style.sdp) == 4  # same answer as before

    resumed = session.answer(FIVE9_OFFER)
    assert not resumed.on_hold and resumed.direction is Direction.SENDRECV
    assert _version(resumed.sdp) == 5
    assert session.negotiated == resumed
    assert SessionDescription.parse(resumed.sdp).origin.session_id == 77


def test_media_session_late_offer_then_our_hold() -> None:
    session = MediaSession(media_ip="192.0.2.99", media_port=20000)
    offer = session.offer()
    assert _version(offer) == 0
    peer = MediaSession("198.51.100.20", 26514, session_id=1)
    result = session.accept_answer(peer.answer(offer).sdp)
    assert result.direction is Direction.SENDRECV

    hold = session.hold()
    assert session.holding and _version(hold) == 1 and b"a=sendonly" in hold
    peer_answer = peer.answer(hold)
    assert peer_answer.on_hold and peer_answer.direction is Direction.RECVONLY
    ours = session.accept_answer(peer_answer.sdp)
    assert ours.direction is Direction.SENDONLY and not ours.on_hold

    # While we hold, an offer from the peer is answered sendonly.
    answered = session.answer(FIVE9_OFFER)
    assert answered.direction is Direction.SENDONLY

    resume = session.resume()
    assert not session.holding and b"a=sendrecv" in resume
    assert _version(resume) > _version(hold)
    assert session.accept_answer(peer.answer(resume).sdp).direction is Direction.SENDRECV

    with pytest.raises(ValueError, match="no offer"):
        session.accept_answer(peer_answer.sdp)


# -- fuzzing ---------------------------------------------------------------------------------

SAMPLES = [FIVE9_OFFER, SIPP_UAC_OFFER, G729_ONLY_OFFER, IPV6_OFFER, VIDEO_OFFER, SAVP_OFFER]


@st.composite
def mutated_sdp(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 8))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        chunk = draw(
            st.sampled_from([b" ", b"\r", b"\n", b"=", b":", b"/", b"0", b"9", b"a", b"\x00"])
            | st.binary(min_size=1, max_size=4)
        )
        if op == "insert":
            data[pos:pos] = chunk
        elif op == "delete":
            del data[pos : pos + len(chunk)]
        else:
            data[pos : pos + len(chunk)] = chunk
    return bytes(data)


def _exercise(data: bytes) -> None:
    try:
        sdp = SessionDescription.parse(data)
    except ValueError:
        return
    first = sdp.serialize()
    assert SessionDescription.parse(first).serialize() == first
    for media in sdp.media:
        with contextlib.suppress(ValueError):
            media.codecs()
            _ = media.ptime
    result: Negotiated | None = None
    with contextlib.suppress(ValueError):
        result = answer_as_us(sdp)
    if result is not None:
        SessionDescription.parse(result.sdp)


@given(st.one_of(st.binary(max_size=300), mutated_sdp()))
def test_fuzz_only_value_error(data: bytes) -> None:
    _exercise(data)


_FORMATS = st.sampled_from(["0", "8", "101", "18", "", "1 2", "9\x00", "x\ny"])
_ATTRIBUTES = st.builds(
    Attribute,
    st.sampled_from(["rtpmap", "fmtp", "ptime", "sendrecv", "crypto", "a b", "", "x:y"]),
    st.none() | st.sampled_from(["0 PCMU/8000", "101 0-16", "20", "", "x\r\ny", "a\x00"]),
)


@given(
    st.one_of(st.sampled_from(SAMPLES), mutated_sdp()),
    st.data(),
)
def test_rendered_answer_is_the_answer_description_serialised(
    offer_bytes: bytes, data: st.DataObject
) -> None:
    """The answer written straight from its parts is the description's serialisation, byte for
    byte, and is None (the description's path then names the fault) where that one refuses."""
    try:
        offer = SessionDescription.parse(offer_bytes)
    except ValueError:
        return
    if not offer.media:
        return
    args = (
        offer,
        data.draw(st.integers(0, len(offer.media) - 1)),
        data.draw(st.sampled_from(["192.0.2.1", "2001:db8::5", "127.0.0.1"])),
        data.draw(st.integers(1, 65535)),
        data.draw(st.integers(0, 2**64 - 1)),
        data.draw(st.integers(0, 2**64 - 1)),
        data.draw(st.lists(_FORMATS, max_size=3)),
        data.draw(st.lists(_ATTRIBUTES, max_size=5)),
    )
    rendered = _rendered_answer(*args)
    try:
        expected = _answer_description(*args).serialize()
    except ValueError:
        assert rendered is None
        return
    assert rendered == expected


@given(st.text(max_size=300))
def test_fuzz_text_only_value_error(text: str) -> None:
    _exercise(text.encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize(
    ("address", "held"),
    [
        ("0.0.0.0", True),
        ("0.0.0.0/127", True),
        ("::", True),
        ("0:0::0", True),
        ("0:0:0:0:0:0:0:0", True),
        ("10.0.0.1", False),
        ("0.0.0.1", False),
        ("00.0.0.0", False),  # not an address (leading zero)
        ("::1", False),
        ("media.example.com", False),
        ("", False),
    ],
)
def test_hold_address_is_the_unspecified_one(address: str, held: bool) -> None:
    addrtype = "IP6" if ":" in address else "IP4"
    assert Connection(address, addrtype).is_hold_address is held


def test_parses_remembered_across_offers_stay_exact() -> None:
    """Codec lines and attribute names are parsed or checked once, then shared (bounded)."""
    first = SessionDescription.parse(FIVE9_OFFER).media[0].codecs()
    second = SessionDescription.parse(FIVE9_OFFER).media[0].codecs()
    assert first == second
    assert all(a is b for a, b in zip(first, second, strict=True))  # the same frozen RtpMaps
    # What was remembered never lets a bad line through.
    bad_rtpmap = FIVE9_OFFER.replace(b"a=rtpmap:8 PCMA/8000", b"a=rtpmap:8 PCMA")
    with pytest.raises(ValueError, match="rtpmap"):
        SessionDescription.parse(bad_rtpmap).media[0].codecs()
    with pytest.raises(ValueError, match="not a token"):
        SessionDescription.parse(FIVE9_OFFER.replace(b"a=sendrecv", b"a=send(recv"))
    with pytest.raises(ValueError, match="not a token"):
        Attribute("send recv").serialize()
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        Attribute("fmtp", "101 0-16\r\nm=video").serialize()
    # A long codec line is parsed every time, not kept.
    long_name = "x" * 200
    offer = FIVE9_OFFER.replace(b"PCMA/8000", f"{long_name}/8000".encode())
    codecs = SessionDescription.parse(offer).media[0].codecs()
    again = SessionDescription.parse(offer).media[0].codecs()
    assert codecs[1].encoding == long_name and codecs[1] == again[1]
    assert codecs[1] is not again[1]


# -- the serialiser's field checks and the parser's attribute cache ---------------------------

_FIELD_TEXT = st.text(
    alphabet=st.sampled_from(["a", "0", "/", " ", "\t", "\x0b", "\x85", "\u3000", "\x00", "\r"]),
    max_size=4,
)


@given(st.lists(_FIELD_TEXT, min_size=1, max_size=5))
def test_field_check_in_one_split_agrees_with_the_regex_per_field(fields: list[str]) -> None:
    from byeline.sip.sdp import _BLANK, _words

    expected = all(item and not _BLANK.search(item) for item in fields)
    assert _words(tuple(fields)) is expected


@given(_FIELD_TEXT, _FIELD_TEXT, _FIELD_TEXT)
def test_serialisers_refuse_exactly_the_fields_the_grammar_refuses(a: str, b: str, c: str) -> None:
    from byeline.sip.sdp import _BLANK, _FORBIDDEN, MediaDescription, Origin

    fine = all(item and not _BLANK.search(item) for item in (a, b, c))
    cases = [
        (lambda: Connection(c, b, a).serialize(), fine),
        (lambda: Origin(a, 1, 2, c, b, "IN").serialize(), fine),
        (
            lambda: MediaDescription("audio", 4000, a, (b, c)).m_line(),
            fine and not any(_FORBIDDEN.search(x) for x in (a, b, c)),
        ),
    ]
    for write, ok in cases:
        if ok:
            write()
        else:
            with pytest.raises(ValueError, match="non-empty without blanks"):
                write()


def test_parsed_attributes_are_shared_but_secrets_and_per_call_lines_are_not_kept() -> None:
    from byeline.sip import sdp as sdp_module

    first = SessionDescription.parse(FIVE9_OFFER).media[0].attributes
    second = SessionDescription.parse(FIVE9_OFFER).media[0].attributes
    assert first == second
    assert all(a is b for a, b in zip(first, second, strict=True))  # one parse serves both
    keyed = (
        b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        b"m=audio 4000 RTP/SAVP 0\r\n"
        b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n"
    )
    parsed = SessionDescription.parse(keyed + b"a=ice-pwd:asd88fgpdd777uzjYhagZg\r\na=ssrc:1 x\r\n")
    assert parsed.media[0].crypto
    kept = set(sdp_module._ATTRIBUTES)
    assert not any(text.startswith(("crypto:", "ice-pwd:", "ssrc:")) for text in kept)
    assert "rtpmap:0 PCMU/8000" in kept


def test_other_lines_keep_their_order_within_a_type() -> None:
    text = (
        "v=0\r\no=- 1 2 IN IP4 192.0.2.1\r\ns=x\r\nk=prompt\r\nb=AS:64\r\nu=http://a\r\n"
        "i=info\r\nb=CT:128\r\nz=0 0\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nr=7d 1h 0 25h\r\n"
        "m=audio 1 RTP/AVP 0\r\nk=clear:x\r\nb=TIAS:1\r\ni=one\r\nb=AS:2\r\nx=unknown\r\n"
        "a=sendrecv\r\n"
    )
    written = SessionDescription.parse(text).serialize().decode()
    assert written == (
        "v=0\r\no=- 1 2 IN IP4 192.0.2.1\r\ns=x\r\ni=info\r\nu=http://a\r\n"
        "c=IN IP4 192.0.2.1\r\nb=AS:64\r\nb=CT:128\r\nt=0 0\r\nr=7d 1h 0 25h\r\nz=0 0\r\n"
        "k=prompt\r\nm=audio 1 RTP/AVP 0\r\ni=one\r\nb=TIAS:1\r\nb=AS:2\r\nk=clear:x\r\n"
        "x=unknown\r\na=sendrecv\r\n"
    )
