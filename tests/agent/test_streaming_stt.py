"""Streaming pocketsphinx (decoded while the caller speaks) and the espeak-ng prompt cache.

Real pocketsphinx, real worker processes, real espeak-ng; the caller audio is the shipped
Festival recordings through G.711 µ-law, as in ``test_speech.py``.
"""

from __future__ import annotations

import asyncio
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import stt as agents_stt

from byeline.agent.intent_llm import IntentLLM
from byeline.agent.routes import Routes, load_routes
from byeline.agent.speech import EspeakTTS, PocketsphinxSTT
from byeline.agent.speech import espeak_tts as espeak_tts_module
from byeline.agent.speech.language_model import (
    decode_utterance,
    language_model_for_routes,
    resample,
)
from byeline.agent.speech.pocketsphinx_stt import DecoderWorkers
from byeline.agent.speech.streaming import (
    HalfBandUpsampler,
    StreamingUtterance,
    _new_decoder,
    batch_mean,
)
from byeline.rtp.g711 import ulaw_decode, ulaw_encode

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "src" / "byeline" / "examples"
RECORDINGS = [
    EXAMPLES / "callers" / "billing.wav",
    EXAMPLES / "callers" / "sales.wav",
    EXAMPLES / "callers" / "agent.wav",
    EXAMPLES / "callers" / "offtopic.wav",
    ROOT / "tests" / "data" / "speech" / "operator.wav",
    ROOT / "tests" / "data" / "speech" / "representative.wav",
]


@pytest.fixture(scope="module")
def routes() -> Routes:
    return load_routes(EXAMPLES / "routes.yaml")


@pytest.fixture(scope="module")
def workers() -> Iterator[DecoderWorkers]:
    pool = DecoderWorkers(2)
    yield pool
    pool.close()


def phone_line(path: Path) -> bytes:
    with wave.open(str(path), "rb") as wav:
        return ulaw_decode(ulaw_encode(wav.readframes(wav.getnframes())))


def route_of(routes: Routes, text: str) -> str | None:
    engine = IntentLLM(routes)
    found = engine.match(text)
    return found.route.name if found.route is not None and found.confidence >= 0.6 else None


def test_half_band_upsampler_matches_the_batch_resampler() -> None:
    pcm = phone_line(RECORDINGS[0])
    upsampler = HalfBandUpsampler()
    streamed = b"".join(upsampler(pcm[i : i + 320]) for i in range(0, len(pcm), 320))
    streamed += upsampler.flush()
    batch = resample(pcm, 8000)
    assert len(streamed) == len(batch) == 2 * len(pcm)
    a = np.frombuffer(streamed, dtype="<i2").astype(float)
    b = np.frombuffer(batch, dtype="<i2").astype(float)
    # Equal but for the FFT's wrap-around at the edges: under 1 % of the signal's RMS.
    inner = slice(200, -200)
    assert np.sqrt(np.mean((a[inner] - b[inner]) ** 2)) < 0.01 * np.sqrt(np.mean(b**2))


@pytest.mark.parametrize("seconds", [0.3, 1.8, None])
def test_batch_mean_is_the_mean_the_language_model_decoder_takes(
    routes: Routes, tmp_path_factory: pytest.TempPathFactory, seconds: float | None
) -> None:
    # The mean-only decoder searches with a cheap grammar and coarse settings: the mean, which
    # pocketsphinx takes before any search, must be the one the recogniser itself would take.
    setup = language_model_for_routes(
        routes, cache_dir=tmp_path_factory.mktemp("lm")
    ).decoder_setup()
    for wav in RECORDINGS[:4]:
        audio16 = resample(phone_line(wav), 8000)
        if seconds is not None:
            audio16 = audio16[: int(2 * 16000 * seconds)]
        reference = _new_decoder(setup)
        reference.start_utt()
        reference.process_raw(audio16, no_search=True, full_utt=True)
        expected = str(reference.get_cmn())
        reference.end_utt()
        assert batch_mean(setup, audio16) == expected, wav.name
        assert batch_mean(setup, audio16) == expected, wav.name  # the kept decoder, again


@pytest.mark.parametrize("wav", RECORDINGS, ids=lambda p: p.stem)
def test_streaming_routes_the_shipped_recordings_as_batch_does(
    routes: Routes, tmp_path_factory: pytest.TempPathFactory, wav: Path
) -> None:
    setup = language_model_for_routes(
        routes, cache_dir=tmp_path_factory.mktemp("lm")
    ).decoder_setup()
    pcm = phone_line(wav)
    utterance = StreamingUtterance(setup, 8000, cmn_seconds=1.4)
    for i in range(0, len(pcm), 320):  # 20 ms frames, as RTP delivers them
        utterance.feed(pcm[i : i + 320])
    streamed_long = utterance.streaming
    streamed = utterance.finish().text
    batch = decode_utterance(setup, pcm, 8000).text
    # Transcripts may differ in a word (the mean comes from the first 1.4 s, and the streamed
    # pass has no second pass); the route chosen from them may not.
    assert route_of(routes, streamed) == route_of(routes, batch), (streamed, batch)
    if not streamed_long:
        assert streamed == batch  # short utterances are decoded whole, as in batch


async def test_session_stt_streams_an_utterance_between_vad_start_and_flush(
    routes: Routes, tmp_path_factory: pytest.TempPathFactory, workers: DecoderWorkers
) -> None:
    model = language_model_for_routes(routes, cache_dir=tmp_path_factory.mktemp("lm"))
    session_stt = PocketsphinxSTT(language_model=model).for_session(workers=workers)
    assert session_stt.capabilities.streaming and session_stt.capabilities.manual_flush
    session_stt.prewarm()
    # Measure decoding, not the workers' start-up (spawn, imports: about a second).
    warm = [workers.open(session_stt._setup, 8000, 1.4) for _ in range(workers.size)]
    await asyncio.gather(*(h.finish() for h in warm))
    stream = session_stt.stream()
    pcm = b"\0\0" * 8000 + phone_line(RECORDINGS[0])  # a second of line before the caller
    frames = [pcm[i : i + 320] for i in range(0, len(pcm), 320)]
    events: list[agents_stt.SpeechEvent] = []

    async def read() -> None:
        async for event in stream:
            events.append(event)

    reader = asyncio.create_task(read())
    for i, chunk in enumerate(frames):
        if i == 50 + 30:  # the VAD's start of speech, ~0.3 s into the recording
            session_stt.speech_started()
        stream.push_frame(rtc.AudioFrame(chunk, 8000, 1, len(chunk) // 2))
        if i % 10 == 0:
            await asyncio.sleep(0.01)  # let the stream send chunks while the caller speaks
    await asyncio.sleep(0.5)  # the worker catches up, as it does during a real utterance
    flushed = time.perf_counter()
    stream.flush()
    async with asyncio.timeout(10):
        while not any(e.type == agents_stt.SpeechEventType.FINAL_TRANSCRIPT for e in events):
            await asyncio.sleep(0.005)
    after_flush = time.perf_counter() - flushed
    stream.end_input()
    async with asyncio.timeout(10):
        await reader
    await stream.aclose()
    [final] = [e for e in events if e.type == agents_stt.SpeechEventType.FINAL_TRANSCRIPT]
    assert route_of(routes, final.alternatives[0].text) == "billing", final.alternatives
    assert events[0].type == agents_stt.SpeechEventType.START_OF_SPEECH
    # Decoded during the utterance: what is left at the flush is a few ms (loose bound: the
    # machine may be busy).
    assert after_flush < 0.1, after_flush


async def test_session_stt_hears_nothing_without_a_start_of_speech(
    routes: Routes, tmp_path_factory: pytest.TempPathFactory, workers: DecoderWorkers
) -> None:
    model = language_model_for_routes(routes, cache_dir=tmp_path_factory.mktemp("lm"))
    stream = PocketsphinxSTT(language_model=model).for_session(workers=workers).stream()
    pcm = phone_line(RECORDINGS[0])
    for i in range(0, len(pcm), 320):
        stream.push_frame(rtc.AudioFrame(pcm[i : i + 320], 8000, 1, 160))
    stream.flush()
    stream.end_input()
    async with asyncio.timeout(10):
        events = [e async for e in stream]
    await stream.aclose()
    assert events == []


async def test_tts_cache_returns_identical_audio_without_synthesizing_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    real = espeak_tts_module.synthesize

    def counting(text: str, voice: str | None = None, *, rate: int = 8000) -> bytes:
        calls.append(text)
        return real(text, voice, rate=rate)

    monkeypatch.setattr(espeak_tts_module, "synthesize", counting)
    tts = EspeakTTS()
    first = await tts.synthesize("Connecting you to billing.").collect()
    again = await tts.synthesize("Connecting you to billing.").collect()
    assert bytes(first.data) == bytes(again.data) and len(first.data) > 8000
    assert calls == ["Connecting you to billing."]
    tts.prerender(["Connecting you to sales."])
    sales = await tts.synthesize("Connecting you to sales.").collect()
    again = await tts.synthesize("Connecting you to sales.").collect()
    assert bytes(sales.data) == bytes(again.data) and len(sales.data) > 8000
    assert calls == ["Connecting you to billing.", "Connecting you to sales."]
    other_voice = EspeakTTS(voice="en")
    await other_voice.synthesize("Connecting you to billing.").collect()
    assert len(calls) == 3  # the cache is per voice (and per TTS)


async def test_a_worker_dying_mid_utterance_loses_that_utterance_only(
    routes: Routes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    model = language_model_for_routes(routes, cache_dir=tmp_path_factory.mktemp("lm"))
    pool = DecoderWorkers(1)
    try:
        session_stt = PocketsphinxSTT(language_model=model).for_session(workers=pool)
        stream = session_stt.stream()
        pcm = phone_line(RECORDINGS[0])
        events: list[agents_stt.SpeechEvent] = []

        async def read() -> None:
            async for event in stream:
                events.append(event)

        def finals() -> list[str]:
            return [
                e.alternatives[0].text
                for e in events
                if e.type == agents_stt.SpeechEventType.FINAL_TRANSCRIPT
            ]

        def ends() -> int:
            return sum(1 for e in events if e.type == agents_stt.SpeechEventType.END_OF_SPEECH)

        async def utterance(kill_worker: bool = False) -> None:
            session_stt.speech_started()
            for i in range(0, len(pcm), 320):
                stream.push_frame(rtc.AudioFrame(pcm[i : i + 320], 8000, 1, 160))
                if i % 3200 == 0:
                    await asyncio.sleep(0.01)
                if kill_worker and i == 320 * 100:  # the decoder process dies mid-utterance
                    worker = pool._worker(0)
                    worker.process.kill()
                    async with asyncio.timeout(10):
                        while worker.alive:
                            await asyncio.sleep(0.01)
            stream.flush()

        reader = asyncio.create_task(read())
        await utterance()
        async with asyncio.timeout(20):
            while ends() < 1:
                await asyncio.sleep(0.01)
        await utterance(kill_worker=True)
        async with asyncio.timeout(20):
            while ends() < 2:
                await asyncio.sleep(0.01)
        await utterance()  # a new worker takes it
        async with asyncio.timeout(30):
            while ends() < 3:
                await asyncio.sleep(0.01)
        stream.end_input()
        async with asyncio.timeout(10):
            await reader  # the stream ends cleanly: no error escaped
        await stream.aclose()
        assert ends() == 3
        assert [route_of(routes, text) for text in finals()] == ["billing", "billing"]
    finally:
        pool.close()
