"""Fixtures of the web suite (the harness is web_harness.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from web_harness import Receiver, Served, start_served, stop_served


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    running = await start_served(tmp_path)
    yield running
    await stop_served(running)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        status = state.statuses.pop(0) if state.statuses else 200
        state.requests.append((dict(request.headers), body))
        state._answers.append(status)
        state.arrived.set()
        return web.Response(status=status, text="ok" if status < 300 else "try later")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url = f"http://127.0.0.1:{port}/hook"
    yield state
    await runner.cleanup()
