"""The AgentSession audio I/O on a real RtpEndpoint pair over loopback UDP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest
from livekit import rtc
from livekit.agents.voice.io import PlaybackFinishedEvent, PlaybackStartedEvent

from byeline.agent.session_io import CallAudioInput, CallAudioOutput
from byeline.net.ports import RtpPortAllocator
from byeline.net.rtp import RtpEndpoint
from byeline.rtp.stream import MediaStream

LOW, HIGH = 43600, 43699
# A 400 Hz tone at 8 kHz: 20 ms is exactly 8 periods, so every frame is the same.
TONE_8K = (np.sin(2 * np.pi * 400 * np.arange(160) / 8000) * 9000).astype("<i2").tobytes()


@pytest.fixture
async def pair() -> AsyncIterator[tuple[RtpEndpoint, RtpEndpoint]]:
    """(caller, agent): two endpoints sending to each other on 127.0.0.1."""
    allocator = RtpPortAllocator(LOW, HIGH, host="127.0.0.1")
    caller = await RtpEndpoint.open(MediaStream(jitter_delay=0.04), allocator)
    agent = await RtpEndpoint.open(MediaStream(jitter_delay=0.04), allocator)
    assert caller.local_address is not None and agent.local_address is not None
    caller.stream.set_remote_address(agent.local_address)
    agent.stream.set_remote_address(caller.local_address)
    yield caller, agent
    caller.close()
    agent.close()


def _tone_frame(rate: int, ms: int) -> rtc.AudioFrame:
    n = rate * ms // 1000
    pcm = (np.sin(2 * np.pi * 400 * np.arange(n) / rate) * 9000).astype("<i2").tobytes()
    return rtc.AudioFrame(pcm, rate, 1, n)


async def test_caller_audio_arrives_as_16k_frames(pair: tuple[RtpEndpoint, RtpEndpoint]) -> None:
    caller, agent = pair
    audio_in = CallAudioInput(agent, sample_rate=16000)
    frames: list[rtc.AudioFrame] = []

    async def read() -> None:
        async for frame in audio_in:
            frames.append(frame)
            if len(frames) >= 60:
                return

    reader = asyncio.create_task(read())
    await asyncio.sleep(0.05)
    assert await asyncio.wait_for(caller.play(TONE_8K * 50), 3.0) is True
    await asyncio.wait_for(reader, 3.0)
    assert {f.sample_rate for f in frames} == {16000}
    assert {f.num_channels for f in frames} == {1}
    loud = [f for f in frames if np.abs(np.frombuffer(f.data, np.int16)).mean() > 2000]
    assert len(loud) >= 30  # the tone went through G.711 and the resampler
    await audio_in.aclose()


async def test_input_at_call_rate_is_not_resampled(pair: tuple[RtpEndpoint, RtpEndpoint]) -> None:
    caller, agent = pair
    audio_in = CallAudioInput(agent, sample_rate=8000)
    caller.play(TONE_8K * 5)
    frame = await asyncio.wait_for(audio_in.__anext__(), 3.0)
    assert frame.sample_rate == 8000 and frame.samples_per_channel == 160
    await audio_in.aclose()


async def test_input_ends_when_the_call_media_closes(pair: tuple[RtpEndpoint, RtpEndpoint]) -> None:
    caller, agent = pair
    audio_in = CallAudioInput(agent)
    caller.play(TONE_8K * 5)
    await asyncio.wait_for(audio_in.__anext__(), 3.0)
    agent.close()
    with pytest.raises(StopAsyncIteration):
        for _ in range(1000):
            await asyncio.wait_for(audio_in.__anext__(), 3.0)


async def test_output_finishes_only_when_packets_left(
    pair: tuple[RtpEndpoint, RtpEndpoint],
) -> None:
    caller, agent = pair
    heard: list[bytes] = []
    caller.on_audio = heard.append
    out = CallAudioOutput(agent)
    started: list[PlaybackStartedEvent] = []
    finished: list[tuple[float, PlaybackFinishedEvent]] = []
    out.on("playback_started", started.append)
    out.on("playback_finished", lambda ev: finished.append((time.monotonic(), ev)))
    t0 = time.monotonic()
    for _ in range(5):  # 500 ms of TTS audio at 8 kHz, pushed faster than real time
        await out.capture_frame(_tone_frame(8000, 100))
    out.flush()
    assert started and not finished  # queued, not played
    assert agent.queued_frames == 25
    ev = await asyncio.wait_for(out.wait_for_playout(), 3.0)
    elapsed = finished[0][0] - t0
    assert ev.interrupted is False
    assert ev.playback_position == pytest.approx(0.5, abs=0.001)
    # 25 packets paced at 20 ms: the event cannot come before ~480 ms of sending.
    assert elapsed >= 0.46
    assert agent.queued_frames == 0
    await asyncio.sleep(0.1)
    assert sum(np.abs(np.frombuffer(f, np.int16)).mean() > 2000 for f in heard) >= 24
    await out.aclose()


async def test_output_resamples_tts_audio_to_8k(pair: tuple[RtpEndpoint, RtpEndpoint]) -> None:
    _, agent = pair
    out = CallAudioOutput(agent)
    await out.capture_frame(_tone_frame(24000, 200))  # a direct caller at the TTS's own rate
    out.flush()
    ev = await asyncio.wait_for(out.wait_for_playout(), 3.0)
    assert ev.playback_position == pytest.approx(0.2, abs=0.03)  # the resampler keeps a tail


async def test_clear_buffer_interrupts_with_the_played_duration(
    pair: tuple[RtpEndpoint, RtpEndpoint],
) -> None:
    _, agent = pair
    out = CallAudioOutput(agent)
    for _ in range(20):  # 2 s
        await out.capture_frame(_tone_frame(8000, 100))
    out.flush()
    await asyncio.sleep(0.3)
    out.clear_buffer()  # barge-in
    ev = await asyncio.wait_for(out.wait_for_playout(), 1.0)
    assert ev.interrupted is True
    assert 0.1 <= ev.playback_position <= 0.5  # what really went out, to one 100 ms chunk
    assert agent.queued_frames == 0
    # The next segment plays normally.
    await out.capture_frame(_tone_frame(8000, 100))
    out.flush()
    ev = await asyncio.wait_for(out.wait_for_playout(), 1.0)
    assert ev.interrupted is False and ev.playback_position == pytest.approx(0.1)


async def test_clear_before_flush_drops_the_rest_of_the_segment(
    pair: tuple[RtpEndpoint, RtpEndpoint],
) -> None:
    _, agent = pair
    out = CallAudioOutput(agent)
    await out.capture_frame(_tone_frame(8000, 100))
    out.clear_buffer()
    await out.capture_frame(_tone_frame(8000, 100))  # late frames of the cleared segment
    assert agent.queued_frames == 0
    out.flush()
    ev = await asyncio.wait_for(out.wait_for_playout(), 1.0)
    assert ev.interrupted is True


async def test_caller_hangup_ends_playback_as_interrupted(
    pair: tuple[RtpEndpoint, RtpEndpoint],
) -> None:
    _, agent = pair
    out = CallAudioOutput(agent)
    await out.capture_frame(_tone_frame(8000, 1000))
    out.flush()
    await asyncio.sleep(0.1)
    agent.close()  # what the edge does when the caller's BYE arrives
    ev = await asyncio.wait_for(out.wait_for_playout(), 1.0)
    assert ev.interrupted is True and ev.playback_position < 0.5
