"""Fixtures of the end-to-end suite; the harness itself is e2e_harness.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from e2e_harness import Served, start_serve


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
