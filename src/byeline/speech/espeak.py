"""espeak-ng in-process, through the library and data that ``espeakng-loader`` ships.

No Debian package and nothing downloaded: the wheel carries ``libespeak-ng.so``
and its voices.  Synthesis is synchronous and CPU-bound; callers run it in a
worker thread.  The library is not re-entrant, so one lock serialises it.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

import numpy as np

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_rate = 22050
_chunks: list[bytes] = []
_current_voice: str | None = None


def _callback(wav: Any, count: int, events: Any) -> int:
    if count > 0 and wav:
        _chunks.append(ctypes.string_at(wav, count * 2))
    return 0


_CALLBACK = _SYNTH_CALLBACK(_callback)


class EspeakUnavailable(RuntimeError):
    """The espeak-ng library could not be loaded."""


def _library() -> ctypes.CDLL:
    global _lib, _rate
    if _lib is not None:
        return _lib
    try:
        import espeakng_loader
    except ImportError:
        raise EspeakUnavailable(
            "espeakng-loader is not installed (pip install espeakng-loader)"
        ) from None
    lib = ctypes.cdll.LoadLibrary(str(espeakng_loader.get_library_path()))
    data = str(espeakng_loader.get_data_path()).encode()
    lib.espeak_Initialize.restype = ctypes.c_int
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, ctypes.c_char_p(data), 0)
    if rate <= 0:
        raise EspeakUnavailable(f"espeak_Initialize failed ({rate})")
    lib.espeak_SetSynthCallback(_CALLBACK)
    _rate = rate
    _lib = lib
    return lib


def synthesize(text: str, voice: str | None = None, *, rate: int = 8000) -> bytes:
    """``text`` spoken as 16-bit mono PCM at ``rate`` Hz (8 kHz for a call)."""
    global _current_voice
    with _lock:
        lib = _library()
        wanted = voice or "en-us"
        if wanted != _current_voice:
            if lib.espeak_SetVoiceByName(wanted.encode()) != 0:
                raise ValueError(f"espeak-ng has no voice {wanted!r}")
            _current_voice = wanted
        _chunks.clear()
        data = text.encode("utf-8")
        status = lib.espeak_Synth(
            ctypes.c_char_p(data),
            len(data) + 1,
            0,
            _POS_CHARACTER,
            0,
            _ESPEAK_CHARS_UTF8,
            None,
            None,
        )
        if status != 0:
            raise RuntimeError(f"espeak_Synth failed ({status})")
        lib.espeak_Synchronize()
        pcm = b"".join(_chunks)
        _chunks.clear()
        source_rate = _rate
    return resample(pcm, source_rate, rate)


def resample(pcm: bytes, source_rate: int, rate: int) -> bytes:
    """Linear-interpolation resampling of 16-bit mono PCM (speech band only needs this)."""
    if source_rate == rate or not pcm:
        return pcm
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    if rate < source_rate:
        # A short moving average as the anti-alias filter before decimating.
        width = max(1, round(source_rate / rate))
        samples = np.convolve(samples, np.ones(width) / width, mode="same")
    n_out = int(len(samples) * rate / source_rate)
    out = np.interp(np.arange(n_out) * source_rate / rate, np.arange(len(samples)), samples)
    return bytes(np.clip(np.round(out), -32768, 32767).astype("<i2").tobytes())
