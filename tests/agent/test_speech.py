"""The offline speech plugins: the generated language model, pocketsphinx STT, espeak-ng TTS.

Real pocketsphinx and espeak-ng throughout; the caller audio is Festival's HTS voice (WAVs made
by scripts/make_caller_wavs.py) sent through G.711 µ-law as a Five9 call would carry it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import wave
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from livekit import rtc
from livekit.agents import stt as agents_stt

from byeline.agent.routes import Routes, load_routes
from byeline.agent.speech import EspeakTTS, PocketsphinxSTT
from byeline.agent.speech.language_model import (
    build_language_model,
    decode_utterance,
    everyday_vocabulary,
    language_model_for_routes,
    render_arpa,
    resample,
    words_of,
)
from byeline.rtp.g711 import ulaw_decode, ulaw_encode

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "src" / "byeline" / "examples"
CALLERS = EXAMPLES / "callers"
SPEECH_DATA = ROOT / "tests" / "data" / "speech"


@pytest.fixture(scope="module")
def routes() -> Routes:
    return load_routes(EXAMPLES / "routes.yaml")


@pytest.fixture(scope="module")
def recogniser(
    routes: Routes, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PocketsphinxSTT]:
    model = language_model_for_routes(routes, cache_dir=tmp_path_factory.mktemp("lm"))
    stt = PocketsphinxSTT(language_model=model)
    stt.prewarm()  # start the shared worker processes while the tests before them run
    yield stt


def phone_line(path: Path) -> rtc.AudioFrame:
    """A WAV as it arrives from a G.711 µ-law call: 8 kHz, companded."""
    with wave.open(str(path), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (8000, 1, 2)
        pcm = ulaw_decode(ulaw_encode(wav.readframes(wav.getnframes())))
    return rtc.AudioFrame(
        data=pcm, sample_rate=8000, num_channels=1, samples_per_channel=len(pcm) // 2
    )


def chosen_routes(routes: Routes, text: str) -> list[str]:
    heard = f" {' '.join(words_of(text))} "
    return [
        r.name
        for r in routes.routes
        if any(f" {' '.join(words_of(p))} " in heard for p in r.phrases)
    ]


def unigram_logprob(arpa: str, word: str) -> float:
    section = arpa.split("\\1-grams:")[1].split("\\2-grams:")[0].split("\\end\\")[0]
    for line in section.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[1] == word:
            return float(fields[0])
    raise AssertionError(f"{word} is not a unigram")


# ---------------------------------------------------------------------------------------------
# The language model
# ---------------------------------------------------------------------------------------------


def test_everyday_vocabulary_is_about_150_words_all_in_cmudict(tmp_path: Path) -> None:
    words = everyday_vocabulary()
    assert 120 <= len(words) <= 200
    assert len(set(words)) == len(words)
    model = build_language_model([], cache_dir=tmp_path)
    assert model.spelled == ()


def test_model_holds_everyday_words_and_phrase_words(routes: Routes, tmp_path: Path) -> None:
    model = language_model_for_routes(routes, cache_dir=tmp_path)
    arpa = model.arpa.read_text()
    dictionary = model.dictionary.read_text()
    for word in ("billing", "invoice", "representative", "person", "question", "please"):
        assert word in model.words
        unigram_logprob(arpa, word)
        assert any(line.split()[0] == word for line in dictionary.splitlines())
    assert "my" in model.keywords  # from "pay my bill"
    assert "question" not in model.keywords
    # cmudict variants come along: "a" is AH and EY
    assert "a(2) EY" in dictionary.splitlines()


def test_route_keywords_are_boosted() -> None:
    arpa = render_arpa(["hello", "please", "bill"], ["billing", "pay my bill"], keyword_boost=3)
    assert unigram_logprob(arpa, "billing") == pytest.approx(
        unigram_logprob(arpa, "hello") + 0.4771, abs=1e-3
    )
    assert unigram_logprob(arpa, "bill") > unigram_logprob(arpa, "please")
    assert "\\2-grams:" not in arpa  # bigrams are off by default: measured not to help


def test_phrase_bigrams_when_asked() -> None:
    arpa = render_arpa(["hello"], ["pay my bill", "my account"], bigram_mass=0.5)
    assert "ngram 2=3" in arpa
    bigrams = arpa.split("\\2-grams:")[1]
    assert " my account" in bigrams and " my bill" in bigrams and " pay my" in bigrams
    # "my" continues two phrases: each gets half of the bigram mass
    assert "-0.6021 my account" in bigrams


def test_generation_is_deterministic_and_cached(routes: Routes, tmp_path: Path) -> None:
    first = language_model_for_routes(routes, cache_dir=tmp_path)
    mtime = first.arpa.stat().st_mtime_ns
    again = language_model_for_routes(routes, cache_dir=tmp_path)
    assert again == first
    assert again.arpa.stat().st_mtime_ns == mtime  # reused, not rewritten
    shuffled = build_language_model(
        [p for r in reversed(routes.routes) for p in reversed(r.phrases)], cache_dir=tmp_path
    )
    assert shuffled.digest == first.digest
    other = build_language_model(["refund"], cache_dir=tmp_path)
    assert other.digest != first.digest and other.arpa.parent != first.arpa.parent


def test_words_missing_from_cmudict_are_spelled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "byeline.agent.speech"):
        model = build_language_model(["5g plan", "xqzt"], vocabulary=["hello"], cache_dir=tmp_path)
    assert model.spelled == ("5g", "xqzt")
    lines = model.dictionary.read_text().splitlines()
    assert "5g F AY V JH IY" in lines
    assert "xqzt EH K S K Y UW Z IY T IY" in lines
    assert "5g, xqzt" in caplog.text


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="keyword_boost"):
        render_arpa(["a"], [], keyword_boost=0)
    with pytest.raises(ValueError, match="bigram_mass"):
        render_arpa(["a"], [], bigram_mass=1)
    with pytest.raises(ValueError, match="at least one word"):
        render_arpa([], [])


def test_resample_keeps_duration_and_averages_channels() -> None:
    ramp = bytes(range(240)) * 50  # 6000 samples
    assert len(resample(ramp, 8000)) == 2 * len(ramp)
    assert len(resample(ramp, 48000)) == len(ramp) // 3
    assert resample(b"\x10\x00\x30\x00", 16000, num_channels=2) == b"\x20\x00"


# ---------------------------------------------------------------------------------------------
# Speech to text
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wav", "route"),
    [
        (CALLERS / "billing.wav", "billing"),
        (CALLERS / "sales.wav", "sales"),
        (CALLERS / "agent.wav", "agent"),
        (CALLERS / "offtopic.wav", None),
        (SPEECH_DATA / "operator.wav", "agent"),
        (SPEECH_DATA / "representative.wav", "agent"),
    ],
    ids=lambda v: v.stem if isinstance(v, Path) else str(v),
)
async def test_stt_hears_the_route_keyword_through_g711(
    recogniser: PocketsphinxSTT, routes: Routes, wav: Path, route: str | None
) -> None:
    event = await recogniser.recognize(phone_line(wav))
    assert event.type == agents_stt.SpeechEventType.FINAL_TRANSCRIPT
    [heard] = event.alternatives
    assert chosen_routes(routes, heard.text) == ([route] if route else []), heard.text
    assert 0.0 <= heard.confidence <= 1.0
    assert heard.language == "en-US"


def test_a_reused_decoder_hears_as_a_new_one(routes: Routes, tmp_path: Path) -> None:
    # The front end's noise estimate must not leak from one utterance (or call) to the next:
    # without a reset, "sales" decoded after "offtopic" came out different.
    setup = language_model_for_routes(routes, cache_dir=tmp_path).decoder_setup()
    sales, offtopic = (bytes(phone_line(CALLERS / f"{n}.wav").data) for n in ("sales", "offtopic"))
    with ThreadPoolExecutor(1) as fresh:  # a thread of its own: a decoder of its own
        expected = fresh.submit(decode_utterance, setup, sales, 8000).result().text
    with ThreadPoolExecutor(1) as worker:
        worker.submit(decode_utterance, setup, offtopic, 8000).result()
        heard = worker.submit(decode_utterance, setup, sales, 8000).result().text
    assert heard == expected


async def test_stt_returns_an_empty_transcript_for_silence(recogniser: PocketsphinxSTT) -> None:
    silence = rtc.AudioFrame(
        data=b"\0\0" * 400, sample_rate=8000, num_channels=1, samples_per_channel=400
    )
    event = await recogniser.recognize(silence)
    assert event.alternatives[0].text == ""


async def test_decoding_does_not_block_the_event_loop(recogniser: PocketsphinxSTT) -> None:
    frames = [phone_line(CALLERS / f"{name}.wav") for name in ("billing", "sales", "agent")]
    frames.append(phone_line(SPEECH_DATA / "representative.wav"))
    await recogniser.recognize(frames[0])  # workers warm: measure decoding, not start-up
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    started = time.perf_counter()
    events = await asyncio.gather(*(recogniser.recognize(f) for f in frames))
    elapsed = time.perf_counter() - started
    ticking.cancel()
    assert all(e.alternatives[0].text for e in events)
    # Decoding in a thread stalls the loop for the whole decode (~100-800 ms, measured); in
    # the worker processes it ticks on. Loose bounds: the test machine may be busy.
    assert len(gaps) >= elapsed / 0.005 / 4, (len(gaps), elapsed)
    assert max(gaps) < 0.1, max(gaps)


async def test_stt_with_silero_vad_through_stream_adapter(
    recogniser: PocketsphinxSTT, routes: Routes
) -> None:
    silero = pytest.importorskip("livekit.plugins.silero")
    adapter = agents_stt.StreamAdapter(stt=recogniser, vad=silero.VAD.load(sample_rate=8000))
    stream = adapter.stream()
    line = phone_line(CALLERS / "billing.wav")
    pcm = bytes(line.data) + b"\0\0" * 8000  # a second of silence ends the utterance
    for i in range(0, len(pcm), 320):  # 20 ms frames, as RTP delivers them
        chunk = pcm[i : i + 320]
        stream.push_frame(
            rtc.AudioFrame(
                data=chunk, sample_rate=8000, num_channels=1, samples_per_channel=len(chunk) // 2
            )
        )
    stream.end_input()
    finals = []
    async with asyncio.timeout(20):
        async for event in stream:
            if event.type == agents_stt.SpeechEventType.FINAL_TRANSCRIPT:
                finals.append(event.alternatives[0].text)
    await stream.aclose()
    assert finals and chosen_routes(routes, " ".join(finals)) == ["billing"], finals


# ---------------------------------------------------------------------------------------------
# Text to speech
# ---------------------------------------------------------------------------------------------


async def test_tts_speaks_at_the_call_rate() -> None:
    tts = EspeakTTS()
    assert (tts.sample_rate, tts.num_channels) == (8000, 1)
    assert tts.capabilities.streaming is False
    text = "Connecting you to billing."
    frame = await tts.synthesize(text).collect()
    assert frame.sample_rate == 8000 and frame.num_channels == 1
    # about 2.5 words a second, give or take
    assert 0.8 < frame.duration < 4.0, frame.duration
    samples = memoryview(frame.data)
    assert max(abs(s) for s in samples) > 1000  # speech, not silence


async def test_tts_voice_and_rate_are_options() -> None:
    tts = EspeakTTS(voice="en", sample_rate=16000)
    frame = await tts.synthesize("Hello.").collect()
    assert frame.sample_rate == 16000
    assert 0.2 < frame.duration < 2.0
