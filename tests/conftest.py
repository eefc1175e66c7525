"""Fixtures shared by the suites that run ``byeline serve`` as a subprocess.

The harness is ``tests/e2e/e2e_harness.py`` (SIPp, the serve subprocess, records) and the fault
relay ``tests/faults/relay.py``; both folders are put on the import path for every suite.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
for _shared in (TESTS / "e2e", TESTS / "faults"):
    if str(_shared) not in sys.path:
        sys.path.insert(0, str(_shared))

from e2e_harness import Served, start_serve  # noqa: E402


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """``await serve(*flags, ...)`` starts byeline serve; each is stopped at teardown."""
    started: list[Served] = []

    async def start(*args: str, **kwargs: Any) -> Served:
        directory = tmp_path / f"serve{len(started)}"
        directory.mkdir()
        served = await start_serve(directory, *args, **kwargs)
        started.append(served)
        return served

    yield start
    for served in started:
        await served.stop(10)
