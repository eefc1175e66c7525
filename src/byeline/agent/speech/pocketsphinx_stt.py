"""Offline speech-to-text for LiveKit Agents: pocketsphinx with a model generated from the routes.

Not a streaming recogniser: wrap it with a VAD for an ``AgentSession``::

    stt = StreamAdapter(stt=PocketsphinxSTT.for_routes(routes), vad=silero.VAD.load())

Decoding runs in a pool of worker processes, not threads: pocketsphinx holds the GIL for the
whole of ``process_raw`` (measured: two threads decode 80 utterances in 7.1 s, one thread in
6.3 s; an asyncio ticker meant to wake every 5 ms stalled for 830 ms while decodes ran in
``asyncio.to_thread``). A process keeps the event loop, and the RTP timing it drives, free,
and uses every core. Workers are spawned, so, as for LiveKit Agents' own job processes,
the program's main module must be import-safe (``if __name__ == "__main__":``). Each worker
keeps one decoder per model (decoders are not thread-safe; a worker decodes one utterance at
a time). One pool is shared by every :class:`PocketsphinxSTT` of the process, so ten calls do
not start forty processes: utterances queue for a free worker (~0.1 s each).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import uuid
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Never

from livekit.agents import APIConnectionError, LanguageCode, stt, utils
from livekit.agents.types import NOT_GIVEN, APIConnectOptions, NotGivenOr
from livekit.agents.utils import is_given

from ..routes import Routes
from .language_model import (
    DEFAULT_KEYWORD_BOOST,
    LanguageModel,
    Transcript,
    decode_utterance,
    language_model_for_routes,
)

__all__ = ["PocketsphinxSTT", "default_workers", "shared_decoder_pool"]

_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()


def default_workers() -> int:
    """Worker processes of the shared pool: one a core, at most four (an utterance decodes in
    ~0.1 s, so four workers serve ~40 utterances a second)."""
    return max(1, min(4, os.cpu_count() or 1))


def shared_decoder_pool() -> ProcessPoolExecutor:
    """The process pool every :class:`PocketsphinxSTT` without an ``executor`` uses.

    Workers are spawned, not forked: forking a process that runs an event loop and threads
    copies their locks in whatever state they are in.
    """
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(
                max_workers=default_workers(), mp_context=multiprocessing.get_context("spawn")
            )
        return _pool


def _replace_broken_pool(broken: Executor) -> None:
    global _pool
    with _pool_lock:
        if _pool is broken:
            _pool = None
    broken.shutdown(wait=False, cancel_futures=True)


class PocketsphinxSTT(stt.STT[Never]):
    """Recognise an utterance with pocketsphinx's en-us model and a generated language model.

    ``language_model`` comes from :func:`~.language_model.build_language_model` (or use
    :meth:`for_routes`). ``executor`` runs the decoding; by default the shared process pool
    (:func:`shared_decoder_pool`); an executor passed in is the caller's to shut down.
    ``decoder_options`` are extra pocketsphinx settings (``lw``, ``beam``...).

    Audio of any sample rate is accepted: it is resampled to the model's 16 kHz. On 8 kHz
    G.711 that is far better than decoding at 8 kHz natively (see ``language_model.py``).
    """

    def __init__(
        self,
        *,
        language_model: LanguageModel,
        language: str = "en-US",
        executor: Executor | None = None,
        decoder_options: dict[str, str | int | float | bool] | None = None,
    ) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self.language_model = language_model
        self._language = language
        self._executor = executor
        self._setup = language_model.decoder_setup(**(decoder_options or {}))

    @classmethod
    def for_routes(
        cls,
        routes: Routes,
        *,
        keyword_boost: float = DEFAULT_KEYWORD_BOOST,
        executor: Executor | None = None,
    ) -> PocketsphinxSTT:
        """An STT whose language model is made from ``routes``' phrases (generated now)."""
        model = language_model_for_routes(routes, keyword_boost=keyword_boost)
        return cls(language_model=model, executor=executor)

    @property
    def model(self) -> str:
        return f"pocketsphinx-en-us/{self.language_model.digest[:12]}"

    @property
    def provider(self) -> str:
        return "pocketsphinx"

    def prewarm(self) -> None:
        """Start the worker processes and build their decoders before the first caller speaks
        (a cold worker costs ~0.3 s)."""
        executor = self._executor or shared_decoder_pool()
        workers = getattr(executor, "_max_workers", 1)
        for _ in range(workers):
            executor.submit(decode_utterance, self._setup, b"\0\0" * 4000, 8000)

    async def recognize_pcm(
        self, pcm: bytes, sample_rate: int, num_channels: int = 1
    ) -> Transcript:
        """Decode 16-bit PCM in the executor without blocking the event loop."""
        executor = self._executor or shared_decoder_pool()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                executor, decode_utterance, self._setup, pcm, sample_rate, num_channels
            )
        except BrokenProcessPool as exc:
            # A worker died (killed, out of memory, or the main module is not import-safe): the
            # next utterance gets a fresh pool. Not retried: a retry could only die the same way.
            _replace_broken_pool(executor)
            raise APIConnectionError(
                "pocketsphinx worker process died (is the program's main module guarded by "
                "`if __name__ == '__main__':`?)",
                retryable=False,
            ) from exc

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        frame = utils.merge_frames(buffer)
        transcript = await self.recognize_pcm(
            bytes(frame.data), frame.sample_rate, frame.num_channels
        )
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            request_id=uuid.uuid4().hex,
            alternatives=[
                stt.SpeechData(
                    language=LanguageCode(language if is_given(language) else self._language),
                    text=transcript.text,
                    end_time=frame.duration,
                    confidence=transcript.confidence,
                )
            ],
        )
