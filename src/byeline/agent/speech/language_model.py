"""The language model pocketsphinx decodes a caller with, generated from the routes file,
and the decoding itself (run in worker processes by :mod:`.pocketsphinx_stt`).

Why a generated model: pocketsphinx's general en-us model (134k words) hears little on a phone
line; a JSGF grammar with a free-word loop did not finish decoding in ten minutes; a unigram
model over ~150 everyday words (``vocabulary.txt``) plus the routes' phrase words, the phrase
words boosted, is fast and hears the keywords. Words missing from cmudict are not skipped: they
get their letter-by-letter pronunciation (right for "irs", "5g"; a warning names them).

Measurements (this machine: 2 cores shared with other work, load 1.5-4; pocketsphinx 5.1.1).
32 utterances per voice: 24 requests naming the billing/sales/agent routes of
examples/routes.yaml ("I have a question about my bill", "billing please", "I want to buy a
new phone", "sales", "can I talk to a person", "agent", "let me speak to a representative",
...) and 8 off-topic ("what is the weather like", "hello how are you", "good morning", ...),
spoken by Festival's HTS voice (cmu_us_slt_arctic_hts) and by espeak-ng (en-us), resampled to
8 kHz and sent through G.711 µ-law. Right: the transcript holds a phrase of the expected route
and none of another route (off-topic: no phrase at all). Keyword counts are out of 24,
off-topic out of 8, as Festival / espeak-ng; every utterance decoded from a reset front end.

    model (audio upsampled to 16 kHz)          keyword       off-topic   median decode
    general en-us LM + full cmudict            11  /  3      8 / 8       319 / 361 ms
    generated, no boost, unigrams              15  /  9      7 / 8        91 /  72 ms
    generated, no boost, + phrase bigrams      20  /  9      7 / 8        85 /  71 ms
    generated, boost 3, unigrams               21  / 10      7 / 8        95 /  71 ms
    generated, boost 3, + phrase bigrams       21  / 10      7 / 8        96 /  80 ms
    generated, boost 5                         21  /  9      6 / 8        86 /  72 ms
    generated, boost 10                        18  / 10      5 / 8        84 /  69 ms
    boost 3, lw 4 / 9, wip 0.2 (default 6.5,   20-22 / 9-10  7 / 8        (defaults kept)
      0.65)
    CHOSEN: boost 3, unigrams, without         22  / 10      7 / 8        91 /  75 ms
      "again" in the vocabulary
    CHOSEN, 0.3 s of silence around each       21  / 11      7 / 8       115 / 102 ms
      utterance (as a VAD segment has it)

- Bigrams within phrases help only without a boost; with one they change nothing here, and
  their backoff after a phrase word ("my" of "pay my bill") halves every other word after it.
  Off by default (``bigram_mass=0``), kept as an option.
- A bigger boost turns "I" into "buy" and off-topic speech into "bill": false routes.
- Upsampling 8 kHz -> 16 kHz: band-limited (FFT) 21/24, linear interpolation 20/24, zero
  stuffing (mirrored spectrum in 4-8 kHz) 20/24; FFT kept (exact, ~1 ms an utterance).
- Native 8 kHz (samprate 8000, nfft 256, filterbank top 3500 or 3800 Hz, in a copy of the
  model whose feat.params says so: pocketsphinx refuses -upperf given with a model whose
  feat.params sets 6800): 0/24 for both voices. The model was trained on a 130-6800 Hz
  filterbank; squeezed into 3.5 kHz, the cepstra are nothing it has seen. Upsampling wins.
- pocketsphinx's ``dither`` (the usual cure for digital silence) costs a lot: 18/24 without
  silence around the speech, 12/24 with 0.3 s, 6/24 with 0.6 s. Not used.
- A reused decoder carries its front end's noise and mean estimates to the next utterance:
  11 of 64 transcripts differed from a new decoder's. ``decoder.reinit_feat()`` (0.02 ms)
  before each utterance makes them equal; :func:`decode_utterance` does it.
- Failures left (Festival, with silence around): a lone "sales" (heard "pay help": /s/ lives
  mostly above the telephone band's 4 kHz), "can I talk to a person" ("talk a card can"),
  "my invoice" ("minute like"), and the off-topic "what is the weather like" heard as
  "buy did bill an there like" (a false route).
- espeak-ng's formant voice stays poorly recognised (10-11/24) whatever the setting: the
  simulated caller should use Festival; espeak-ng is the agent's voice, not the caller's.
- Confidence is pocketsphinx's posterior of the whole transcript: near 1 for one word, near 0
  for a sentence even when right (median 0.00 for right Festival sentences). Do not threshold
  keywords on it. Per-word posteriors are not exposed by the Python API (seg().prob is 1).
- Decode time in the worker pool, warm: median 91-115 ms (Festival, 1.6 s median audio) and
  75-102 ms (espeak-ng, 1.3 s), worst 240 ms. A cold worker's first utterance: 1.0-1.2 s
  (spawn + imports): call ``PocketsphinxSTT.prewarm()`` at agent start.
- GIL: pocketsphinx holds it for the whole of process_raw. 80 decodes: 1 thread 6.3 s,
  2 threads 7.1 s, 4 threads 7.7 s; an asyncio ticker due every 5 ms stalled up to 830 ms while
  decodes ran in asyncio.to_thread. With the 2-worker process pool: 128 decodes in 5.7-9.0 s
  (load-dependent), the ticker's worst gap 7-9 ms with 4 concurrent recognitions and
  7-54 ms with 12.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pocketsphinx  # type: ignore[import-untyped]

if TYPE_CHECKING:  # routes pulls in protobuf; worker processes import this module and need none
    from ..routes import Routes

__all__ = [
    "DECODER_SAMPLE_RATE",
    "DEFAULT_BIGRAM_MASS",
    "DEFAULT_KEYWORD_BOOST",
    "DecoderSetup",
    "LanguageModel",
    "Transcript",
    "build_language_model",
    "decode_utterance",
    "everyday_vocabulary",
    "language_model_for_routes",
    "render_arpa",
    "render_dictionary",
    "resample",
    "words_of",
]

log = logging.getLogger("byeline.agent.speech")

#: A route keyword is this many times as likely as an everyday word (unigram weight).
DEFAULT_KEYWORD_BOOST = 3.0
#: Share of the probability after a phrase word given to the next word of its phrase; 0: none
#: (bigrams did not help, see the measurements above).
DEFAULT_BIGRAM_MASS = 0.0
#: The en-us acoustic model was trained on 16 kHz audio (its feat.params: upperf 6800 Hz).
DECODER_SAMPLE_RATE = 16000
#: Probability that an utterance ends after any word (callers say a few words at a time).
_END_PROBABILITY = 0.15
#: Bumped whenever the rendering changes, so cached files of an older rendering are not reused.
_FORMAT = "byeline-lm/1"

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)*")

# Letter and digit names in the acoustic model's phone set: the pronunciation of a word that
# cmudict lacks is its spelling (right for acronyms and codes such as "irs" or "5g").
_SPELLING: Mapping[str, str] = {
    "a": "EY",
    "b": "B IY",
    "c": "S IY",
    "d": "D IY",
    "e": "IY",
    "f": "EH F",
    "g": "JH IY",
    "h": "EY CH",
    "i": "AY",
    "j": "JH EY",
    "k": "K EY",
    "l": "EH L",
    "m": "EH M",
    "n": "EH N",
    "o": "OW",
    "p": "P IY",
    "q": "K Y UW",
    "r": "AA R",
    "s": "EH S",
    "t": "T IY",
    "u": "Y UW",
    "v": "V IY",
    "w": "D AH B AH L Y UW",
    "x": "EH K S",
    "y": "W AY",
    "z": "Z IY",
    "0": "Z IY R OW",
    "1": "W AH N",
    "2": "T UW",
    "3": "TH R IY",
    "4": "F AO R",
    "5": "F AY V",
    "6": "S IH K S",
    "7": "S EH V AH N",
    "8": "EY T",
    "9": "N AY N",
}


@dataclass(frozen=True)
class LanguageModel:
    """A generated ARPA language model and its pronunciation dictionary, on disk.

    ``keywords`` are the words of the routes' phrases (boosted); ``spelled`` the words cmudict
    does not know, in the model with their letter-by-letter pronunciation, which is right for
    acronyms and codes ("irs", "5g") and wrong for words (a warning names them).
    """

    arpa: Path
    dictionary: Path
    words: tuple[str, ...]
    keywords: tuple[str, ...]
    spelled: tuple[str, ...]
    digest: str

    def decoder_setup(self, **options: str | int | float | bool) -> DecoderSetup:
        """How to build a pocketsphinx decoder for this model; ``options`` are extra
        pocketsphinx settings (``lw=7.0``, ``beam=1e-60``...).

        ``pl_window=0`` unless ``options`` say otherwise: pocketsphinx's phone-loop lookahead
        prunes a large vocabulary, and on this model's ~200 words it only costs. Without it the
        decoder took 0.87-0.91 of the CPU and gave the same transcripts for the 32 sentences of
        ``bench/stt_accuracy.py`` (20/32 routed right either way).
        """
        return DecoderSetup(
            hmm=str(pocketsphinx.get_model_path("en-us/en-us")),
            lm=str(self.arpa),
            dictionary=str(self.dictionary),
            options=tuple(sorted({"pl_window": 0, **options}.items())),
        )


def words_of(text: str) -> list[str]:
    """The words of ``text`` as the recogniser spells them: lower case, no punctuation."""
    return _TOKEN.findall(text.lower())


def everyday_vocabulary() -> list[str]:
    """The everyday words shipped in ``vocabulary.txt``, in file order."""
    text = resources.files(__package__).joinpath("vocabulary.txt").read_text("utf-8")
    words: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            words.extend(words_of(line))
    return words


def render_arpa(
    vocabulary: Iterable[str],
    phrases: Iterable[str],
    *,
    keyword_boost: float = DEFAULT_KEYWORD_BOOST,
    bigram_mass: float = DEFAULT_BIGRAM_MASS,
) -> str:
    """An ARPA bigram model over ``vocabulary`` and the words of ``phrases``.

    Unigrams: every word has weight 1, a phrase word ``keyword_boost``. Bigrams: within a
    phrase, the next word of the phrase takes ``bigram_mass`` of the probability after a word
    (shared equally when a word continues several phrases); other words back off to the
    unigrams with the weight that keeps each distribution summing to one. Output is sorted,
    so equal inputs give equal text.
    """
    if keyword_boost <= 0:
        raise ValueError(f"keyword_boost must be positive; got {keyword_boost}")
    if not 0 <= bigram_mass < 1:
        raise ValueError(f"bigram_mass must be in [0, 1); got {bigram_mass}")
    phrase_words = [words_of(p) for p in phrases]
    keywords = {w for ws in phrase_words for w in ws}
    words = sorted(set(vocabulary) | keywords)
    if not words:
        raise ValueError("a language model needs at least one word")

    weights = {w: keyword_boost if w in keywords else 1.0 for w in words}
    total = sum(weights.values())
    unigram = {w: (1 - _END_PROBABILITY) * weights[w] / total for w in words}
    unigram["</s>"] = _END_PROBABILITY

    follows: dict[str, set[str]] = {}
    if bigram_mass > 0:
        for ws in phrase_words:
            for first, second in itertools.pairwise(ws):
                follows.setdefault(first, set()).add(second)
    backoff: dict[str, float] = {}
    bigrams: list[tuple[str, str, float]] = []
    for first in sorted(follows):
        nexts = sorted(follows[first])
        for second in nexts:
            bigrams.append((first, second, bigram_mass / len(nexts)))
        backoff[first] = (1 - bigram_mass) / (1 - sum(unigram[n] for n in nexts))

    lines = ["\\data\\", f"ngram 1={len(words) + 2}"]
    if bigrams:
        lines.append(f"ngram 2={len(bigrams)}")
    lines += ["", "\\1-grams:", "-99.0000 <s> 0.0000", f"{_log10(unigram['</s>'])} </s>"]
    for w in words:
        entry = f"{_log10(unigram[w])} {w}"
        lines.append(f"{entry} {_log10(backoff[w])}" if w in backoff else entry)
    if bigrams:
        lines += ["", "\\2-grams:"]
        lines += [f"{_log10(p)} {a} {b}" for a, b, p in bigrams]
    lines += ["", "\\end\\", ""]
    return "\n".join(lines)


def _log10(p: float) -> str:
    return f"{math.log10(p):.4f}"


def render_dictionary(
    words: Iterable[str], cmudict: Path | None = None
) -> tuple[str, tuple[str, ...]]:
    """The pronunciation dictionary for ``words`` (every cmudict variant of each) and the
    words cmudict lacks, which get their letter-by-letter pronunciation."""
    wanted = set(words)
    path = cmudict or Path(pocketsphinx.get_model_path("en-us/cmudict-en-us.dict"))
    found: dict[str, list[str]] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            head, _, phones = line.strip().partition(" ")
            word = head.split("(", 1)[0]
            if word in wanted and phones:
                found.setdefault(word, []).append(phones.strip())
    spelled = tuple(sorted(w for w in wanted if w not in found))
    for word in spelled:
        found[word] = [" ".join(_SPELLING[c] for c in word if c in _SPELLING)]
    lines: list[str] = []
    for word in sorted(found):
        for i, phones in enumerate(found[word]):
            lines.append(f"{word if i == 0 else f'{word}({i + 1})'} {phones}")
    return "\n".join(lines) + "\n", spelled


def build_language_model(
    phrases: Iterable[str],
    *,
    vocabulary: Iterable[str] | None = None,
    keyword_boost: float = DEFAULT_KEYWORD_BOOST,
    bigram_mass: float = DEFAULT_BIGRAM_MASS,
    cache_dir: Path | None = None,
) -> LanguageModel:
    """Generate (or reuse) the model for these phrases plus the everyday ``vocabulary``.

    The files are named by the SHA-256 of their content under ``cache_dir`` (default: a
    folder of the user's in the system temp dir), written atomically, so concurrent agents
    share one copy and a stale or half-written file is never read.
    """
    phrases = list(phrases)
    if vocabulary is None:
        base = everyday_vocabulary()
    else:
        base = [w for text in vocabulary for w in words_of(text)]
    keywords = tuple(sorted({w for p in phrases for w in words_of(p)}))
    arpa = render_arpa(base, phrases, keyword_boost=keyword_boost, bigram_mass=bigram_mass)
    words = tuple(sorted(set(base) | set(keywords)))
    dictionary, spelled = render_dictionary(words)
    if spelled:
        log.warning(
            "not in cmudict, spelled letter by letter (right for acronyms, not for words): %s",
            ", ".join(spelled),
        )
    digest = hashlib.sha256(f"{_FORMAT}\0{arpa}\0{dictionary}".encode()).hexdigest()
    folder = (cache_dir or _default_cache_dir()) / digest[:16]
    folder.mkdir(parents=True, exist_ok=True)
    arpa_path = _write_once(folder / "model.arpa", arpa)
    dict_path = _write_once(folder / "model.dict", dictionary)
    return LanguageModel(
        arpa=arpa_path,
        dictionary=dict_path,
        words=words,
        keywords=keywords,
        spelled=spelled,
        digest=digest,
    )


def language_model_for_routes(
    routes: Routes,
    *,
    keyword_boost: float = DEFAULT_KEYWORD_BOOST,
    bigram_mass: float = DEFAULT_BIGRAM_MASS,
    cache_dir: Path | None = None,
) -> LanguageModel:
    """The model for the phrases of every route in ``routes`` plus the everyday vocabulary."""
    phrases = [p for route in routes.routes for p in route.phrases]
    return build_language_model(
        phrases, keyword_boost=keyword_boost, bigram_mass=bigram_mass, cache_dir=cache_dir
    )


def _default_cache_dir() -> Path:
    # Per user: another user's folder in a shared /tmp is not writable.
    owner = str(os.getuid()) if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"byeline-speech-{owner}"


def _write_once(path: Path, text: str) -> Path:
    if path.exists() and path.read_text("utf-8") == text:
        return path
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# --------------------------------------------------------------------------------------------
# Decoding. It lives here rather than in pocketsphinx_stt.py so that the worker processes that
# run it import numpy and pocketsphinx only: livekit.agents costs each of them ~0.9 s and ~120 MB.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecoderSetup:
    """Everything a worker needs to build a decoder: picklable and hashable."""

    hmm: str
    lm: str
    dictionary: str
    options: tuple[tuple[str, str | int | float | bool], ...] = ()


@dataclass(frozen=True)
class Transcript:
    """What pocketsphinx heard: ``text`` (words separated by spaces, no fillers),
    ``confidence`` (posterior probability of the whole transcript, 0 to 1) and the
    ``decode_seconds`` spent decoding."""

    text: str
    confidence: float
    decode_seconds: float


# Decoders are not thread-safe: each thread (in practice, each worker process) keeps its own,
# one per setup. Building one takes ~7 ms; keeping it saves that on every utterance.
_decoders = threading.local()


def _decoder(setup: DecoderSetup) -> pocketsphinx.Decoder:
    cache: dict[DecoderSetup, pocketsphinx.Decoder] | None = getattr(_decoders, "cache", None)
    if cache is None:
        cache = _decoders.cache = {}
    decoder = cache.get(setup)
    if decoder is None:
        options: dict[str, str | int | float | bool] = {"loglevel": "FATAL"}
        options.update(setup.options)
        decoder = pocketsphinx.Decoder(hmm=setup.hmm, lm=setup.lm, dict=setup.dictionary, **options)
        cache[setup] = decoder
    return decoder


def resample(pcm: bytes, sample_rate: int, num_channels: int = 1) -> bytes:
    """16-bit PCM at ``sample_rate`` (channels averaged) as 16-bit mono at 16 kHz.

    Band-limited, by zero-padding or truncating the spectrum of the whole utterance: exact for
    a buffered utterance and cheap (a 5 s utterance takes about a millisecond).
    """
    samples = np.frombuffer(pcm, dtype="<i2", count=len(pcm) // 2).astype(np.float64)
    if num_channels > 1:
        samples = samples[: len(samples) - len(samples) % num_channels]
        samples = samples.reshape(-1, num_channels).mean(axis=1)
    if sample_rate != DECODER_SAMPLE_RATE and len(samples):
        n_out = round(len(samples) * DECODER_SAMPLE_RATE / sample_rate)
        spectrum = np.fft.rfft(samples)
        out = np.zeros(n_out // 2 + 1, dtype=complex)
        keep = min(len(spectrum), len(out))
        out[:keep] = spectrum[:keep]
        samples = np.fft.irfft(out, n_out) * (n_out / len(samples))
    return bytes(np.clip(np.round(samples), -32768, 32767).astype("<i2").tobytes())


def decode_utterance(
    setup: DecoderSetup, pcm: bytes, sample_rate: int, num_channels: int = 1
) -> Transcript:
    """Decode one utterance of 16-bit PCM. CPU-bound and holding the GIL throughout: call it
    in a worker process (see :class:`~.pocketsphinx_stt.PocketsphinxSTT`)."""
    started = time.perf_counter()
    audio = resample(pcm, sample_rate, num_channels)
    if len(audio) < DECODER_SAMPLE_RATE // 10 * 2:  # under 100 ms: nothing to hear
        return Transcript("", 0.0, time.perf_counter() - started)
    decoder = _decoder(setup)
    # The feature front end carries its noise and cepstral-mean estimates from one utterance
    # to the next: without this, a transcript depended on what the worker decoded before
    # (11 of 64 measured utterances came out different), one caller's line leaking into
    # another's. Resetting costs 0.02 ms and makes a reused decoder equal to a new one.
    decoder.reinit_feat()
    decoder.start_utt()
    decoder.process_raw(audio, full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    text = " ".join(hyp.hypstr.split()) if hyp is not None else ""
    confidence = min(1.0, max(0.0, float(hyp.prob))) if hyp is not None and text else 0.0
    return Transcript(text, confidence, time.perf_counter() - started)
