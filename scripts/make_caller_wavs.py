"""Regenerate the caller WAVs the demo plays and the speech tests decode.

Run once by a developer on a machine with Festival and its HTS voice
(``apt-get install festival festvox-us-slt-hts``); the WAVs are committed, so neither
``make demo`` nor ``make test`` needs a Debian speech package::

    .venv/bin/python scripts/make_caller_wavs.py

Each WAV is 8 kHz mono 16-bit PCM (a caller on a G.711 line) with 300 ms of silence at each end,
so a VAD sees the speech start and stop. The sentences were chosen among those measured in
``src/byeline/agent/speech/language_model.py`` as recognised with the right route (or none).
"""

from __future__ import annotations

import sys
import wave
from pathlib import Path

from byeline.five9.voice import festival_available, synthesize

ROOT = Path(__file__).resolve().parent.parent
RATE = 8000
PAD = b"\0\0" * (RATE * 3 // 10)
MAX_BYTES = 80_000

#: The demo's callers: file name, sentence.
CALLERS = {
    "billing.wav": "I have a question about my bill",
    "sales.wav": "I want to buy a new phone",
    "agent.wav": "can I speak to an agent",
    "offtopic.wav": "I am calling about my dog",
}
#: More utterances for the tests: short requests, and a keyword at the end of a sentence.
TEST_UTTERANCES = {
    "operator.wav": "operator",
    "representative.wav": "let me speak to a representative",
}


def write_wav(path: Path, pcm: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(PAD + pcm + PAD)
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"{path}: {size} bytes, over {MAX_BYTES}: use a shorter sentence")
    print(f"{path.relative_to(ROOT)}: {size} bytes")


def main() -> int:
    if not festival_available():
        print(
            "Festival's HTS voice is not installed: apt-get install festival festvox-us-slt-hts",
            file=sys.stderr,
        )
        return 1
    for folder, sentences in (
        (ROOT / "src/byeline/examples/callers", CALLERS),
        (ROOT / "tests/data/speech", TEST_UTTERANCES),
    ):
        for name, text in sentences.items():
            write_wav(folder / name, synthesize(text, voice="festival"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
