"""Offline text-to-speech for LiveKit Agents: espeak-ng in-process (the ``espeakng-loader`` wheel).

The audio is produced at 8 kHz, the rate of the G.711 call it is played into: what the agent
synthesizes is what the caller hears, with no resampling on the way out. espeak-ng renders at
22.05 kHz; :func:`byeline.speech.espeak.synthesize` band-limits and resamples once, here.

Synthesis runs in a thread. espeak-ng is called through ctypes, which releases the GIL during
the call, so the event loop keeps running; the library is not re-entrant and
:mod:`byeline.speech.espeak` serialises it with a lock (a greeting takes a few tens of ms).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Never

from livekit.agents import APIConnectOptions, tts
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS

from ...speech.espeak import synthesize

__all__ = ["EspeakTTS"]

SAMPLE_RATE = 8000


class EspeakTTS(tts.TTS[Never]):
    """Speak with espeak-ng (``voice`` is an espeak-ng voice name, default ``en-us``) as 16-bit
    mono PCM at ``sample_rate`` Hz (default 8000, the call's rate)."""

    def __init__(self, *, voice: str = "en-us", sample_rate: int = SAMPLE_RATE) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False),
            sample_rate=sample_rate,
            num_channels=1,
        )
        self.voice = voice

    @property
    def model(self) -> str:
        return f"espeak-ng/{self.voice}"

    @property
    def provider(self) -> str:
        return "espeak-ng"

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> EspeakChunkedStream:
        return EspeakChunkedStream(tts=self, input_text=text, conn_options=conn_options)


class EspeakChunkedStream(tts.ChunkedStream):
    """One synthesis: the whole text rendered in a thread, then emitted as audio frames."""

    def __init__(self, *, tts: EspeakTTS, input_text: str, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._espeak = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        pcm = await asyncio.to_thread(
            synthesize, self.input_text, self._espeak.voice, rate=self._espeak.sample_rate
        )
        output_emitter.initialize(
            request_id=uuid.uuid4().hex,
            sample_rate=self._espeak.sample_rate,
            num_channels=1,
            mime_type="audio/pcm",
        )
        output_emitter.push(pcm)
        output_emitter.flush()
