"""LiveKit Agents audio I/O bound to a call's RTP: ``AgentSession`` without a room.

``AgentSession.start(agent)`` without ``room=`` creates no ``RoomIO``: whatever was assigned to
``session.input.audio`` and ``session.output.audio`` beforehand is the session's audio.  These two
classes make the call's :class:`~byeline.net.rtp.RtpEndpoint` that audio:

- :class:`CallAudioInput` yields the caller's 20 ms G.711 frames (decoded to 8 kHz PCM by the
  endpoint) as ``rtc.AudioFrame``, upsampled to the rate the VAD/STT want (16 kHz by default)
  frame by frame (see :class:`_Upsampler` for why not ``rtc.AudioResampler``): about 9 µs per
  20 ms frame on this machine, 0.05 % of a core per call, and no added latency.
- :class:`CallAudioOutput` declares 8 kHz, so the framework resamples TTS audio before
  ``capture_frame``; each captured frame goes to ``RtpEndpoint.play`` in whole 20 ms packets.
  A segment (ended by ``flush``) is reported played (``playback_finished``) only when
  ``play()``'s futures say its last packet left the socket, never when it was merely queued:
  the agent's "goodbye played, now hang up" relies on it.  ``clear_buffer`` is barge-in:
  ``RtpEndpoint.clear()`` drops the queued packets and the segment is reported interrupted with
  the duration that really went out.

Nothing here blocks: capture and clear are O(frame) on the event loop that also runs the SIP
edge and the RTP ticker, and the pacing stays the ticker's (``play`` only queues).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Final

import numpy as np
from livekit import rtc
from livekit.agents.voice.io import AudioInput, AudioOutput, AudioOutputCapabilities

from ..net.rtp import FRAME_BYTES, RtpEndpoint

__all__ = ["CALL_SAMPLE_RATE", "CallAudioInput", "CallAudioOutput"]

log = logging.getLogger("byeline.agent")

CALL_SAMPLE_RATE: Final = 8000
"""G.711 audio: 8 kHz mono 16-bit once decoded."""


class CallAudioInput(AudioInput):
    """The caller's audio as ``rtc.AudioFrame``: 20 ms frames at ``sample_rate``.

    It reads ``RtpEndpoint.audio_frames()`` (one consumer per endpoint; the endpoint keeps 2 s
    for a slow reader) and ends when the endpoint closes.  Lost packets arrive as silence, so
    the VAD sees a continuous clock.
    """

    def __init__(
        self,
        media: RtpEndpoint,
        *,
        sample_rate: int = 16000,
        label: str = "byeline.CallAudioInput",
    ) -> None:
        super().__init__(label=label)
        self.media = media
        self.sample_rate = sample_rate
        if sample_rate % CALL_SAMPLE_RATE:
            raise ValueError(f"sample_rate must be a multiple of 8000 Hz, got {sample_rate}")
        self._frames = media.audio_frames()
        self._upsampler = _Upsampler(sample_rate // CALL_SAMPLE_RATE)
        self.frames_in = 0
        """20 ms frames read from the call (monitoring, tests)."""

    async def __anext__(self) -> rtc.AudioFrame:
        pcm = await self._frames.__anext__()
        self.frames_in += 1
        pcm = self._upsampler(pcm)
        return rtc.AudioFrame(pcm, self.sample_rate, 1, len(pcm) // 2)

    async def aclose(self) -> None:
        """Stop reading the endpoint (the endpoint itself belongs to the call)."""
        await self._frames.aclose()


class _Upsampler:
    """Integer-ratio upsampling by linear interpolation, one frame in, one frame out.

    ``rtc.AudioResampler`` (a windowed-sinc resampler) buffers about 100 ms before it outputs
    anything (measured: 1732 samples at once after five 20 ms frames), which would delay the
    VAD's end-of-speech by as much.  G.711 audio has nothing above 4 kHz, so interpolation
    loses nothing a VAD or STT uses; it costs ~9 µs per 20 ms frame and one input sample of
    delay (125 µs).
    """

    def __init__(self, ratio: int) -> None:
        self.ratio = ratio
        self._steps = (np.arange(1, ratio + 1, dtype=np.float32) / ratio)[None, :]
        self._last = np.float32(0)

    def __call__(self, pcm: bytes) -> bytes:
        if self.ratio == 1:
            return pcm
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
        if not samples.size:
            return b""
        before = np.concatenate(([self._last], samples[:-1]))
        out = before[:, None] + (samples - before)[:, None] * self._steps
        self._last = samples[-1]
        return np.round(out.reshape(-1)).astype("<i2").tobytes()


@dataclass
class _Segment:
    """One playback segment: the audio between two ``flush()`` (or ``clear_buffer()``)."""

    pending: bytearray = field(default_factory=bytearray)
    sent: list[tuple[asyncio.Future[bool], float]] = field(default_factory=list)
    interrupted: bool = False
    started: bool = False


class CallAudioOutput(AudioOutput):
    """Agent speech to the caller through ``RtpEndpoint.play``.

    ``playback_finished`` carries the duration whose packets really left the socket; segments
    finish in order.  Packet granularity: audio is handed to ``play`` in whole 20 ms frames,
    the remainder of a segment at ``flush`` (``play`` pads its last frame with silence).
    """

    def __init__(self, media: RtpEndpoint, *, label: str = "byeline.CallAudioOutput") -> None:
        super().__init__(
            label=label,
            capabilities=AudioOutputCapabilities(pause=False),
            sample_rate=CALL_SAMPLE_RATE,
        )
        self.media = media
        self._segment: _Segment | None = None
        self._watchers: set[asyncio.Task[None]] = set()
        self._last_watch: asyncio.Task[None] | None = None
        self._resampler: rtc.AudioResampler | None = None
        self._resampler_rate = 0
        self.segments_played: list[tuple[float, bool]] = []
        """(played seconds, interrupted) of every finished segment (monitoring, tests)."""

    # -- AudioOutput ------------------------------------------------------------------------------

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        """Queue ``frame`` for the caller; returns at once (playback is paced by the ticker)."""
        await super().capture_frame(frame)
        segment = self._segment
        if segment is None:
            segment = self._segment = _Segment()
        if segment.interrupted:
            return  # cleared mid-segment: the rest of it is not for the caller any more
        segment.pending += self._to_call_pcm(frame)
        if not segment.started:
            segment.started = True
            self.on_playback_started(created_at=time.time())
        whole = len(segment.pending) - len(segment.pending) % FRAME_BYTES
        if whole:
            self._send(segment, bytes(segment.pending[:whole]))
            del segment.pending[:whole]

    def flush(self) -> None:
        """End the segment: send its tail; report it once its last packet is on the wire."""
        super().flush()
        segment, self._segment = self._segment, None
        if segment is None:
            return
        if self._resampler is not None:
            tail = b"".join(bytes(f.data) for f in self._resampler.flush())
            self._resampler = None
            if not segment.interrupted:
                segment.pending += tail
        if segment.pending and not segment.interrupted:
            self._send(segment, bytes(segment.pending))
        segment.pending.clear()
        previous = self._last_watch
        task = asyncio.get_running_loop().create_task(self._watch(segment, previous))
        self._last_watch = task
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    def clear_buffer(self) -> None:
        """Barge-in: drop every queued packet at once; open segments end as interrupted."""
        self.media.clear()
        if self._segment is not None:
            self._segment.interrupted = True
            self._segment.pending.clear()

    # -- inside -----------------------------------------------------------------------------------

    def _send(self, segment: _Segment, pcm: bytes) -> None:
        segment.sent.append((self.media.play(pcm), len(pcm) / (2 * CALL_SAMPLE_RATE)))

    async def _watch(self, segment: _Segment, previous: asyncio.Task[None] | None) -> None:
        if previous is not None and not previous.done():
            # Segments finish in capture order, as the framework counts them.
            await asyncio.wait([previous])
        played = 0.0
        interrupted = segment.interrupted
        for future, duration in segment.sent:
            if await future:
                played += duration
            else:
                interrupted = True  # cleared, or the endpoint closed (the caller hung up)
        self.segments_played.append((played, interrupted))
        self.on_playback_finished(playback_position=played, interrupted=interrupted)

    def _to_call_pcm(self, frame: rtc.AudioFrame) -> bytes:
        samples = np.frombuffer(frame.data, dtype=np.int16)
        if frame.num_channels > 1:
            samples = samples.reshape(-1, frame.num_channels).mean(axis=1).astype(np.int16)
        if frame.sample_rate == CALL_SAMPLE_RATE:
            return samples.astype("<i2").tobytes()
        # The session resamples to ``sample_rate`` already; this covers a direct caller.
        if self._resampler is None or self._resampler_rate != frame.sample_rate:
            self._resampler = rtc.AudioResampler(
                frame.sample_rate,
                CALL_SAMPLE_RATE,
                num_channels=1,
                quality=rtc.AudioResamplerQuality.QUICK,  # MEDIUM holds back 80-120 ms
            )
            self._resampler_rate = frame.sample_rate
        mono = rtc.AudioFrame(samples.tobytes(), frame.sample_rate, 1, len(samples))
        return b"".join(bytes(f.data) for f in self._resampler.push(mono))

    async def aclose(self) -> None:
        """Stop watching; segments still queued are reported interrupted by ``clear``."""
        for task in list(self._watchers):
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
