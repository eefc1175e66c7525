"""SDES-SRTP (RFC 4568) in SDP offer/answer, under LiveKit's media_encryption policies."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from livekit.protocol import sip as lk_sip

from byeline.rtp.srtp import (
    AES_CM_128_HMAC_SHA1_32,
    AES_CM_128_HMAC_SHA1_80,
    SdesCrypto,
    SrtpKey,
    SrtpParams,
)
from byeline.sip.sdp import (
    EncryptionRequired,
    MediaEncryption,
    MediaSession,
    Negotiated,
    NoCommonCodec,
    NoCommonCrypto,
    SessionDescription,
    UnsupportedProfile,
    accept_answer,
    answer_offer,
    create_offer,
    redact_keys,
)

KEY_80 = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"  # RFC 4568 §9.2
KEY_32 = "d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj"
HEAD = b"v=0\r\no=- 7 7 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\n"

# An SBC offering SDES-SRTP, 32-bit tag first (its preference), then the 80-bit one.
SAVP = (
    b"m=audio 30000 RTP/SAVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
    b"a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:" + KEY_32.encode() + b"|2^31\r\n"
    b"a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:" + KEY_80.encode() + b"\r\n"
    b"a=sendrecv\r\n"
)
AVP = b"m=audio 30002 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
SAVP_OFFER = HEAD + SAVP
AVP_OFFER = HEAD + AVP


def negotiate(offer: bytes, policy: str, **options: Any) -> Negotiated:
    return answer_offer(
        offer,
        media_ip="192.0.2.10",
        media_port=40000,
        session_id=1,
        session_version=1,
        policy=policy,
        **options,
    )


def srtp_of(neg: Negotiated) -> SrtpParams:
    assert neg.srtp is not None
    return neg.srtp


def test_policy_mirrors_livekit_media_encryption() -> None:
    enum = lk_sip.SIPMediaEncryption
    assert MediaEncryption.from_livekit(enum.SIP_MEDIA_ENCRYPT_DISABLE) is MediaEncryption.DISABLE
    assert MediaEncryption.from_livekit(enum.SIP_MEDIA_ENCRYPT_ALLOW) is MediaEncryption.ALLOW
    assert MediaEncryption.from_livekit(enum.SIP_MEDIA_ENCRYPT_REQUIRE) is MediaEncryption.REQUIRE
    assert MediaEncryption.from_livekit("SIP_MEDIA_ENCRYPT_REQUIRE") is MediaEncryption.REQUIRE
    assert MediaEncryption.from_livekit("allow") is MediaEncryption.ALLOW
    for bad in (3, -1, "SIP_MEDIA_ENCRYPT_MAYBE", ""):
        with pytest.raises(ValueError, match="unknown media_encryption"):
            MediaEncryption.from_livekit(bad)
    with pytest.raises(ValueError):
        MediaEncryption("sometimes")


# allow ----------------------------------------------------------------------------------------


def test_allow_answers_savp_with_crypto() -> None:
    neg = negotiate(SAVP_OFFER, "allow")
    media = SessionDescription.parse(neg.sdp).media[0]
    assert media.proto == "RTP/SAVP"
    assert media.formats == ("0", "101")
    # Same tag and suite as the offer's first line (the offerer's preference), our own key.
    [line] = media.sdes_crypto()
    assert (line.tag, line.suite) == (1, "AES_CM_128_HMAC_SHA1_32")
    assert line.usable and line.lifetime is None and line.mki is None
    assert line.key not in (KEY_32, KEY_80)
    srtp = neg.srtp
    assert srtp is not None
    assert srtp.suite is AES_CM_128_HMAC_SHA1_32 and srtp.tag == 1
    assert srtp.remote_key == SrtpKey.from_inline(AES_CM_128_HMAC_SHA1_32, KEY_32)
    assert srtp.local_key == line.srtp_key()
    assert neg.remote_rtp == ("203.0.113.5", 30000)
    assert neg.telephone_event_pt == 101


def test_answer_keys_are_fresh_and_can_be_pinned() -> None:
    first = srtp_of(negotiate(SAVP_OFFER, "allow"))
    second = srtp_of(negotiate(SAVP_OFFER, "allow"))
    assert first.local_key != second.local_key
    pinned = SrtpKey.generate(AES_CM_128_HMAC_SHA1_32)
    neg = negotiate(SAVP_OFFER, "allow", srtp_keys={pinned.suite.name: pinned})
    assert srtp_of(neg).local_key == pinned
    with pytest.raises(ValueError, match="is a AES_CM_128_HMAC_SHA1_80 key"):
        negotiate(
            SAVP_OFFER,
            "allow",
            srtp_keys={"AES_CM_128_HMAC_SHA1_32": SrtpKey.generate(AES_CM_128_HMAC_SHA1_80)},
        )


def test_allow_answers_plain_rtp_plainly() -> None:
    neg = negotiate(AVP_OFFER, "allow")
    assert neg.srtp is None
    media = SessionDescription.parse(neg.sdp).media[0]
    assert media.proto == "RTP/AVP"
    assert media.crypto == []
    assert neg.codec == "PCMA"


def test_crypto_suites_restrict_the_choice() -> None:
    neg = negotiate(SAVP_OFFER, "allow", crypto_suites=["AES_CM_128_HMAC_SHA1_80"])
    assert srtp_of(neg).suite is AES_CM_128_HMAC_SHA1_80 and srtp_of(neg).tag == 2
    assert srtp_of(neg).remote_key.inline() == KEY_80


def test_unusable_lines_are_skipped() -> None:
    offer = HEAD + SAVP.replace(
        b"a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:" + KEY_32.encode() + b"|2^31",
        b"a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:" + KEY_32.encode() + b"|2^31|1:4\r\n"
        b"a=crypto:3 F8_128_HMAC_SHA1_80 inline:" + KEY_80.encode() + b"\r\n"
        b"a=crypto:4 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=\r\n"
        b"a=crypto:5 garbage\r\n"
        b"a=crypto:6 AES_CM_128_HMAC_SHA1_80 inline:" + KEY_80.encode() + b" UNENCRYPTED_SRTP",
    )
    neg = negotiate(offer, "require")
    assert (
        srtp_of(neg).tag == 2
    )  # MKI, unknown suite, short key, garbage, session parameter: skipped


def test_allow_prefers_the_encrypted_stream_of_a_mixed_offer() -> None:
    # Best-effort SRTP: the same audio offered plain first, then encrypted.
    neg = negotiate(HEAD + AVP + SAVP, "allow")
    assert neg.srtp is not None
    assert neg.remote_rtp == ("203.0.113.5", 30000)
    answer_media = SessionDescription.parse(neg.sdp).media
    assert [(m.proto, m.port) for m in answer_media] == [("RTP/AVP", 0), ("RTP/SAVP", 40000)]
    # Encrypted first: taken at once.
    neg = negotiate(HEAD + SAVP + AVP, "allow")
    assert [m.port for m in SessionDescription.parse(neg.sdp).media] == [40000, 0]


def test_allow_falls_back_to_plain_when_the_crypto_is_unusable() -> None:
    unusable = SAVP.replace(b"AES_CM_128_HMAC_SHA1", b"NULL_HMAC_SHA1")
    neg = negotiate(HEAD + unusable + AVP, "allow")
    assert neg.srtp is None
    assert [m.port for m in SessionDescription.parse(neg.sdp).media] == [0, 40000]
    with pytest.raises(NoCommonCrypto, match="offered NULL_HMAC_SHA1_32, NULL_HMAC_SHA1_80"):
        negotiate(HEAD + unusable, "allow")
    no_crypto = b"m=audio 30000 RTP/SAVP 0\r\n"
    with pytest.raises(NoCommonCrypto, match="offered none"):
        negotiate(HEAD + no_crypto, "allow")


def test_allow_with_no_common_codec_says_so() -> None:
    g729 = SAVP.replace(b"RTP/SAVP 0 8 101", b"RTP/SAVP 18")
    with pytest.raises(NoCommonCodec, match="no common codec"):
        negotiate(HEAD + g729, "allow")


# require --------------------------------------------------------------------------------------


def test_require_refuses_plain_rtp() -> None:
    with pytest.raises(EncryptionRequired, match="requires SRTP") as info:
        negotiate(AVP_OFFER, "require")
    # The edge's existing 488 handling catches it as an unsupported profile too.
    assert isinstance(info.value, UnsupportedProfile)


def test_require_takes_the_encrypted_stream_of_a_mixed_offer() -> None:
    neg = negotiate(HEAD + AVP + SAVP, "require")
    assert neg.srtp is not None
    assert [m.port for m in SessionDescription.parse(neg.sdp).media] == [0, 40000]


def test_require_with_unusable_crypto() -> None:
    unusable = SAVP.replace(b"AES_CM_128_HMAC_SHA1", b"F8_128_HMAC_SHA1")
    with pytest.raises(NoCommonCrypto):
        negotiate(HEAD + unusable + AVP, "require")


# disable --------------------------------------------------------------------------------------


def test_disable_refuses_savp_only_as_before() -> None:
    with pytest.raises(UnsupportedProfile, match="RTP/SAVP") as info:
        negotiate(SAVP_OFFER, "disable")
    assert not isinstance(info.value, (EncryptionRequired, NoCommonCrypto))
    # The default policy is disable: nothing changed for existing callers.
    with pytest.raises(UnsupportedProfile, match="RTP/SAVP"):
        answer_offer(SAVP_OFFER, media_ip="192.0.2.10", media_port=4, session_id=1,
                     session_version=1)  # fmt: skip


def test_disable_answers_plain_in_a_mixed_offer() -> None:
    neg = negotiate(HEAD + SAVP + AVP, "disable")
    assert neg.srtp is None
    assert [m.port for m in SessionDescription.parse(neg.sdp).media] == [0, 40000]
    assert b"crypto" not in neg.sdp


# Our offers and their answers -----------------------------------------------------------------


def offer_for() -> bytes:
    return create_offer("192.0.2.10", 40000, session_id=3, session_version=1, srtp=True)


def test_srtp_offer_and_answer_round_trip() -> None:
    offer = offer_for()
    media = SessionDescription.parse(offer).media[0]
    assert media.proto == "RTP/SAVP"
    lines = media.sdes_crypto()
    assert [(c.tag, c.suite) for c in lines] == [
        (1, "AES_CM_128_HMAC_SHA1_80"),
        (2, "AES_CM_128_HMAC_SHA1_32"),
    ]
    assert lines[0].key != lines[1].key

    # The peer (say Five9's SBC) answers; each side then gets matching keys.
    theirs = negotiate(offer, "require")
    ours = accept_answer(offer, theirs.sdp)
    assert ours.srtp is not None and theirs.srtp is not None
    assert srtp_of(ours).suite is AES_CM_128_HMAC_SHA1_80 and srtp_of(ours).tag == 1
    assert srtp_of(ours).local_key == srtp_of(theirs).remote_key == lines[0].srtp_key()
    assert srtp_of(ours).remote_key == srtp_of(theirs).local_key

    # And the keys really work across the two contexts.
    a, b = srtp_of(ours).context(), srtp_of(theirs).context()
    packet = b"\x80\x00\x00\x01" + bytes(8) + b"\xff" * 160
    assert b.unprotect(a.protect(packet)) == packet
    assert a.unprotect(b.protect(packet)) == packet


def test_offer_with_given_suites_and_keys() -> None:
    key = SrtpKey.generate(AES_CM_128_HMAC_SHA1_32)
    offer = create_offer(
        "192.0.2.10",
        40000,
        session_id=3,
        session_version=1,
        srtp=True,
        crypto_suites=["AES_CM_128_HMAC_SHA1_32"],
        srtp_keys={"AES_CM_128_HMAC_SHA1_32": key},
    )
    [line] = SessionDescription.parse(offer).media[0].sdes_crypto()
    assert line.srtp_key() == key
    with pytest.raises(ValueError, match="at least one crypto-suite"):
        create_offer("192.0.2.10", 40000, session_id=3, session_version=1, srtp=True,
                     crypto_suites=[])  # fmt: skip
    with pytest.raises(ValueError, match="unsupported SRTP crypto-suite"):
        create_offer("192.0.2.10", 40000, session_id=3, session_version=1, srtp=True,
                     crypto_suites=["F8_128_HMAC_SHA1_80"])  # fmt: skip
    plain = create_offer("192.0.2.10", 40000, session_id=3, session_version=1)
    assert b"RTP/AVP" in plain and b"crypto" not in plain


def _answer_with(offer: bytes, crypto_lines: list[str], proto: bytes = b"RTP/SAVP") -> bytes:
    body = HEAD + b"m=audio 30000 " + proto + b" 0\r\n"
    return body + b"".join(b"a=crypto:" + line.encode() + b"\r\n" for line in crypto_lines)


def test_bad_srtp_answers_are_refused() -> None:
    offer = offer_for()
    key = SrtpKey.generate(AES_CM_128_HMAC_SHA1_80).inline()
    with pytest.raises(NoCommonCrypto, match="no valid a=crypto"):
        accept_answer(offer, _answer_with(offer, []))
    with pytest.raises(NoCommonCrypto, match="tag 9 is not one we offered"):
        accept_answer(offer, _answer_with(offer, [f"9 AES_CM_128_HMAC_SHA1_80 inline:{key}"]))
    with pytest.raises(NoCommonCrypto, match="is AES_CM_128_HMAC_SHA1_32, we offered"):
        accept_answer(offer, _answer_with(offer, [f"1 AES_CM_128_HMAC_SHA1_32 inline:{key}"]))
    with pytest.raises(NoCommonCrypto, match="MKI"):
        accept_answer(offer, _answer_with(offer, [f"1 AES_CM_128_HMAC_SHA1_80 inline:{key}|1:4"]))
    with pytest.raises(ValueError, match="RFC 4568 allows one"):
        accept_answer(
            offer,
            _answer_with(
                offer,
                [
                    f"1 AES_CM_128_HMAC_SHA1_80 inline:{key}",
                    f"2 AES_CM_128_HMAC_SHA1_32 inline:{key}",
                ],
            ),
        )
    with pytest.raises(ValueError, match="needs 30 bytes"):
        accept_answer(offer, _answer_with(offer, ["1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ="]))
    with pytest.raises(UnsupportedProfile, match="answer uses RTP/AVP for an RTP/SAVP offer"):
        accept_answer(offer, _answer_with(offer, [], proto=b"RTP/AVP"))
    # A plain offer answered plainly keeps working and has no SRTP.
    plain = create_offer("192.0.2.10", 40000, session_id=3, session_version=1)
    assert accept_answer(plain, AVP_OFFER.replace(b"RTP/AVP 8 0 101", b"RTP/AVP 0")).srtp is None


# MediaSession ---------------------------------------------------------------------------------


def test_media_session_keeps_its_key_across_reinvites() -> None:
    session = MediaSession("192.0.2.10", 40000, policy="allow")
    first = session.answer(SAVP_OFFER)
    version = session.session_version
    # A session refresh (same offer again): same key, same SDP, same version (RFC 3264 §8).
    again = session.answer(SAVP_OFFER)
    assert srtp_of(again).local_key == srtp_of(first).local_key
    assert again.sdp == first.sdp and session.session_version == version
    # The peer re-keys: our key stays, theirs changes; the context follows with update().
    context = srtp_of(first).context()
    outbound = context.outbound
    new_key = SrtpKey.generate(AES_CM_128_HMAC_SHA1_32).inline()
    rekeyed = session.answer(SAVP_OFFER.replace(KEY_32.encode(), new_key.encode()))
    assert srtp_of(rekeyed).local_key == srtp_of(first).local_key
    assert srtp_of(rekeyed).remote_key.inline() == new_key
    context.update(srtp_of(rekeyed))
    assert context.outbound is outbound
    # Hold keeps the key too.
    held = session.hold()
    assert b"RTP/AVP" in held  # our own offers are plain under allow


def test_media_session_require_offers_srtp_and_refuses_plain_answers() -> None:
    session = MediaSession("192.0.2.10", 40000, policy=MediaEncryption.REQUIRE)
    offer = session.offer()
    assert b"RTP/SAVP" in offer
    assert session.offer() == offer  # pinned keys: the same offer, the same version
    peer = negotiate(offer, "require")
    neg = session.accept_answer(peer.sdp)
    assert neg.srtp is not None and srtp_of(neg).remote_key == srtp_of(peer).local_key
    with pytest.raises(EncryptionRequired):
        session.answer(AVP_OFFER)
    # Re-offer (hold) keeps the keys; answered with the same peer key nothing restarts.
    hold = session.hold()
    assert [c.key for c in SessionDescription.parse(hold).media[0].sdes_crypto()] == [
        c.key for c in SessionDescription.parse(offer).media[0].sdes_crypto()
    ]


def test_media_session_default_is_unchanged() -> None:
    session = MediaSession("192.0.2.10", 40000)
    assert session.policy is MediaEncryption.DISABLE
    with pytest.raises(UnsupportedProfile):
        session.answer(SAVP_OFFER)
    assert session.answer(AVP_OFFER).srtp is None
    with pytest.raises(ValueError, match="unsupported SRTP crypto-suite"):
        MediaSession("192.0.2.10", 40000, crypto_suites=["AES_256_CM_HMAC_SHA1_80"])


# Keys stay out of logs ------------------------------------------------------------------------


def test_redact_keys_and_negotiated_repr() -> None:
    neg = negotiate(SAVP_OFFER, "allow")
    local = srtp_of(neg).local_key.inline()
    assert local.encode() in neg.sdp  # it must be in the SDP we send...
    for text in (repr(neg), str(neg), repr(neg.srtp), f"{neg}"):
        assert local not in text and KEY_32 not in text  # ...and nowhere else
    assert "inline:<redacted>" in repr(neg)
    redacted = redact_keys(SAVP_OFFER)
    assert KEY_32.encode() not in redacted and KEY_80.encode() not in redacted
    assert b"a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:<redacted>|2^31\r\n" in redacted
    assert redact_keys(SAVP_OFFER.decode()) == redacted.decode()
    # A whole SIP message: only a=crypto lines are touched.
    message = b"INVITE sip:x SIP/2.0\r\nSubject: inline:keep\r\n\r\n" + SAVP_OFFER
    assert b"Subject: inline:keep" in redact_keys(message)
    assert redact_keys(AVP_OFFER) == AVP_OFFER


def test_crypto_attribute_parsing_is_tolerant() -> None:
    media = SessionDescription.parse(
        HEAD + b"m=audio 1 RTP/SAVP 0\r\na=crypto:bad\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 "
        b"inline:" + KEY_80.encode() + b"\r\n"
    ).media[0]
    assert len(media.crypto) == 2  # raw values, as before
    assert [c.tag for c in media.sdes_crypto()] == [1]
    assert isinstance(media.sdes_crypto()[0], SdesCrypto)


@given(st.text(max_size=120))
def test_crypto_parsing_fails_only_with_value_error(value: str) -> None:
    with contextlib.suppress(ValueError):
        line = SdesCrypto.parse(value)
        if line.usable:
            line.srtp_key()


@given(st.lists(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126)), max_size=4))
def test_answering_any_crypto_lines_fails_only_with_value_error(lines: list[str]) -> None:
    offer = HEAD + b"m=audio 30000 RTP/SAVP 0\r\n"
    offer += b"".join(b"a=crypto:" + line.encode() + b"\r\n" for line in lines)
    for policy in MediaEncryption:
        with contextlib.suppress(ValueError):
            negotiate(offer, policy)
