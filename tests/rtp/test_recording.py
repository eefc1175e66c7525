"""Call recordings: the stereo WAV writer, and two real SRTP endpoints on loopback recording."""

from __future__ import annotations

import asyncio
import socket
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from byeline.net.ports import RtpPortAllocator
from byeline.net.rtp import FRAME_BYTES, MediaTicker, RtpEndpoint
from byeline.rtp.g711 import ulaw_decode, ulaw_encode
from byeline.rtp.packet import RtpPacket
from byeline.rtp.recording import CallRecording
from byeline.rtp.stream import MediaStream
from byeline.sip.sdp import MediaSession, accept_answer, create_offer

LOW, HIGH = 44000, 44199


def tone(hz: float, seconds: float, amplitude: int = 8000) -> bytes:
    t = np.arange(int(8000 * seconds)) / 8000
    return (np.sin(2 * np.pi * hz * t + 0.3) * amplitude).astype("<i2").tobytes()


def read_wav(path: Path) -> tuple[wave._wave_params, np.ndarray, np.ndarray]:
    with wave.open(str(path), "rb") as wav:
        params = wav.getparams()
        stereo = np.frombuffer(wav.readframes(params.nframes), dtype="<i2").reshape(-1, 2)
    return params, stereo[:, 0].copy(), stereo[:, 1].copy()


# The writer ------------------------------------------------------------------------------------


def test_stereo_frames_are_paired_and_padded(tmp_path: Path) -> None:
    path = tmp_path / "call.wav"
    caller = [bytes([i]) * FRAME_BYTES for i in range(1, 4)]
    agent = [bytes([0x10 + i]) * FRAME_BYTES for i in range(1, 4)]
    with CallRecording(path) as recording:
        recording.caller_frame(caller[0])
        recording.agent_frame(agent[0])
        recording.agent_frame(agent[1])  # the agent side may come first within a tick
        recording.caller_frame(caller[1])
        recording.caller_frame(caller[2])  # last tick: the agent side never came
    assert recording.closed and recording.frames == 3
    assert recording.duration == pytest.approx(0.06)
    params, left, right = read_wav(path)
    assert (params.nchannels, params.sampwidth, params.framerate) == (2, 2, 8000)
    assert params.nframes == 3 * 160
    assert left.tobytes() == b"".join(caller)
    assert right.tobytes() == agent[0] + agent[1] + bytes(FRAME_BYTES)
    assert repr(recording).startswith("CallRecording(") and "0.06 s" in repr(recording)


def test_a_side_that_stops_feeding_becomes_silence(tmp_path: Path) -> None:
    path = tmp_path / "skew.wav"
    recording = CallRecording(path, max_skew=2)
    frames = [np.full(160, i, dtype="<i2").tobytes() for i in range(1, 6)]
    for frame in frames:
        recording.agent_frame(frame)
    assert recording.frames == 3  # two frames wait for the caller side, the older ones did not
    recording.caller_frame(frames[0])  # late caller frame pairs with the oldest waiting one
    recording.close()
    recording.close()  # closing twice is harmless
    recording.caller_frame(frames[0])  # and frames after close are ignored
    _, left, right = read_wav(path)
    assert right.tobytes() == b"".join(frames)
    assert left.tobytes() == bytes(3 * FRAME_BYTES) + frames[0] + bytes(FRAME_BYTES)


def test_header_is_valid_while_recording(tmp_path: Path) -> None:
    path = tmp_path / "live.wav"
    recording = CallRecording(path, header_interval=10)
    for _ in range(25):
        recording.caller_frame(tone(440, 0.02))
        recording.agent_frame(bytes(FRAME_BYTES))
    # Not closed (a crash now): the header says 20 frames, the last update; the file is valid.
    params, left, _ = read_wav(path)
    assert params.nframes == 20 * 160
    assert left[:160].tobytes() == tone(440, 0.02)
    recording.close()
    assert read_wav(path)[0].nframes == 25 * 160


def test_recording_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_skew"):
        CallRecording(tmp_path / "x.wav", max_skew=0)
    with pytest.raises(ValueError, match="header_interval"):
        CallRecording(tmp_path / "x.wav", header_interval=0)
    with CallRecording(tmp_path / "x.wav") as recording, pytest.raises(ValueError, match="even"):
        recording.caller_frame(b"\x00")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
def test_a_full_disk_stops_the_recording_not_the_call(caplog: pytest.LogCaptureFixture) -> None:
    recording = CallRecording("/dev/full", header_interval=5)
    for _ in range(10):
        recording.caller_frame(bytes(FRAME_BYTES))
        recording.agent_frame(bytes(FRAME_BYTES))
    assert recording.error is not None and recording.closed
    assert "stopped" in caplog.text
    recording.close()


# Two endpoints on loopback, SRTP both ways ---------------------------------------------------


@pytest.fixture
def allocator() -> RtpPortAllocator:
    return RtpPortAllocator(LOW, HIGH, host="127.0.0.1")


async def test_srtp_call_recorded_on_two_channels(
    allocator: RtpPortAllocator, tmp_path: Path
) -> None:
    # Negotiate as a caller with --srtp would with the edge under media_encryption REQUIRE.
    caller_port, edge_port = allocator.allocate(), allocator.allocate()
    offer = create_offer("127.0.0.1", caller_port, session_id=1, session_version=1, srtp=True)
    edge_session = MediaSession("127.0.0.1", edge_port, policy="require")
    edge_neg = edge_session.answer(offer)
    caller_neg = accept_answer(offer, edge_neg.sdp)
    assert edge_neg.srtp is not None and caller_neg.srtp is not None

    loop = asyncio.get_running_loop()
    ticker = MediaTicker(loop)
    path = tmp_path / "call.wav"
    recording = CallRecording(path)
    edge = await RtpEndpoint.open(
        MediaStream(
            remote_address=edge_neg.remote_rtp,
            jitter_delay=0.04,
            srtp=edge_neg.srtp.context(),
        ),
        allocator,
        port=edge_port,
        ticker=ticker,
        recorder=recording,
    )
    caller = await RtpEndpoint.open(
        MediaStream(
            remote_address=caller_neg.remote_rtp,
            jitter_delay=0.04,
            srtp=caller_neg.srtp.context(),
        ),
        allocator,
        port=caller_port,
        ticker=ticker,
    )
    heard_by_caller: list[bytes] = []
    caller.on_audio = heard_by_caller.append
    intruder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    started = time.monotonic()
    try:
        greeting = tone(1000, 0.4)  # the announcement, played by the edge before the agent
        agent_reply = tone(1600, 0.3)
        caller_speech = tone(400, 0.6)
        prompts = [edge.play(greeting), edge.play(agent_reply)]
        assert await caller.play(caller_speech)
        assert all(await asyncio.gather(*prompts))
        # A plain RTP packet from elsewhere is refused by SRTP authentication, not played.
        plain = RtpPacket(sequence_number=1, timestamp=1, ssrc=9, payload=b"\x00" * 160)
        assert edge.local_address is not None
        intruder.sendto(plain.serialize(), edge.local_address)
        await asyncio.sleep(0.2)  # the jitter buffer's delay, and a few silent frames
    finally:
        edge.close()
        caller.close()
        intruder.close()
        elapsed = time.monotonic() - started
        recording.close()

    assert edge.stream.srtp_auth_failures == 1
    assert caller.stream.srtp_auth_failures == 0
    assert edge.stream.srtp_replays == caller.stream.srtp_replays == 0
    assert edge.stream.statistics.packets_received >= 30

    params, left, right = read_wav(path)
    assert (params.nchannels, params.sampwidth, params.framerate) == (2, 2, 8000)
    # One stereo frame per tick of the edge, from open to close: the call's length.
    assert params.nframes == recording.frames * 160
    assert abs(params.nframes / 8000 - elapsed) < 0.1
    # Left: what the caller said, through G.711 and SRTP, bit-exact; nothing else.
    expected_left = np.frombuffer(ulaw_decode(ulaw_encode(caller_speech)), dtype="<i2")
    start = left.tobytes().find(expected_left.tobytes())
    assert start >= 0 and start % 2 == 0
    start //= 2
    assert not left[:start].any() and not left[start + len(expected_left) :].any()
    # Right: the announcement then the agent's reply, back to back as sent; nothing else.
    expected_right = np.frombuffer(greeting + agent_reply, dtype="<i2")
    start = right.tobytes().find(expected_right.tobytes())
    assert start >= 0
    start //= 2
    assert not right[:start].any() and not right[start + len(expected_right) :].any()
    # The agent side starts with the first tick, the caller side a jitter delay after its send.
    assert start == 0
    # And the caller really heard the greeting, decrypted.
    heard = b"".join(heard_by_caller)
    assert ulaw_decode(ulaw_encode(greeting)) in heard


async def test_recording_keeps_the_wall_clock_through_a_stall(
    allocator: RtpPortAllocator, tmp_path: Path
) -> None:
    loop = asyncio.get_running_loop()
    ticker = MediaTicker(loop)
    recording = CallRecording(tmp_path / "stall.wav")
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    endpoint = await RtpEndpoint.open(
        MediaStream(remote_address=peer.getsockname()),
        allocator,
        ticker=ticker,
        recorder=recording,
    )
    started = loop.time()
    try:
        await asyncio.sleep(0.1)
        time.sleep(0.3)  # the loop is blocked for 15 ticks: more than MAX_CATCH_UP
        await asyncio.sleep(0.1)
    finally:
        endpoint.close()
        elapsed = loop.time() - started
        peer.close()
        recording.close()
    assert ticker.skipped > 0
    # Skipped ticks are recorded as silence on both sides: the recording keeps the call's length.
    assert recording.frames == ticker.ticks + ticker.skipped
    assert abs(recording.duration - elapsed) < 0.06
