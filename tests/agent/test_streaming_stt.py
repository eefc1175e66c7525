"""Streaming pocketsphinx (decoded while the caller speaks) and the espeak-ng prompt cache.

Real pocketsphinx, real worker processes, real espeak-ng; the caller audio is the shipped
Festival recordings through G.711 µ-law, as in ``test_speech.py``.
"""

from __future__ import annotations

import asyncio
import fcntl
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import stt as agents_stt

from byeline.agent.intent_llm import IntentLLM
from byeline.agent.routes import Routes, load_routes
from byeline.agent.speech import EspeakTTS, PocketsphinxSTT
from byeline.agent.speech import espeak_tts as espeak_tts_module
from byeline.agent.speech.language_model import (
    DecoderSetup,
    decode_utterance,
    language_model_for_routes,
    resample,
)
from byeline.agent.speech.pocketsphinx_stt import WORKER_NICENESS, DecoderWorkers
from byeline.agent.speech.streaming import (
    HalfBandUpsampler,
    StreamingUtterance,
    _new_decoder,
    batch_mean,
    next_message,
    serve_decoder_worker,
)
from byeline.rtp.g711 import ulaw_decode, ulaw_encode
from byeline.speech.espeak import synthesize

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


def test_the_shared_workers_are_one_for_each_core_the_server_may_use() -> None:
    code = (
        "from byeline.agent.speech.pocketsphinx_stt import default_workers;print(default_workers())"
    )
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity on this platform")
    one_core = subprocess.run(
        [sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{0}}); {code}"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert one_core.stdout.strip() == "1"
    every_core = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert every_core.stdout.strip() == str(max(1, min(4, len(os.sched_getaffinity(0)))))


def test_decoder_workers_run_below_the_server(workers: DecoderWorkers) -> None:
    # The event loop paces RTP and ends turns; a decoder has slack until its caller stops.
    workers.start()
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    lower = min(19, mine + WORKER_NICENESS)
    assert lower > mine
    for index in range(workers.size):
        pid = workers._worker(index).process.pid
        assert pid is not None
        deadline = time.monotonic() + 30  # the worker lowers its own priority as it starts
        while os.getpriority(os.PRIO_PROCESS, pid) != lower and time.monotonic() < deadline:
            time.sleep(0.05)
        assert os.getpriority(os.PRIO_PROCESS, pid) == lower


def test_next_message_serves_a_finished_utterance_first_and_keeps_each_in_order() -> None:
    pending: list[tuple[object, ...]] = [
        ("open", 1),
        ("audio", 1, b"a1"),
        ("open", 2),
        ("audio", 2, b"b1"),
        ("audio", 1, b"a2"),
        ("audio", 2, b"b2"),
        ("finish", 2),
        ("audio", 1, b"a3"),
    ]
    order = []
    while pending:
        order.append(next_message(pending))
        if len(order) == 1:
            pending.append(("finish", 1))  # arrives while the worker is busy
    # Both have finished once the second finish is in: the first to have finished goes first.
    assert order == [
        ("open", 2),
        ("audio", 2, b"b1"),
        ("audio", 2, b"b2"),
        ("finish", 2),
        ("open", 1),
        ("audio", 1, b"a1"),
        ("audio", 1, b"a2"),
        ("audio", 1, b"a3"),
        ("finish", 1),
    ]
    assert next_message([("audio", 3, b""), ("warm", 0)]) == ("audio", 3, b"")


def test_a_worker_answers_the_finished_utterance_before_decoding_the_others(
    routes: Routes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A real worker process, stopped while its pipe fills: utterance 1 (a caller still
    # speaking) has audio queued before utterance 2 ends. Utterance 1's audio fails when it is
    # decoded (its model does not exist), so the order of the answers shows the order of work.
    setup = language_model_for_routes(
        routes, cache_dir=tmp_path_factory.mktemp("lm")
    ).decoder_setup()
    broken = DecoderSetup(hmm="/nonexistent/model", lm=setup.lm, dictionary=setup.dictionary)
    ctx = multiprocessing.get_context("spawn")
    inbox_r, inbox = ctx.Pipe(duplex=False)
    # Room for all of it while the worker is stopped (Linux's F_SETPIPE_SZ; 64 KiB by default).
    fcntl.fcntl(inbox.fileno(), 1031, 1 << 20)
    outbox, outbox_w = ctx.Pipe(duplex=False)
    worker = ctx.Process(target=serve_decoder_worker, args=(inbox_r, outbox_w), daemon=True)
    worker.start()
    inbox_r.close()
    outbox_w.close()
    try:
        inbox.send(("warm", 9, setup))
        assert outbox.poll(60) and outbox.recv()[:2] == ("final", 9)
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGSTOP)
        pcm = phone_line(RECORDINGS[0])
        inbox.send(("open", 1, broken, 8000, 0.2))
        inbox.send(("open", 2, setup, 8000, 0.8))
        inbox.send(("audio", 1, bytes(8000)))  # 0.5 s: past the 0.2 s that starts decoding
        for i in range(0, len(pcm), 1600):
            inbox.send(("audio", 2, pcm[i : i + 1600]))
        inbox.send(("finish", 2))
        os.kill(worker.pid, signal.SIGCONT)
        answers: list[tuple[Any, ...]] = []
        while len(answers) < 2 and outbox.poll(60):
            answers.append(outbox.recv())
        assert [a[:2] for a in answers] == [("final", 2), ("error", 1)], answers
        assert route_of(routes, answers[0][2].text) == "billing", answers[0][2]
    finally:
        inbox.close()
        worker.join(5)
        if worker.is_alive():
            worker.kill()


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


async def test_tts_audio_starts_within_the_lead_in_of_its_first_sound() -> None:
    raw = synthesize("Connecting you to billing.", "en-us", rate=8000)
    raw_samples = np.frombuffer(raw, dtype="<i2")
    # espeak-ng's own lead-in, which the provider cuts: tens of ms of digital silence.
    assert np.flatnonzero(np.abs(raw_samples) > 16)[0] > 8000 * 0.02
    said = await EspeakTTS().synthesize("Connecting you to billing.").collect()
    samples = np.frombuffer(bytes(said.data), dtype="<i2")
    first = int(np.flatnonzero(np.abs(samples.astype(np.int32)) > 16)[0])
    assert first == 8000 * espeak_tts_module.LEAD_IN_MS // 1000
    # Only silence goes: the rest is espeak-ng's audio, sample for sample (espeak-ng is not
    # bit-exact from one synthesis to the next, so this compares the same synthesis).
    raw_first = int(np.flatnonzero(np.abs(raw_samples.astype(np.int32)) > 16)[0])
    trimmed = espeak_tts_module.trim_lead_in(raw, 8000)
    assert trimmed == raw[2 * (raw_first - first) :]
    silent = bytes(640)
    assert espeak_tts_module.trim_lead_in(silent, 8000) == silent
    assert espeak_tts_module.trim_lead_in(b"", 8000) == b""


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
