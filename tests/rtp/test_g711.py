"""G.711: the numpy tables against audioop exhaustively, and the public conversions on both paths.

``audioop`` is CPython's module (3.11, 3.12) or the ``audioop-lts`` package (3.13+); the public
conversions run in it when it imports and in the numpy tables otherwise, so the tables are held
bit-exact to it here, and the public functions to both.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

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
    table_alaw_decode,
    table_alaw_encode,
    table_ulaw_decode,
    table_ulaw_encode,
    ulaw_decode,
    ulaw_encode,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

ALL_SAMPLES = np.arange(-32768, 32768, dtype="<i2").tobytes()
ALL_CODES = bytes(range(256))


def test_the_fast_path_is_taken() -> None:
    # audioop is a dependency on every supported Python: the tables are only a fallback.
    assert g711.HAVE_AUDIOOP


def test_ulaw_encode_all_samples() -> None:
    expected = audioop.lin2ulaw(ALL_SAMPLES, 2)
    assert table_ulaw_encode(ALL_SAMPLES) == expected
    assert ulaw_encode(ALL_SAMPLES) == expected


def test_alaw_encode_all_samples() -> None:
    expected = audioop.lin2alaw(ALL_SAMPLES, 2)
    assert table_alaw_encode(ALL_SAMPLES) == expected
    assert alaw_encode(ALL_SAMPLES) == expected


def test_ulaw_decode_all_codes() -> None:
    expected = audioop.ulaw2lin(ALL_CODES, 2)
    assert table_ulaw_decode(ALL_CODES) == expected
    assert ulaw_decode(ALL_CODES) == expected


def test_alaw_decode_all_codes() -> None:
    expected = audioop.alaw2lin(ALL_CODES, 2)
    assert table_alaw_decode(ALL_CODES) == expected
    assert alaw_decode(ALL_CODES) == expected


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


@pytest.mark.parametrize("encode", [ulaw_encode, alaw_encode, table_ulaw_encode, table_alaw_encode])
def test_odd_pcm_length_is_refused(encode: Callable[[bytes], bytes]) -> None:
    with pytest.raises(ValueError, match="even number of bytes, got 3"):
        encode(b"abc")


def test_accepts_memoryview_bytearray_and_empty() -> None:
    view = memoryview(ALL_SAMPLES)[640:960]
    assert ulaw_encode(view) == table_ulaw_encode(view) == audioop.lin2ulaw(bytes(view), 2)
    assert alaw_encode(bytearray(view)) == table_alaw_encode(bytearray(view))
    assert ulaw_decode(memoryview(ALL_CODES)[3:9]) == table_ulaw_decode(ALL_CODES[3:9])
    assert ulaw_encode(b"") == table_ulaw_encode(b"") == b""
    assert alaw_decode(b"") == table_alaw_decode(b"") == b""
    # Both paths return bytes, whatever they were given.
    assert type(ulaw_encode(view)) is bytes and type(table_ulaw_encode(view)) is bytes


@given(st.binary(max_size=400).filter(lambda b: len(b) % 2 == 0))
def test_random_pcm_matches_audioop(pcm: bytes) -> None:
    assert ulaw_encode(pcm) == table_ulaw_encode(pcm) == audioop.lin2ulaw(pcm, 2)
    assert alaw_encode(pcm) == table_alaw_encode(pcm) == audioop.lin2alaw(pcm, 2)
