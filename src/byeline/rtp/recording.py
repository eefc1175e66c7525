"""Call recordings: a two-channel WAV file (left = caller, right = agent), written as the call goes.

``RtpEndpoint`` calls a :class:`Recorder` on every 20 ms tick with the frame it received (decoded,
silence where nothing arrived) and the frame it sent (silence included), so both channels follow
the same media clock. :class:`CallRecording` is the WAV implementation:

- 8 kHz, 16-bit, stereo PCM (the G.711 audio decoded, nothing resampled);
- written incrementally: frames go to a buffered file, never kept in memory, and the RIFF sizes in
  the header are rewritten about once a second, so a recording cut short by a crash is still a
  valid WAV file up to the last update;
- a side that gets ahead of the other by more than ``max_skew`` frames is paired with silence, so
  one channel can never drift against the other; :meth:`CallRecording.close` pads the last frames
  the same way and finalises the header.

Writes are small buffered ones on the caller's thread (the event loop): about 32 kB a second per
call, flushed in 64 kB blocks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
from collections import deque
from types import TracebackType
from typing import BinaryIO, Final, Protocol

import numpy as np

from byeline.rtp.g711 import BytesLike

__all__ = ["CHANNELS", "SAMPLE_RATE", "CallRecording", "Recorder"]

logger = logging.getLogger(__name__)

SAMPLE_RATE: Final = 8000
CHANNELS: Final = 2
_SAMPLE_BYTES: Final = 2
_HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")
_HEADER_SIZE: Final = _HEADER.size  # 44
_MAX_DATA: Final = 0xFFFFFFFF - 36  # RIFF sizes are 32-bit
_BUFFER: Final = 64 * 1024


class Recorder(Protocol):
    """What ``RtpEndpoint`` feeds on every tick: one frame from each side of the call.

    Frames are 16-bit little-endian PCM at 8 kHz (320 bytes for 20 ms). The buffer may be a view
    into the endpoint's playback queue: use or copy it before returning.
    """

    def caller_frame(self, pcm: BytesLike) -> None:
        """The frame received from the remote party (the caller, at the edge)."""

    def agent_frame(self, pcm: BytesLike) -> None:
        """The frame sent to the remote party (the agent's voice, prompts, silence)."""


def _wav_header(data_bytes: int) -> bytes:
    block_align = CHANNELS * _SAMPLE_BYTES
    return _HEADER.pack(
        b"RIFF",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        1,  # PCM
        CHANNELS,
        SAMPLE_RATE,
        SAMPLE_RATE * block_align,
        block_align,
        8 * _SAMPLE_BYTES,
        b"data",
        data_bytes,
    )


class CallRecording:
    """A stereo WAV recording of one call at ``path`` (left = caller, right = agent).

    Feed it with :meth:`caller_frame` and :meth:`agent_frame` (it is a :class:`Recorder`), then
    :meth:`close` it at the end of the call (or use it as a context manager). The file is created
    at once, replacing any file at ``path``. ``header_interval`` is the number of stereo frames
    between header updates (50 = one second at 20 ms).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_skew: int = 5,
        header_interval: int = 50,
    ) -> None:
        if max_skew < 1:
            raise ValueError(f"max_skew must be at least 1 frame, got {max_skew}")
        if header_interval < 1:
            raise ValueError(f"header_interval must be at least 1 frame, got {header_interval}")
        self.path = os.fspath(path)
        self.max_skew = max_skew
        self.header_interval = header_interval
        self._file: BinaryIO | None = open(self.path, "wb", buffering=_BUFFER)  # noqa: SIM115
        self._file.write(_wav_header(0))
        self._caller: deque[bytes] = deque()
        self._agent: deque[bytes] = deque()
        self._data_bytes = 0
        self._since_header = 0
        self.frames = 0
        """Stereo frames written (each pairs one caller frame with one agent frame)."""
        self.truncated = False
        """True if the 4 GiB WAV limit was reached (about 37 hours) and audio was dropped."""
        self.error: OSError | None = None
        """The write error that stopped the recording (disk full...), if any; the call goes on."""

    def __repr__(self) -> str:
        return f"CallRecording({self.path!r}, {self.duration:.2f} s)"

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._file is None

    @property
    def duration(self) -> float:
        """Seconds of audio written so far."""
        return self._data_bytes / (SAMPLE_RATE * CHANNELS * _SAMPLE_BYTES)

    def caller_frame(self, pcm: BytesLike) -> None:
        """Add the next frame of the caller's side (left channel)."""
        self._add(self._caller, self._agent, pcm)

    def agent_frame(self, pcm: BytesLike) -> None:
        """Add the next frame of the agent's side (right channel)."""
        self._add(self._agent, self._caller, pcm)

    def _add(self, side: deque[bytes], other: deque[bytes], pcm: BytesLike) -> None:
        if self._file is None:
            return
        if len(pcm) % 2:
            raise ValueError(f"16-bit PCM must have an even number of bytes, got {len(pcm)}")
        if other:
            self._write(other.popleft(), pcm, left_first=side is self._agent)
            return
        side.append(bytes(pcm))
        if len(side) > self.max_skew:
            # The other side has stopped feeding: it is silent for the oldest frame.
            frame = side.popleft()
            self._write(frame, b"", left_first=side is self._caller)

    def _write(self, first: BytesLike, second: BytesLike, *, left_first: bool) -> None:
        left, right = (first, second) if left_first else (second, first)
        samples = max(len(left), len(right)) // 2
        stereo = np.zeros((samples, 2), dtype="<i2")
        stereo[: len(left) // 2, 0] = np.frombuffer(left, dtype="<i2")
        stereo[: len(right) // 2, 1] = np.frombuffer(right, dtype="<i2")
        data = stereo.tobytes()
        if self._data_bytes + len(data) > _MAX_DATA:
            self.truncated = True
            return
        file = self._file
        if file is None:
            return
        try:
            file.write(data)
        except OSError as exc:
            self._abandon(exc)
            return
        self._data_bytes += len(data)
        self.frames += 1
        self._since_header += 1
        if self._since_header >= self.header_interval:
            self._update_header()

    def _update_header(self) -> None:
        file = self._file
        if file is None:
            return
        self._since_header = 0
        try:
            end = file.tell()
            file.seek(0)
            file.write(_wav_header(self._data_bytes))
            file.seek(end)
        except OSError as exc:
            self._abandon(exc)

    def _abandon(self, exc: OSError) -> None:
        # A full disk must not break the call: the media tick goes on, the recording stops.
        logger.warning("recording %s stopped after %.1f s: %s", self.path, self.duration, exc)
        self.error = exc
        file, self._file = self._file, None
        self._caller.clear()
        self._agent.clear()
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()

    def close(self) -> None:
        """Write the frames still waiting (their other side is silence), finalise, close."""
        if self._file is None:
            return
        while self._caller:
            self._write(self._caller.popleft(), b"", left_first=True)
        while self._agent:
            self._write(self._agent.popleft(), b"", left_first=False)
        self._update_header()
        file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except OSError as exc:  # the last flush
                self._abandon(exc)

    def __enter__(self) -> CallRecording:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
