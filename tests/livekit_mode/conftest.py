"""Fixtures of the LiveKit-mode suite; the harness is livekit_harness.py."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

# The e2e harness (byeline serve as a subprocess, SIPp) is shared with tests/e2e.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from livekit_harness import LiveKitApp, LiveKitServed, start_livekit_app, start_livekit_serve


@pytest.fixture
async def lk_serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LiveKitServed]:
    """``byeline serve --http`` with LiveKit API keys, no agent, and a LiveKit API client."""
    served = await start_livekit_serve(tmp_path, monkeypatch)
    try:
        yield served
    finally:
        await served.close()


@pytest.fixture
async def lk_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LiveKitApp]:
    """The same, built in this process (no SIP peer needed: the API-only tests)."""
    running = await start_livekit_app(tmp_path, monkeypatch)
    try:
        yield running
    finally:
        await running.close()
