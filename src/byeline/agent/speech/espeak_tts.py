"""Offline text-to-speech for LiveKit Agents: espeak-ng in-process (the ``espeakng-loader`` wheel).

The audio is produced at 8 kHz, the rate of the G.711 call it is played into: what the agent
synthesizes is what the caller hears, with no resampling on the way out. espeak-ng renders at
22.05 kHz; :func:`byeline.speech.espeak.synthesize` band-limits and resamples once, here.

Synthesis runs in a thread. espeak-ng is called through ctypes, which releases the GIL during
the call, so the event loop keeps running; the library is not re-entrant and
:mod:`byeline.speech.espeak` serialises it with a lock (a greeting takes a few tens of ms).

The prompts an agent says are few and fixed (greeting, reprompts, the routes' goodbyes), so the
audio of the last :data:`CACHE_ENTRIES` texts is kept, keyed by text, voice and rate: the same
text gives the same samples every time (espeak-ng alone is not bit-exact from one run to the
next), with no thread hop and no lock wait behind another call's synthesis at the moment a
goodbye must start. :class:`~byeline.agent.routing_agent.VoiceAgentRunner` pre-renders the
routes' goodbyes.

espeak-ng begins every text with ~39 ms of digital silence; it is cut to :data:`LEAD_IN_MS`
(:func:`trim_lead_in`), so the caller hears the answer that much sooner.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from typing import Final, Never

import numpy as np
from livekit.agents import APIConnectOptions, tts
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS

from ...speech.espeak import synthesize

__all__ = ["EspeakTTS", "trim_lead_in"]

SAMPLE_RATE = 8000
CACHE_ENTRIES: Final = 64
"""Synthesized texts kept per :class:`EspeakTTS` (a 3 s prompt at 8 kHz is 48 kB)."""
LEAD_IN_MS: Final = 5
"""Silence kept before the first sound of a synthesized text."""
SILENCE_FLOOR: Final = 16
"""Samples at or under this magnitude (of 32,767: -66 dBFS) count as silence."""


def trim_lead_in(pcm: bytes, sample_rate: int) -> bytes:
    """16-bit mono ``pcm`` from :data:`LEAD_IN_MS` before its first sound (a sample over
    :data:`SILENCE_FLOOR`); all of it when it is silent throughout."""
    samples = np.frombuffer(pcm, dtype="<i2", count=len(pcm) // 2)
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > SILENCE_FLOOR)
    if not loud.size:
        return pcm
    start = max(0, int(loud[0]) - sample_rate * LEAD_IN_MS // 1000)
    return pcm[2 * start :]


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
        self._cache: OrderedDict[tuple[str, str, int], bytes] = OrderedDict()

    def prerender(self, texts: list[str]) -> None:
        """Synthesize ``texts`` into the cache now (blocking: call it at start-up)."""
        for text in texts:
            key = (text, self.voice, self.sample_rate)
            if key not in self._cache:
                pcm = synthesize(text, self.voice, rate=self.sample_rate)
                self._cache[key] = trim_lead_in(pcm, self.sample_rate)
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)

    async def render(self, text: str) -> bytes:
        """``text`` as 16-bit mono PCM at :attr:`sample_rate`, from the cache when it was said
        before."""
        key = (text, self.voice, self.sample_rate)
        pcm = self._cache.get(key)
        if pcm is not None:
            self._cache.move_to_end(key)
            return pcm
        pcm = await asyncio.to_thread(synthesize, text, self.voice, rate=self.sample_rate)
        pcm = self._cache[key] = trim_lead_in(pcm, self.sample_rate)
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return pcm

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
        pcm = await self._espeak.render(self.input_text)
        output_emitter.initialize(
            request_id=uuid.uuid4().hex,
            sample_rate=self._espeak.sample_rate,
            num_channels=1,
            mime_type="audio/pcm",
        )
        output_emitter.push(pcm)
        output_emitter.flush()
