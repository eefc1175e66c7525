"""The simulated caller's voice: Festival's HTS voice when installed, espeak-ng otherwise.

Speech recognisers hear Festival's ``cmu_us_slt_arctic_hts`` almost like a
person; espeak-ng's formant voice is recognised poorly, so choosing it warns.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

from ..speech.espeak import resample
from ..speech.espeak import synthesize as espeak_synthesize

log = logging.getLogger("byeline.five9")

FESTIVAL_VOICE = "cmu_us_slt_arctic_hts"
_warned = False


def festival_available() -> bool:
    """True when Festival's ``text2wave`` and the HTS voice are installed."""
    return shutil.which("text2wave") is not None and any(
        Path(p).exists()
        for p in (
            f"/usr/share/festival/voices/us/{FESTIVAL_VOICE}",
            f"/usr/share/festival/voices/english/{FESTIVAL_VOICE}",
        )
    )


def synthesize(text: str, voice: str | None = None) -> bytes:
    """``text`` as 8 kHz 16-bit mono PCM."""
    global _warned
    if voice in (None, "festival", FESTIVAL_VOICE) and festival_available():
        return _festival(text)
    if voice in ("festival", FESTIVAL_VOICE):
        raise ValueError(
            "Festival voice requested but not installed (apt-get install festival "
            "festvox-us-slt-hts)"
        )
    if not _warned:
        log.warning(
            "speaking with espeak-ng: speech recognisers do poorly on it; install "
            "festival and festvox-us-slt-hts for a voice they hear like a person"
        )
        _warned = True
    return espeak_synthesize(text, None if voice in (None, "espeak") else voice)


def _festival(text: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "text.txt"
        out = Path(tmp) / "speech.wav"
        src.write_text(text, "utf-8")
        subprocess.run(
            ["text2wave", "-o", str(out), "-eval", f"(voice_{FESTIVAL_VOICE})", str(src)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        with wave.open(str(out), "rb") as wav:
            rate = wav.getframerate()
            pcm = wav.readframes(wav.getnframes())
    return resample(pcm, rate, 8000)
