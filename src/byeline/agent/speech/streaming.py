"""Streaming recognition: an utterance decoded while the caller speaks, in a worker process.

Batch decoding (:func:`~.language_model.decode_utterance`) starts when the VAD has ended the
turn, so its ~0.1 s (0.3-0.5 s with ten calls on one core) is added to every answer, and ten
calls ending their turns together queue for the workers. Here the audio goes to a worker as it
arrives; at the end of the turn only the last ~0.1 s of audio and pocketsphinx's backtrace are
left (a few ms), and the decoding CPU is spread over the utterance.

Cepstral mean normalisation is what makes this more than ``process_raw`` in a loop. The batch
decoder normalises with the mean of the whole utterance; a streaming one cannot know it. Live
CMN from pocketsphinx's initial value (``40,3,-1``), made for wide-band microphones, hears
almost nothing on an upsampled telephone line (measured: 2 of 30 transcripts equal to batch),
and a fixed prior taken from another voice still loses words (22 of 30 routed right against 24
for batch). So an utterance is buffered until it holds :data:`CMN_SPEECH_SECONDS` of speech after
its start; the batch mean of that much (the same computation the batch decoder does, on a
second decoder whose keyword search is cheap) is set on the decoder, which then decodes the
buffer and every later chunk as it comes. An utterance that ends sooner is decoded as a whole,
exactly as in batch. Measured on 30 Festival sentences through G.711 (the 6 shipped recordings
and 24 more, segmented by silero as in a call), routed right by the intent engine: streamed
27/30, batch on the same segments 24/30; 13 of 30 transcripts identical word for word (the
others differ in a word or two, either way). The streamed decoder also skips pocketsphinx's
second pass (:func:`streaming_setup`), which would cost ~40 ms at the end of the turn.

The 8 kHz call audio is upsampled to the model's 16 kHz by a half-band windowed-sinc filter,
frame by frame (batch uses the FFT of the whole utterance; the two differ only at the edges).

Nothing here imports ``livekit``: worker processes load numpy and pocketsphinx only.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from typing import Any, Final

import numpy as np
import pocketsphinx  # type: ignore[import-untyped]

from .language_model import (
    DECODER_SAMPLE_RATE,
    DecoderSetup,
    Transcript,
    decode_utterance,
)

__all__ = [
    "CMN_SPEECH_SECONDS",
    "HalfBandUpsampler",
    "StreamingUtterance",
    "next_message",
    "serve_decoder_worker",
]

CMN_SPEECH_SECONDS: Final = 0.8
"""Audio past the VAD's start of speech an utterance holds before its mean is taken and
streaming starts (the stream adds the prefix it sends before it). Measured on 30 sentences,
segmented by silero as in a call, 0.6 s prefix, routed right by the intent engine: 0.6 s 26/30,
0.8 s 27/30, 1.0 s 26/30, 1.2 s 26/30; batch on the VAD's segments 24/30."""

_HALF_TAPS: Final = 16  # taps each side of an odd (interpolated) output sample


class HalfBandUpsampler:
    """8 kHz → 16 kHz, chunk by chunk: even outputs are the input samples, odd ones a
    windowed-sinc interpolation (32 taps, Blackman window, unity gain). The output lags the
    input by :data:`_HALF_TAPS` samples until :meth:`flush`."""

    def __init__(self) -> None:
        k = np.arange(-_HALF_TAPS + 1, _HALF_TAPS + 1, dtype=np.float64)
        taps = np.sinc(0.5 - k) * np.blackman(2 * _HALF_TAPS + 2)[1:-1]
        # Reversed for np.convolve's flip: out_odd[n] = sum_j x[n + j] * taps[j].
        self._taps = (taps / taps.sum())[::-1]
        # Zeros stand for the audio before the utterance (as the FFT's periodic edge is zeros
        # for an utterance padded with silence); the first output is at input sample 0.
        self._history = np.zeros(_HALF_TAPS - 1, dtype=np.float64)

    def __call__(self, pcm: bytes) -> bytes:
        samples = np.frombuffer(pcm, dtype="<i2", count=len(pcm) // 2).astype(np.float64)
        if not samples.size:
            return b""
        x = np.concatenate((self._history, samples))
        ready = len(x) - (2 * _HALF_TAPS - 1)  # outputs whose right-hand taps have arrived
        if ready <= 0:
            self._history = x
            return b""
        odd = np.convolve(x, self._taps, mode="valid")[:ready]
        even = x[_HALF_TAPS - 1 : _HALF_TAPS - 1 + ready]
        self._history = x[ready:]
        return _to_pcm(np.column_stack((even, odd)).reshape(-1))

    def flush(self) -> bytes:
        """The rest of the audio, as if silence followed it."""
        pending = len(self._history) - (_HALF_TAPS - 1)
        if pending <= 0:
            return b""
        out = self(bytes(2 * _HALF_TAPS))
        return out[: 4 * pending]


def _to_pcm(samples: np.ndarray[Any, Any]) -> bytes:
    return bytes(np.clip(np.round(samples), -32768, 32767).astype("<i2").tobytes())


# Decoders kept by the worker, per setup: a decoder takes ~7 ms to build and is reusable once
# its utterance has ended. ``_cmn_decoders`` compute the batch mean only (see batch_mean).
_free: dict[DecoderSetup, list[Any]] = {}
_cmn_decoders: dict[DecoderSetup, Any] = {}

#: The mean-only decoder's search: one word, scored on one frame in 50 with one Gaussian and
#: one HMM a frame. pocketsphinx searches every frame of an utterance at ``end_utt``, and the
#: mean is taken before any search runs, so none of these settings changes it.
_CMN_GRAMMAR: Final = "#JSGF V1.0;\ngrammar cmn;\npublic <s> = hello;\n"
_CMN_SEARCH_OPTIONS: Final[dict[str, str | int | float | bool]] = {
    "ds": 50,
    "topn": 1,
    "maxhmmpf": 1,
}


def _new_decoder(setup: DecoderSetup) -> Any:
    options: dict[str, str | int | float | bool] = {"loglevel": "FATAL"}
    options.update(setup.options)
    return pocketsphinx.Decoder(hmm=setup.hmm, lm=setup.lm, dict=setup.dictionary, **options)


def _take_decoder(setup: DecoderSetup) -> Any:
    free = _free.setdefault(setup, [])
    return free.pop() if free else _new_decoder(setup)


def _give_back(setup: DecoderSetup, decoder: Any) -> None:
    _free.setdefault(setup, []).append(decoder)


def batch_mean(setup: DecoderSetup, audio16: bytes) -> str:
    """The cepstral mean the batch decoder would use for ``audio16`` (pocketsphinx's format).

    ``process_raw(full_utt=True)`` computes it; ``end_utt`` then searches the utterance's
    frames, which nobody reads here. A keyword search there cost ~60 ms for 1.8 s of audio,
    ~27 % of a streamed utterance's CPU; the one-word grammar with
    :data:`_CMN_SEARCH_OPTIONS` costs ~1 ms, with the same mean to the last digit.
    """
    decoder = _cmn_decoders.get(setup)
    if decoder is None:
        mean_only = replace(
            setup, options=tuple(sorted({**dict(setup.options), **_CMN_SEARCH_OPTIONS}.items()))
        )
        decoder = _new_decoder(mean_only)
        decoder.add_jsgf_string("cmn", _CMN_GRAMMAR)
        decoder.activate_search("cmn")
        _cmn_decoders[setup] = decoder
    decoder.reinit_feat()
    decoder.start_utt()
    decoder.process_raw(audio16, no_search=True, full_utt=True)
    mean = str(decoder.get_cmn())
    decoder.end_utt()
    return mean


def streaming_setup(setup: DecoderSetup) -> DecoderSetup:
    """``setup`` for a streamed utterance: without pocketsphinx's second pass (``fwdflat``).

    fwdflat rescores the whole utterance at ``end_utt``: 40 ms of the ~45 ms an utterance
    streamed with it still takes when the turn ends, against ~3 ms without (median, 26
    utterances). Routing measured the same: 27/30 either way (batch on the VAD's segments,
    second pass on: 24/30). Batch decoding (short utterances here too) keeps it.
    """
    if any(name == "fwdflat" for name, _ in setup.options):
        return setup
    return replace(setup, options=tuple(sorted((*setup.options, ("fwdflat", False)))))


@dataclass
class StreamingUtterance:
    """One utterance decoded as its audio arrives (16-bit mono PCM at ``sample_rate``).

    :meth:`feed` audio, then :meth:`finish` for the transcript; :meth:`abandon` drops it. Call
    audio is 8 kHz (upsampled here) or 16 kHz; any other rate is decoded at :meth:`finish`.
    """

    setup: DecoderSetup
    sample_rate: int
    cmn_seconds: float = CMN_SPEECH_SECONDS
    started: float = field(default_factory=time.perf_counter)
    _raw: bytearray = field(default_factory=bytearray)
    _audio16: bytearray = field(default_factory=bytearray)
    _upsampler: HalfBandUpsampler | None = None
    _decoder: Any = None
    busy_seconds: float = 0.0
    """CPU time spent on this utterance so far (monitoring)."""

    def __post_init__(self) -> None:
        if self.sample_rate == DECODER_SAMPLE_RATE // 2:
            self._upsampler = HalfBandUpsampler()
        self._stream_setup = streaming_setup(self.setup)

    @property
    def streaming(self) -> bool:
        """True once the decoder runs on the audio as it comes."""
        return self._decoder is not None

    def feed(self, pcm: bytes) -> None:
        t0 = time.perf_counter()
        self._raw += pcm
        if self.sample_rate == DECODER_SAMPLE_RATE:
            audio = pcm
        elif self._upsampler is not None:
            audio = self._upsampler(pcm)
        else:
            return  # another rate: decoded in batch at the end
        if self._decoder is not None:
            self._decoder.process_raw(audio, full_utt=False)
        else:
            self._audio16 += audio
            if len(self._audio16) >= 2 * DECODER_SAMPLE_RATE * self.cmn_seconds:
                self._start()
        self.busy_seconds += time.perf_counter() - t0

    def _start(self) -> None:
        # The batch mean of the audio so far, as the batch decoder would compute it.
        decoder = _take_decoder(self._stream_setup)
        decoder.reinit_feat()
        decoder.set_cmn(batch_mean(self.setup, bytes(self._audio16)))
        decoder.start_utt()
        decoder.process_raw(bytes(self._audio16), full_utt=False)
        self._decoder = decoder
        self._audio16.clear()

    def finish(self) -> Transcript:
        """End the utterance: its transcript (empty when nothing was heard)."""
        t0 = time.perf_counter()
        decoder = self._decoder
        if decoder is None:
            # Shorter than the mean's window: the whole utterance at once, as in batch.
            transcript = decode_utterance(self.setup, bytes(self._raw), self.sample_rate)
            self.busy_seconds += time.perf_counter() - t0
            return Transcript(transcript.text, transcript.confidence, self.busy_seconds)
        self._decoder = None
        try:
            if self._upsampler is not None:
                tail = self._upsampler.flush()
                if tail:
                    decoder.process_raw(tail, full_utt=False)
            decoder.end_utt()
            hyp = decoder.hyp()
        finally:
            _give_back(self._stream_setup, decoder)
        text = " ".join(hyp.hypstr.split()) if hyp is not None else ""
        confidence = min(1.0, max(0.0, float(hyp.prob))) if hyp is not None and text else 0.0
        self.busy_seconds += time.perf_counter() - t0
        return Transcript(text, confidence, self.busy_seconds)

    def abandon(self) -> None:
        """Drop the utterance; its decoder goes back to the worker's free list."""
        decoder, self._decoder = self._decoder, None
        if decoder is not None:
            try:
                decoder.end_utt()
            finally:
                _give_back(self._stream_setup, decoder)


# ---------------------------------------------------------------------------------------------
# The worker process: messages in, transcripts out, over one pipe.
#
#   ("open", key, setup, rate, seconds)  an utterance begins; streaming starts after `seconds`
#   ("audio", key, pcm)                  more of its audio
#   ("finish", key)                      it ended: the worker answers ("final", key, Transcript)
#   ("abandon", key)                     drop it, no answer
#   ("warm", key, setup)                 build the decoders now: answers ("final", key, empty)
#
# A failure answers ("error", key, message) and forgets the utterance.
# ---------------------------------------------------------------------------------------------

#: Messages a worker holds read ahead of its work (1,000 is 100 s of audio at the stream's
#: 0.1 s chunks); past it the pipe itself buffers, and the sender waits.
READ_AHEAD: Final = 1000


def next_message(pending: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    """Take the message to handle next from ``pending`` (in arrival order).

    An utterance whose ``finish`` has arrived goes first (the first to have finished, when
    several have): a caller waits for its transcript, while the audio of callers still
    speaking can wait. One utterance's messages stay in order (the first pending message of
    the chosen utterance is taken).
    When several callers speak at once and decoding falls behind, the answer to one that
    has stopped then waits for its own audio only, not for everyone's queued before it.
    """
    for message in pending:
        if message[0] == "finish":
            key = message[1]
            for i, first in enumerate(pending):
                if first[1] == key:
                    return pending.pop(i)
    return pending.pop(0)


def serve_decoder_worker(inbox: Connection, outbox: Connection, niceness: int = 0) -> None:
    """The worker's main loop: messages from ``inbox``, answers to ``outbox``, until ``inbox``
    closes. Messages are read ahead as they come and handled in :func:`next_message`'s order."""
    if niceness:
        with contextlib.suppress(OSError):
            os.nice(niceness)
    utterances: dict[int, StreamingUtterance] = {}
    pending: list[tuple[Any, ...]] = []
    while True:
        try:
            if not pending:
                pending.append(inbox.recv())
            while len(pending) < READ_AHEAD and inbox.poll(0):
                pending.append(inbox.recv())
        except (EOFError, OSError):
            return  # the server closed the pipe: nobody waits for what is still pending
        message = next_message(pending)
        kind, key = message[0], message[1]
        try:
            if kind == "audio":
                utterance = utterances.get(key)
                if utterance is not None:
                    utterance.feed(message[2])
            elif kind == "open":
                utterances[key] = StreamingUtterance(message[2], message[3], message[4])
            elif kind == "finish":
                utterance = utterances.pop(key, None)
                empty = Transcript("", 0.0, 0.0)
                outbox.send(("final", key, utterance.finish() if utterance else empty))
            elif kind == "abandon":
                utterance = utterances.pop(key, None)
                if utterance is not None:
                    utterance.abandon()
            elif kind == "warm":
                setup = message[2]
                _give_back(setup, _take_decoder(setup))
                stream_setup = streaming_setup(setup)
                _give_back(stream_setup, _take_decoder(stream_setup))
                batch_mean(setup, bytes(2 * DECODER_SAMPLE_RATE // 10))
                outbox.send(("final", key, Transcript("", 0.0, 0.0)))
        except Exception as exc:  # one bad utterance must not end the worker
            broken = utterances.pop(key, None)
            if broken is not None:
                with contextlib.suppress(Exception):
                    broken.abandon()
            try:
                outbox.send(("error", key, f"{type(exc).__name__}: {exc}"))
            except (OSError, ValueError):
                return
