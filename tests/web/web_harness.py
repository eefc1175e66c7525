"""The web suite's harness: byeline in-process with its HTTP server, calls placed by the Five9
simulator, and a local webhook receiver (the fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from byeline.app import App, build_app
from byeline.config import ServeConfig
from byeline.five9.simulator import CallOutcome, CallPlan, place_call
from byeline.five9.variables import default_call_variables
from byeline.web.server import HttpServer, start_http

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "src" / "byeline" / "examples"
TOKEN = "test-token-3f9a"
SECRET = "webhook-secret-77"


@dataclass
class Served:
    """byeline with its HTTP server, and a client that sends the token."""

    app: App
    http: HttpServer
    client: aiohttp.ClientSession

    @property
    def base(self) -> str:
        return self.http.url

    async def get(self, path: str, *, token: str | None = TOKEN) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.client.get(self.base + path, headers=headers) as response:
            text = await response.text()
            if response.content_type == "application/json":
                return response.status, json.loads(text)
            return response.status, text

    async def call(self, five9_call_id: str, **plan: Any) -> CallOutcome:
        cavs = default_call_variables(ani="+15555550123", dnis="+18005550100")
        cavs["X-CallID"] = five9_call_id
        target = f"127.0.0.1:{self.app.bound[0].port}"
        return await place_call(
            CallPlan(
                target=target,
                call_variables=cavs,
                timeout=15,
                rtp_ports=(35000, 35100),
                **plan,
            )
        )


async def start_served(
    tmp_path: Path, *, webhooks: list[str] | None = None, db: str | None = None, **options: Any
) -> Served:
    cfg = ServeConfig(
        trunk=[str(EXAMPLES / "five9-trunk.json")],
        routes=str(EXAMPLES / "routes.yaml"),
        sip=["udp:127.0.0.1:0"],
        db=db or str(tmp_path / "calls.db"),
        rtp_ports="34000-34100",
        no_input_timeout=1.0,
        agent="dtmf",  # these tests write their own transcript lines
    )
    app = build_app(cfg)
    http = await start_http(
        host="127.0.0.1",
        port=0,
        store=app.store,
        edge=app.edge,
        token=TOKEN,
        webhooks=webhooks or [],
        webhook_secret=SECRET if webhooks else None,
        **options,
    )
    await app.start()
    return Served(app, http, aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)))


async def stop_served(served: Served) -> None:
    await served.client.close()
    await served.http.stop()
    await served.app.stop()


@dataclass
class Receiver:
    """A local webhook receiver: answers with the queued statuses (then 200), keeps requests."""

    url: str = ""
    statuses: list[int] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, count: int, timeout: float = 15.0) -> None:
        async def enough() -> None:
            while sum(1 for _ in self.delivered()) < count:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(enough(), timeout)

    def delivered(self) -> list[tuple[dict[str, str], bytes]]:
        return [r for r, status in zip(self.requests, self._answers, strict=True) if status < 300]

    _answers: list[int] = field(default_factory=list)


Starter = Callable[..., Awaitable[Served]]
