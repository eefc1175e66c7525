"""G.711 against CPython's audioop, exhaustively."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from byeline.rtp import g711
from byeline.rtp.g711 import (
    PCMA,
    PCMA_SILENCE,
    PCMU,
    PCMU_SILENCE,
    alaw_decode,
    alaw_encode,
    ulaw_decode,
    ulaw_encode,
)

if sys.version_info >= (3, 13):
    pytest.skip("audioop was removed in Python 3.13", allow_module_level=True)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

ALL_SAMPLES = np.arange(-32768, 32768, dtype="<i2").tobytes()
ALL_CODES = bytes(range(256))


def test_ulaw_encode_all_samples() -> None:
    assert ulaw_encode(ALL_SAMPLES) == audioop.lin2ulaw(ALL_SAMPLES, 2)


def test_alaw_encode_all_samples() -> None:
    assert alaw_encode(ALL_SAMPLES) == audioop.lin2alaw(ALL_SAMPLES, 2)


def test_ulaw_decode_all_codes() -> None:
    assert ulaw_decode(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)


def test_alaw_decode_all_codes() -> None:
    assert alaw_decode(ALL_CODES) == audioop.alaw2lin(ALL_CODES, 2)


def test_round_trip_is_idempotent() -> None:
    # Decoding a code and encoding it again gives the code back (0x7F and 0xFF both mean zero in
    # µ-law; the encoder picks 0xFF).
    assert ulaw_encode(ulaw_decode(ALL_CODES)) == bytes(c if c != 0x7F else 0xFF for c in ALL_CODES)
    assert alaw_encode(alaw_decode(ALL_CODES)) == ALL_CODES


def test_silence_constants() -> None:
    assert ulaw_encode(bytes(2)) == bytes([PCMU_SILENCE])
    assert alaw_encode(bytes(2)) == bytes([PCMA_SILENCE])
    assert ulaw_decode(bytes([PCMU_SILENCE])) == bytes(2)


def test_dispatch_by_payload_type() -> None:
    frame = np.linspace(-20000, 20000, 160).astype("<i2").tobytes()
    assert g711.encode(PCMU, frame) == ulaw_encode(frame)
    assert g711.encode(PCMA, frame) == alaw_encode(frame)
    assert g711.decode(PCMU, ulaw_encode(frame)) == ulaw_decode(ulaw_encode(frame))
    assert g711.decode(PCMA, b"\xd5") == alaw_decode(b"\xd5")
    with pytest.raises(ValueError, match=r"payload type 9 is not G\.711"):
        g711.encode(9, frame)
    with pytest.raises(ValueError, match=r"payload type 18 is not G\.711"):
        g711.decode(18, b"")


def test_odd_pcm_length_is_refused() -> None:
    with pytest.raises(ValueError, match="even number of bytes, got 3"):
        ulaw_encode(b"abc")
    with pytest.raises(ValueError, match="even number of bytes"):
        alaw_encode(b"a")


def test_accepts_memoryview_and_empty() -> None:
    view = memoryview(ALL_SAMPLES)[640:960]
    assert ulaw_encode(view) == audioop.lin2ulaw(bytes(view), 2)
    assert ulaw_encode(b"") == b""
    assert alaw_decode(b"") == b""


@given(st.binary(max_size=400).filter(lambda b: len(b) % 2 == 0))
def test_random_pcm_matches_audioop(pcm: bytes) -> None:
    assert ulaw_encode(pcm) == audioop.lin2ulaw(pcm, 2)
    assert alaw_encode(pcm) == audioop.lin2alaw(pcm, 2)
