"""Offline speech-to-text for LiveKit Agents: pocketsphinx with a model generated from the routes.

:class:`PocketsphinxSTT` recognises whole utterances; wrap it with a VAD for an ``AgentSession``::

    stt = StreamAdapter(stt=PocketsphinxSTT.for_routes(routes), vad=silero.VAD.load())

:meth:`PocketsphinxSTT.for_session` gives the streaming recogniser of one session (what
:class:`~byeline.agent.routing_agent.VoiceAgentRunner` uses): it decodes while the caller speaks,
in :class:`DecoderWorkers` processes (see :mod:`.streaming`), and needs no VAD of its own. The
session's VAD tells it when speech starts (:meth:`PocketsphinxSessionSTT.speech_started`, wired
to ``user_state_changed``) and ends (``manual_flush``: LiveKit flushes the stream at the VAD's
end of speech); the transcript is ready a few ms after the flush.

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
import contextlib
import itertools
import logging
import multiprocessing
import os
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.process import BaseProcess
from typing import Any, Final, Never

import numpy as np
from livekit import rtc
from livekit.agents import APIConnectionError, LanguageCode, stt, utils
from livekit.agents.types import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    APIConnectOptions,
    NotGivenOr,
)
from livekit.agents.utils import is_given

from ..routes import Routes
from .language_model import (
    DEFAULT_KEYWORD_BOOST,
    DecoderSetup,
    LanguageModel,
    Transcript,
    decode_utterance,
    language_model_for_routes,
)
from .streaming import CMN_SPEECH_SECONDS, serve_decoder_worker

__all__ = [
    "WORKER_NICENESS",
    "DecoderWorkers",
    "PocketsphinxSTT",
    "PocketsphinxSessionSTT",
    "default_workers",
    "shared_decoder_pool",
    "shared_decoder_workers",
]

log = logging.getLogger("byeline.agent.speech")

_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()


def default_workers() -> int:
    """Worker processes of the shared pool: one for each core this process may run on (its
    affinity, as ``taskset`` or a container's cpuset leave it), at most four (an utterance
    decodes in ~0.1 s, so four workers serve ~40 utterances a second). More workers than cores
    only share a core: each then decodes at half speed, and the event loop, which paces the
    calls' RTP and runs the VAD, gets a smaller share of it."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity on this platform
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


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

    def for_session(self, *, workers: DecoderWorkers | None = None) -> PocketsphinxSessionSTT:
        """The streaming recogniser of one ``AgentSession``, with this model (see
        :class:`PocketsphinxSessionSTT`). Cheap: the model and the worker processes are shared."""
        return PocketsphinxSessionSTT(
            setup=self._setup,
            model_name=self.model,
            language=self._language,
            workers=workers or shared_decoder_workers(),
        )


# ---------------------------------------------------------------------------------------------
# Streaming: worker processes that keep an utterance's decoder between chunks.
# ---------------------------------------------------------------------------------------------


class _Worker:
    """One decoder process, its two pipes, and the thread that reads its answers.

    The reader thread blocks in ``recv`` (no GIL held) and hands each answer to the event loop
    of the future waiting for it, so any loop (and a test's fresh loop) can use the workers.
    """

    def __init__(self, index: int, niceness: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        inbox_r, self._inbox = ctx.Pipe(duplex=False)
        self._outbox, outbox_w = ctx.Pipe(duplex=False)
        self.process: BaseProcess = ctx.Process(
            target=serve_decoder_worker,
            args=(inbox_r, outbox_w, niceness),
            name=f"byeline-stt-{index}",
            daemon=True,
        )
        self.process.start()
        inbox_r.close()
        outbox_w.close()
        self.open = 0  # utterances assigned and not finished
        self.alive = True
        self._send_lock = threading.Lock()
        self._waiting: dict[int, asyncio.Future[Transcript]] = {}
        self._waiting_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name=f"{self.process.name}-reader")
        self._reader.daemon = True
        self._reader.start()

    def send(self, message: tuple[Any, ...]) -> None:
        if not self.alive:
            raise APIConnectionError("pocketsphinx worker process died", retryable=False)
        try:
            with self._send_lock:
                self._inbox.send(message)
        except (OSError, ValueError) as exc:
            self.alive = False
            raise APIConnectionError("pocketsphinx worker process died", retryable=False) from exc

    def expect(self, key: int) -> asyncio.Future[Transcript]:
        future: asyncio.Future[Transcript] = asyncio.get_running_loop().create_future()
        with self._waiting_lock:
            self._waiting[key] = future
        return future

    def _read(self) -> None:
        while True:
            try:
                kind, key, payload = self._outbox.recv()
            except (EOFError, OSError):
                break
            with self._waiting_lock:
                future = self._waiting.pop(key, None)
            if future is not None:
                _resolve(future, kind, payload)
        self.alive = False
        with self._waiting_lock:
            waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            _resolve(future, "error", "pocketsphinx worker process died")

    def close(self) -> None:
        self.alive = False
        with contextlib.suppress(OSError):
            self._inbox.close()
        self.process.join(timeout=2)
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=2)


def _resolve(future: asyncio.Future[Transcript], kind: str, payload: Any) -> None:
    def settle() -> None:
        if future.done():
            return
        if kind == "final":
            future.set_result(payload)
        else:
            future.set_exception(APIConnectionError(f"pocketsphinx: {payload}", retryable=False))

    with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
        future.get_loop().call_soon_threadsafe(settle)


WORKER_NICENESS: Final = 5
"""How much lower the decoder workers' priority is than the server's (``nice``). The event loop
paces every call's RTP, runs the VAD and plays the answer; a decoder has slack until its caller
stops, and then (see :func:`~.streaming.next_message`) decodes that caller first. Alternated in
``bench/speech.py``, four pairs: spoken calls per core 12, 12, 12, 10 at 5 against 12, 8, 8, 8 at
0 (p95 at 10 calls 720–780 ms against 721–1,059)."""


class DecoderWorkers:
    """Processes that decode utterances as their audio arrives (:mod:`.streaming`).

    An utterance stays on one worker (its decoder holds state between chunks); a new one goes
    to the worker with the fewest open utterances. ``niceness`` lowers the workers' priority
    (:data:`WORKER_NICENESS` by default): the event loop's RTP pacing and VAD come first,
    decoding has slack until the turn ends. Processes start on first use (or :meth:`start`); a
    dead one is replaced on the next utterance.
    """

    def __init__(self, workers: int | None = None, *, niceness: int = WORKER_NICENESS) -> None:
        self.size = workers or default_workers()
        self.niceness = niceness
        self._workers: list[_Worker | None] = [None] * self.size
        self._keys = itertools.count(1)
        self._lock = threading.Lock()

    def start(self, setup: DecoderSetup | None = None) -> None:
        """Start every worker now; with ``setup``, each builds its decoders too."""
        for i in range(self.size):
            worker = self._worker(i)
            if setup is not None:
                worker.send(("warm", 0, setup))

    def _worker(self, index: int) -> _Worker:
        with self._lock:
            worker = self._workers[index]
            if worker is None or not worker.alive:
                if worker is not None:
                    threading.Thread(target=worker.close, daemon=True).start()
                worker = self._workers[index] = _Worker(index, self.niceness)
            return worker

    def open(self, setup: DecoderSetup, sample_rate: int, cmn_seconds: float) -> _Handle:
        """Begin an utterance of 16-bit mono PCM at ``sample_rate``."""
        index = min(range(self.size), key=self._load)
        worker = self._worker(index)
        key = next(self._keys)
        worker.send(("open", key, setup, sample_rate, cmn_seconds))
        worker.open += 1
        return _Handle(worker, key)

    def _load(self, index: int) -> int:
        worker = self._workers[index]
        return worker.open if worker is not None and worker.alive else 0

    def close(self) -> None:
        """Stop the workers (they also end with this process: they are daemons)."""
        with self._lock:
            workers, self._workers = self._workers, [None] * self.size
        for worker in workers:
            if worker is not None:
                worker.close()


class _Handle:
    """One utterance on one worker."""

    def __init__(self, worker: _Worker, key: int) -> None:
        self.worker = worker
        self.key = key
        self.done = False
        self.lost = False

    def feed(self, pcm: bytes) -> None:
        # A worker that died mid-utterance loses this utterance only: finish() reports it, and
        # the next utterance gets a new worker.  Raising here would end the caller's whole stream.
        if self.lost:
            return
        try:
            self.worker.send(("audio", self.key, pcm))
        except APIConnectionError:
            self.lost = True

    async def finish(self) -> Transcript:
        future = self.worker.expect(self.key)
        self._end(("finish", self.key))
        return await future

    def abandon(self) -> None:
        with contextlib.suppress(APIConnectionError):
            self._end(("abandon", self.key))

    def _end(self, message: tuple[Any, ...]) -> None:
        if self.done:
            raise RuntimeError("utterance already ended")
        self.done = True
        self.worker.open -= 1
        self.worker.send(message)


_workers: DecoderWorkers | None = None


def shared_decoder_workers() -> DecoderWorkers:
    """The :class:`DecoderWorkers` every :class:`PocketsphinxSessionSTT` without ``workers``
    uses (one worker a core, at most four, like the batch pool)."""
    global _workers
    with _pool_lock:
        if _workers is None:
            _workers = DecoderWorkers()
        return _workers


#: Audio kept from before the VAD's start of speech. Silero reports speech ~0.1 s after it
#: begins and pads its own segments with 0.5 s; the VAD runs in a thread and, with many calls on
#: one core, reports later still, while this stream has read on: 1 s covers a 0.4 s lag.
PREFIX_SECONDS = 1.0
#: Audio sent to the worker at a time while the caller speaks (five 20 ms frames).
CHUNK_SECONDS = 0.1
#: An utterance the VAD never ends is cut here (silero's own limit is 60 s).
MAX_UTTERANCE_SECONDS = 60.0


class PocketsphinxSessionSTT(stt.STT[Never]):
    """Streaming pocketsphinx for one ``AgentSession`` (make it with
    :meth:`PocketsphinxSTT.for_session`).

    Between utterances the stream keeps the last :data:`PREFIX_SECONDS` of audio. When the
    session's VAD reports speech, :meth:`speech_started` opens an utterance on a worker with that
    audio, and every frame after it is sent on (in :data:`CHUNK_SECONDS` chunks) and decoded
    there. LiveKit flushes the stream (``manual_flush``) at the VAD's end of speech: the worker
    finishes the utterance and the stream emits its ``FINAL_TRANSCRIPT``.
    """

    def __init__(
        self,
        *,
        setup: DecoderSetup,
        model_name: str,
        language: str,
        workers: DecoderWorkers,
    ) -> None:
        super().__init__(
            capabilities=stt.STTCapabilities(
                streaming=True, interim_results=False, manual_flush=True, offline_recognize=False
            )
        )
        self._setup = setup
        self._model_name = model_name
        self._language = language
        self.workers = workers
        self._streams: list[PocketsphinxRecognizeStream] = []

    @property
    def model(self) -> str:
        return self._model_name

    @property
    def provider(self) -> str:
        return "pocketsphinx"

    def prewarm(self) -> None:
        """Start the worker processes and build their decoders before the first caller speaks."""
        self.workers.start(self._setup)

    def speech_started(self) -> None:
        """The session's VAD heard the caller start speaking (``user_state_changed``)."""
        for stream in self._streams:
            stream.speech_started()

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> PocketsphinxRecognizeStream:
        stream = PocketsphinxRecognizeStream(
            stt=self,
            conn_options=conn_options,
            language=language if is_given(language) else self._language,
        )
        self._streams.append(stream)
        return stream

    def _forget(self, stream: PocketsphinxRecognizeStream) -> None:
        with contextlib.suppress(ValueError):
            self._streams.remove(stream)

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        raise NotImplementedError("a session's streaming recogniser: use stream()")


class PocketsphinxRecognizeStream(stt.RecognizeStream):
    """The audio of one session, decoded utterance by utterance on a worker."""

    def __init__(
        self,
        *,
        stt: PocketsphinxSessionSTT,
        conn_options: APIConnectOptions,
        language: str,
    ) -> None:
        super().__init__(stt=stt, conn_options=conn_options)
        self._session_stt = stt
        self._language = language
        self._start_requested = False
        self.utterances: list[Transcript] = []
        """Transcripts of the finished utterances, with their decode CPU (monitoring, tests)."""

    def speech_started(self) -> None:
        """Open an utterance at the next frame (a no-op while one is open)."""
        self._start_requested = True

    async def _run(self) -> None:
        setup = self._session_stt._setup
        workers = self._session_stt.workers
        ring: deque[bytes] = deque()
        ring_bytes = 0
        utterance: _Handle | None = None
        rate = 0
        pending = bytearray()
        sent_bytes = 0
        finishing: asyncio.Task[None] | None = None

        def finish() -> None:
            nonlocal utterance, finishing
            assert utterance is not None
            if pending:
                utterance.feed(bytes(pending))
                pending.clear()
            finishing = asyncio.create_task(self._emit_final(utterance, finishing))
            utterance = None

        try:
            async for item in self._input_ch:
                if isinstance(item, self._FlushSentinel):
                    self._start_requested = False
                    if utterance is not None:
                        finish()
                    continue
                pcm = _mono_pcm(item)
                if rate != item.sample_rate:
                    if utterance is not None:
                        utterance.abandon()
                        utterance = None
                    rate = item.sample_rate
                    ring.clear()
                    ring_bytes = 0
                if utterance is None and self._start_requested:
                    self._start_requested = False
                    # The mean is taken once the utterance holds CMN_SPEECH_SECONDS of audio
                    # past its prefix.
                    cmn_seconds = ring_bytes / (2 * rate) + CMN_SPEECH_SECONDS
                    utterance = workers.open(setup, rate, cmn_seconds)
                    pending[:] = b"".join(ring)
                    ring.clear()
                    ring_bytes = 0
                    sent_bytes = 0
                    self._event_ch.send_nowait(
                        stt.SpeechEvent(type=stt.SpeechEventType.START_OF_SPEECH)
                    )
                if utterance is None:
                    ring.append(pcm)
                    ring_bytes += len(pcm)
                    while ring and ring_bytes - len(ring[0]) >= 2 * rate * PREFIX_SECONDS:
                        ring_bytes -= len(ring.popleft())
                    continue
                pending += pcm
                if len(pending) >= 2 * rate * CHUNK_SECONDS:
                    utterance.feed(bytes(pending))
                    sent_bytes += len(pending)
                    pending.clear()
                    if sent_bytes >= 2 * rate * MAX_UTTERANCE_SECONDS:
                        finish()
            if finishing is not None:
                await finishing
        finally:
            if utterance is not None:
                utterance.abandon()
            self._session_stt._forget(self)

    async def _emit_final(self, utterance: _Handle, previous: asyncio.Task[None] | None) -> None:
        transcript: Transcript | None
        try:
            transcript = await utterance.finish()
        except Exception as exc:
            # One utterance lost (a worker error or a dead worker), not the rest of the call: the
            # turn still ends, with nothing heard, and the next utterance is recognised as usual.
            log.warning("pocketsphinx: utterance not recognised: %s", exc)
            transcript = None
        if previous is not None:
            # Transcripts in the order of their utterances; the previous one failed on its own.
            with contextlib.suppress(Exception):
                await previous
        self._event_ch.send_nowait(
            stt.SpeechEvent(type=stt.SpeechEventType.END_OF_SPEECH, speech_end_time=time.time())
        )
        if transcript is None:
            return
        self.utterances.append(transcript)
        if not transcript.text:
            return
        self._event_ch.send_nowait(
            stt.SpeechEvent(
                type=stt.SpeechEventType.FINAL_TRANSCRIPT,
                request_id=uuid.uuid4().hex,
                alternatives=[
                    stt.SpeechData(
                        language=LanguageCode(self._language),
                        text=transcript.text,
                        confidence=transcript.confidence,
                    )
                ],
            )
        )


def _mono_pcm(frame: rtc.AudioFrame) -> bytes:
    if frame.num_channels == 1:
        return bytes(frame.data)
    samples = np.frombuffer(frame.data, dtype=np.int16).reshape(-1, frame.num_channels)
    return bytes(samples.mean(axis=1).astype("<i2").tobytes())
