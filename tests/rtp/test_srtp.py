"""SRTP through libsrtp (pylibsrtp) and SDES key handling."""

from __future__ import annotations

import base64
import logging
import random

import pytest

from byeline.rtp.packet import RtpPacket
from byeline.rtp.srtp import (
    AEAD_AES_128_GCM,
    AES_CM_128_HMAC_SHA1_32,
    AES_CM_128_HMAC_SHA1_80,
    SUITES,
    SdesCrypto,
    SrtpAuthenticationError,
    SrtpContext,
    SrtpError,
    SrtpKey,
    SrtpParams,
    SrtpReplayError,
    SrtpSession,
    SrtpSuite,
)
from byeline.rtp.stream import MediaStream

# RFC 4568 §9.2 example: 30 bytes of key and salt.
RFC_INLINE = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"
PCM = bytes(range(256)) + bytes(64)  # 320 bytes, one 20 ms frame


def pair(suite: SrtpSuite = AES_CM_128_HMAC_SHA1_80) -> tuple[SrtpContext, SrtpContext]:
    """Two ends of one call: each protects with its own key, unprotects with the other's."""
    a, b = SrtpKey.generate(suite), SrtpKey.generate(suite)
    return SrtpContext(a, b), SrtpContext(b, a)


def rtp(seq: int, payload: bytes = b"\xff" * 160, ssrc: int = 0x1234) -> bytes:
    return RtpPacket(
        sequence_number=seq, timestamp=seq * 160, ssrc=ssrc, payload=payload
    ).serialize()


RTCP_SR = bytes.fromhex("80c80006") + (0x1234).to_bytes(4, "big") + bytes(20)


# Protect / unprotect ---------------------------------------------------------------------------


@pytest.mark.parametrize("suite", list(SUITES.values()), ids=list(SUITES))
def test_round_trip_rtp_and_rtcp(suite: SrtpSuite) -> None:
    alice, bob = pair(suite)
    for seq in range(5):
        packet = rtp(seq)
        protected = alice.protect(packet)
        assert len(protected) == len(packet) + suite.tag_length
        assert protected[:12] == packet[:12]  # the header stays in clear
        assert protected[12:172] != packet[12:]  # the payload does not
        assert bob.unprotect(protected) == packet
        # And the other way round, with the other key.
        assert alice.unprotect(bob.protect(packet)) == packet
    assert bob.unprotect_rtcp(alice.protect_rtcp(RTCP_SR)) == RTCP_SR


def test_tampered_packet_is_rejected() -> None:
    alice, bob = pair()
    protected = bytearray(alice.protect(rtp(1)))
    protected[40] ^= 0x01
    with pytest.raises(SrtpAuthenticationError, match="authentication failed") as info:
        bob.unprotect(bytes(protected))
    assert isinstance(info.value, ValueError)
    assert "SSRC 0x00001234, seq 1" in str(info.value)
    # The genuine packet still goes through afterwards.
    assert bob.unprotect(alice.protect(rtp(2))) == rtp(2)


def test_tampered_header_is_rejected() -> None:
    alice, bob = pair()
    protected = bytearray(alice.protect(rtp(1)))
    protected[1] = 8  # payload type changed by a middlebox: the header is authenticated too
    with pytest.raises(SrtpAuthenticationError):
        bob.unprotect(bytes(protected))


def test_replay_is_rejected() -> None:
    alice, bob = pair()
    first = alice.protect(rtp(10))
    assert bob.unprotect(first) == rtp(10)
    with pytest.raises(SrtpReplayError, match="replayed or too old"):
        bob.unprotect(first)
    # Reordering inside the window is not a replay.
    later, earlier = alice.protect(rtp(12)), alice.protect(rtp(11))
    assert bob.unprotect(later) == rtp(12)
    assert bob.unprotect(earlier) == rtp(11)


def test_packet_older_than_the_replay_window_is_rejected() -> None:
    alice, bob = pair()
    old = alice.protect(rtp(1))
    for seq in range(2, 300):
        bob.unprotect(alice.protect(rtp(seq)))
    with pytest.raises(SrtpReplayError):
        bob.unprotect(old)


def test_wrong_key_is_rejected() -> None:
    alice, _ = pair()
    stranger, _ = pair()
    with pytest.raises(SrtpAuthenticationError):
        stranger.unprotect(alice.protect(rtp(1)))


def test_suite_mismatch_is_rejected() -> None:
    key80 = SrtpKey(AES_CM_128_HMAC_SHA1_80, bytes(30))
    key32 = SrtpKey(AES_CM_128_HMAC_SHA1_32, bytes(30))
    with pytest.raises(ValueError, match="local key is AES_CM_128_HMAC_SHA1_80"):
        SrtpContext(key80, key32)
    # Same key bytes, different tag length: the receiver cannot authenticate.
    sender = SrtpContext(key32, key32)
    receiver = SrtpContext(key80, key80)
    with pytest.raises(SrtpAuthenticationError):
        receiver.unprotect(sender.protect(rtp(1)))


def test_garbage_and_short_packets_are_srtp_errors() -> None:
    _, bob = pair()
    with pytest.raises(SrtpError):
        bob.unprotect(b"\x80\x00")
    with pytest.raises(SrtpError, match="too long"):
        bob.unprotect(rtp(1, payload=bytes(1600)))


def test_ssrc_change_is_accepted_with_the_same_key() -> None:
    alice, bob = pair()
    assert bob.unprotect(alice.protect(rtp(1, ssrc=1))) == rtp(1, ssrc=1)
    assert bob.unprotect(alice.protect(rtp(500, ssrc=2))) == rtp(500, ssrc=2)


def test_sessions_work_one_way_only() -> None:
    key = SrtpKey.generate(AES_CM_128_HMAC_SHA1_80)
    inbound = SrtpSession(key, outbound=False)
    outbound = SrtpSession(key, outbound=True)
    with pytest.raises(SrtpError, match="inbound SRTP session cannot protect"):
        inbound.protect(rtp(1))
    with pytest.raises(SrtpError, match="inbound SRTP session cannot protect"):
        inbound.protect_rtcp(RTCP_SR)
    with pytest.raises(SrtpError, match="outbound SRTP session cannot unprotect"):
        outbound.unprotect(rtp(1))
    with pytest.raises(SrtpError, match="outbound SRTP session cannot unprotect"):
        outbound.unprotect_rtcp(RTCP_SR)
    assert inbound.unprotect(outbound.protect(rtp(1))) == rtp(1)


def test_update_restarts_only_the_direction_whose_key_changed() -> None:
    ours, theirs, theirs_new = (SrtpKey.generate(AES_CM_128_HMAC_SHA1_80) for _ in range(3))
    context = SrtpContext(ours, theirs)
    peer = SrtpContext(theirs, ours)
    for seq in range(3):
        peer.unprotect(context.protect(rtp(seq)))
    outbound = context.outbound
    # Session refresh, same keys: nothing restarts (the replay window keeps its state).
    context.update(SrtpParams(AES_CM_128_HMAC_SHA1_80, 1, ours, theirs))
    assert context.outbound is outbound
    first = peer.protect(rtp(7))
    context.unprotect(first)
    # The peer re-keys: inbound restarts with its new key, outbound keeps running.
    context.update(SrtpParams(AES_CM_128_HMAC_SHA1_80, 1, ours, theirs_new))
    assert context.outbound is outbound
    rekeyed_peer = SrtpContext(theirs_new, ours)
    assert context.unprotect(rekeyed_peer.protect(rtp(8))) == rtp(8)
    with pytest.raises(SrtpAuthenticationError):
        context.unprotect(peer.protect(rtp(9)))


def test_params_build_a_working_context() -> None:
    ours, theirs = (
        SrtpKey.generate("AES_CM_128_HMAC_SHA1_32"),
        SrtpKey.generate("AES_CM_128_HMAC_SHA1_32"),
    )
    context = SrtpParams(AES_CM_128_HMAC_SHA1_32, 3, ours, theirs).context()
    peer = SrtpContext.from_params(SrtpParams(AES_CM_128_HMAC_SHA1_32, 3, theirs, ours))
    assert context.suite is AES_CM_128_HMAC_SHA1_32
    assert peer.unprotect(context.protect(rtp(1))) == rtp(1)


# SDES keys -------------------------------------------------------------------------------------


def test_inline_key_round_trip() -> None:
    key = SrtpKey.from_inline(AES_CM_128_HMAC_SHA1_80, RFC_INLINE)
    assert len(key.material) == 30
    assert key.inline() == RFC_INLINE
    assert SrtpKey.from_inline("AES_CM_128_HMAC_SHA1_80", RFC_INLINE) == key


def test_generated_keys_are_random_and_of_the_suite_length() -> None:
    keys = {SrtpKey.generate(AES_CM_128_HMAC_SHA1_80).inline() for _ in range(50)}
    assert len(keys) == 50
    assert all(len(base64.b64decode(k)) == 30 for k in keys)
    assert len(SrtpKey.generate(AEAD_AES_128_GCM).material) == 28
    assert len(SrtpKey.generate("AEAD_AES_256_GCM").material) == 44


def test_unpadded_base64_is_accepted() -> None:
    key = SrtpKey.generate(AEAD_AES_128_GCM)  # 28 bytes: base64 ends with "="
    assert key.inline().endswith("=")
    assert SrtpKey.from_inline(AEAD_AES_128_GCM, key.inline().rstrip("=")) == key


def test_bad_keys_are_refused_without_showing_them() -> None:
    with pytest.raises(ValueError, match="needs 30 bytes of key and salt, got 29") as info:
        SrtpKey.from_inline(AES_CM_128_HMAC_SHA1_80, base64.b64encode(bytes(29)).decode())
    secret = "Zm9vYmFy!!c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"
    with pytest.raises(ValueError, match="not valid base64") as info:
        SrtpKey.from_inline(AES_CM_128_HMAC_SHA1_80, secret)
    assert secret not in str(info.value)
    with pytest.raises(ValueError, match="not valid base64"):
        SrtpKey.from_inline(AES_CM_128_HMAC_SHA1_80, "clé" * 10)
    with pytest.raises(ValueError, match="unsupported SRTP crypto-suite 'F8_128_HMAC_SHA1_80'"):
        SrtpKey.generate("F8_128_HMAC_SHA1_80")
    with pytest.raises(TypeError):
        SrtpKey(AES_CM_128_HMAC_SHA1_80, bytearray(30))  # type: ignore[arg-type]


def test_sdes_crypto_parse_and_serialize() -> None:
    line = SdesCrypto.parse(f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_INLINE}|2^20|1:4")
    assert (line.tag, line.suite, line.key) == (1, "AES_CM_128_HMAC_SHA1_80", RFC_INLINE)
    assert line.lifetime == 2**20
    assert line.mki == (1, 4)
    assert not line.usable  # MKI: libsrtp through pylibsrtp runs without
    assert line.serialize() == f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_INLINE}|1048576|1:4"

    plain = SdesCrypto.parse(f"2 AES_CM_128_HMAC_SHA1_32 inline:{RFC_INLINE}")
    assert plain.usable
    assert plain.srtp_key() == SrtpKey.from_inline(AES_CM_128_HMAC_SHA1_32, RFC_INLINE)
    assert plain.serialize() == f"2 AES_CM_128_HMAC_SHA1_32 inline:{RFC_INLINE}"

    lifetime_only = SdesCrypto.parse(f"3 AES_CM_128_HMAC_SHA1_80 inline:{RFC_INLINE}|2147483648")
    assert lifetime_only.lifetime == 2**31 and lifetime_only.usable

    with_params = SdesCrypto.parse(
        f"4 AES_CM_128_HMAC_SHA1_80 inline:{RFC_INLINE} KDR=1 UNENCRYPTED_SRTCP"
    )
    assert with_params.session_params == ("KDR=1", "UNENCRYPTED_SRTCP")
    assert not with_params.usable
    assert with_params.serialize().endswith(" KDR=1 UNENCRYPTED_SRTCP")

    two_keys = SdesCrypto.parse(
        f"5 AES_CM_128_HMAC_SHA1_80 inline:{RFC_INLINE}|1:4;inline:{RFC_INLINE}|2:4"
    )
    assert two_keys.extra_keys == 1 and not two_keys.usable

    unknown = SdesCrypto.parse(f"6 F8_128_HMAC_SHA1_80 inline:{RFC_INLINE}")
    assert not unknown.usable
    with pytest.raises(ValueError, match="unsupported SRTP crypto-suite"):
        unknown.srtp_key()

    ours = SdesCrypto.for_key(7, SrtpKey.from_inline(AES_CM_128_HMAC_SHA1_80, RFC_INLINE))
    assert ours.serialize() == f"7 AES_CM_128_HMAC_SHA1_80 inline:{RFC_INLINE}"
    with pytest.raises(ValueError, match="tag must be"):
        SdesCrypto.for_key(10**9, ours.srtp_key())


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "must be"),
        ("x AES_CM_128_HMAC_SHA1_80 inline:abc", "must be"),
        ("1234567890 AES_CM_128_HMAC_SHA1_80 inline:abc", "must be"),
        ("1 AES_CM_128_HMAC_SHA1_80", "must be"),
        ("1 AES_CM_128_HMAC_SHA1_80 uri:https://example.com/key", "key method must be inline"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:", "empty inline key"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:abc|x", "unknown key parameter field"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:abc|2^99", r"lifetime 2\^99 is too large"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:abc|5|6", "unknown key parameter field"),
    ],
)
def test_sdes_crypto_errors(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SdesCrypto.parse(value)


# Keys stay secret ------------------------------------------------------------------------------


def test_keys_never_appear_in_repr_str_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    key = SrtpKey.from_inline(AES_CM_128_HMAC_SHA1_80, RFC_INLINE)
    other = SrtpKey.generate(AES_CM_128_HMAC_SHA1_80)
    params = SrtpParams(AES_CM_128_HMAC_SHA1_80, 1, key, other)
    context = params.context()
    line = SdesCrypto.parse(f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_INLINE}")
    stream = MediaStream(srtp=context)
    secrets = [RFC_INLINE, key.material.hex(), repr(key.material), other.inline()]
    logger = logging.getLogger("byeline.test")
    with caplog.at_level(logging.DEBUG):
        for thing in (key, other, params, context, context.inbound, context.outbound, line):
            logger.info("%s %r", thing, thing)
            for text in (repr(thing), str(thing), f"{thing}", f"{thing!r}"):
                assert not any(secret in text for secret in secrets), text
        # Every attribute (the stream may be a compiled class without a __dict__).
        state = {name: getattr(stream, name, None) for name in dir(stream) if name[:2] != "__"}
        logger.info("stream %r", state)
    assert "AES_CM_128_HMAC_SHA1_80" in repr(params)
    assert not any(secret in caplog.text for secret in secrets)


def test_error_messages_never_show_keys() -> None:
    ours, theirs = (
        SrtpKey.generate(AES_CM_128_HMAC_SHA1_80),
        SrtpKey.generate(AES_CM_128_HMAC_SHA1_80),
    )
    context = SrtpContext(ours, theirs)
    secrets = [ours.inline(), theirs.inline(), ours.material.hex(), theirs.material.hex()]
    rng = random.Random(5)
    messages = []
    for _ in range(50):
        garbage = bytes([0x80, 0]) + rng.randbytes(rng.randrange(0, 200))
        with pytest.raises(SrtpError) as info:
            context.unprotect(garbage)
        messages.append(str(info.value))
    with pytest.raises(ValueError) as size_error:
        SrtpKey(AES_CM_128_HMAC_SHA1_32, ours.material[:-1])
    messages.append(str(size_error.value))
    assert not any(secret in message for secret in secrets for message in messages)


# MediaStream with SRTP -------------------------------------------------------------------------


def test_media_stream_protects_and_unprotects() -> None:
    alice_ctx, bob_ctx = pair()
    alice = MediaStream(srtp=alice_ctx, remote_address=("127.0.0.1", 2), rng=random.Random(1))
    bob = MediaStream(srtp=bob_ctx, jitter_delay=0.0, rng=random.Random(2))
    plain = MediaStream(remote_address=("127.0.0.1", 2), rng=random.Random(1))
    packet = alice.packetize(PCM)
    assert len(packet) == 12 + 160 + 10
    assert packet[:12] == plain.packetize(PCM)[:12]
    assert bob.receive(packet, ("127.0.0.1", 1), 0.0) is None
    assert bob.statistics.packets_received == 1
    assert bob.pop_audio(0.0) is not None

    # Tampered, replayed, foreign-keyed and plain packets are counted and dropped.
    tampered = bytearray(alice.packetize(PCM))
    tampered[-1] ^= 1
    assert bob.receive(bytes(tampered), ("127.0.0.1", 1), 0.02) is None
    assert bob.receive(packet, ("127.0.0.1", 1), 0.04) is None
    assert bob.receive(plain.packetize(PCM), ("127.0.0.1", 1), 0.06) is None
    assert bob.receive(b"\x80", ("127.0.0.1", 1), 0.08) is None
    assert bob.srtp_auth_failures == 2
    assert bob.srtp_replays == 1
    assert bob.malformed == 1
    assert bob.statistics.packets_received == 1


def test_media_stream_srtp_dtmf_and_rtcp() -> None:
    alice_ctx, bob_ctx = pair()
    alice = MediaStream(srtp=alice_ctx)
    bob = MediaStream(srtp=bob_ctx)
    alice.send_dtmf("7", duration_ms=40)
    digits = []
    while alice.dtmf_pending:
        packet = alice.next_dtmf_packet()
        assert packet is not None
        digit = bob.receive(packet, ("127.0.0.1", 1), 0.0)
        if digit is not None:
            digits.append(digit.digit)
    assert digits == ["7"]
    # SRTCP muxed on the RTP port: demultiplexed on the clear header and ignored, as plain RTCP.
    bob.receive(alice_ctx.protect_rtcp(RTCP_SR), ("127.0.0.1", 1), 0.1)
    assert bob.rtcp_received == 1
    assert bob.srtp_auth_failures == 0


def test_plain_stream_is_unchanged() -> None:
    stream = MediaStream(remote_address=("127.0.0.1", 2), rng=random.Random(1))
    assert stream.srtp is None
    packet = stream.packetize(PCM)
    assert len(packet) == 172
    assert RtpPacket.parse(packet).payload_type == 0
