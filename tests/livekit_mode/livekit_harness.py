"""LiveKit-mode harness: ``byeline serve`` with LiveKit API keys, the real livekit-api client.

byeline serve runs as a subprocess (the e2e harness's :func:`start_serve`) with ``--http`` and
``LIVEKIT_API_KEY``/``LIVEKIT_API_SECRET`` in its environment, without ``--routes`` (no agent:
the calls wait for the LiveKit API to end them) and with a trunk for another number, so the
Five9 trunk under test is the one created through ``CreateSIPInboundTrunk``.
"""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e_harness import (
    SERVICE,
    TRUNK,
    TRUNK_ELSEWHERE,
    Served,
    free_port,
    start_app,
    start_serve,
)
from google.protobuf import json_format
from livekit import api
from livekit.protocol import room as lk_room
from livekit.protocol import sip as lk_sip

from byeline.app import App
from byeline.five9.sipp import SippResult, run_sipp

HERE = Path(__file__).resolve().parent
SCENARIO = HERE / "livekit_bye_check.xml"
API_KEY = "APIbyelineTest"
API_SECRET = "byeline-test-secret-0123456789abcdefghijklmnop"

ROUTING = {
    "five9.route_type": "skill_transfer",
    "five9.route_value": "Billing",
    "five9.route_reason": "caller asked for billing",
    "five9.metadata": '{"route":"billing","intent":"billing"}',
}
ROUTING_HEADERS = {
    "X-RouteType": "skill_transfer",
    "X-RouteValue": "Billing",
    "X-RouteReason": "caller asked for billing",
    "X-MetaData": '{"route":"billing","intent":"billing"}',
}


@dataclass
class LiveKitServed:
    """A running byeline serve and a LiveKit API client pointed at it."""

    served: Served
    url: str
    lkapi: api.LiveKitAPI
    tmp: Path

    async def close(self) -> None:
        await self.lkapi.aclose()
        await self.served.stop(10)


async def start_livekit_serve(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> LiveKitServed:
    """Start byeline serve with LiveKit keys and ``--http``; connect a livekit-api client."""
    monkeypatch.setenv("LIVEKIT_API_KEY", API_KEY)
    monkeypatch.setenv("LIVEKIT_API_SECRET", API_SECRET)
    port = free_port(socket.SOCK_STREAM)
    directory = tmp / "serve"
    directory.mkdir()
    served = await start_serve(
        directory,
        "--http",
        f"127.0.0.1:{port}",
        trunks=(TRUNK_ELSEWHERE,),
        routes=None,
    )
    url = f"http://127.0.0.1:{port}"
    return LiveKitServed(served, url, api.LiveKitAPI(url, API_KEY, API_SECRET), tmp)


@dataclass
class LiveKitApp:
    """byeline built in this process (faster to start), its HTTP URL and a LiveKit client."""

    app: App
    url: str
    lkapi: api.LiveKitAPI

    async def close(self) -> None:
        await self.lkapi.aclose()
        await self.app.stop()


async def start_livekit_app(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> LiveKitApp:
    """The same as :func:`start_livekit_serve`, in process (for the API-only tests)."""
    monkeypatch.setenv("LIVEKIT_API_KEY", API_KEY)
    monkeypatch.setenv("LIVEKIT_API_SECRET", API_SECRET)
    port = free_port(socket.SOCK_STREAM)
    app, _ = await start_app(
        tmp,
        trunk=[str(TRUNK_ELSEWHERE)],
        routes=None,
        http=f"127.0.0.1:{port}",
        api_token="byeline-api-token",
    )
    url = f"http://127.0.0.1:{port}"
    return LiveKitApp(app, url, api.LiveKitAPI(url, API_KEY, API_SECRET))


def trunk_request(path: Path = TRUNK) -> lk_sip.CreateSIPInboundTrunkRequest:
    """The trunk file as ``lk sip inbound create FILE`` sends it."""
    return json_format.Parse(path.read_text("utf-8"), lk_sip.CreateSIPInboundTrunkRequest())


async def create_five9_trunk(lkapi: api.LiveKitAPI) -> lk_sip.SIPInboundTrunkInfo:
    """CreateSIPInboundTrunk from the e2e trunk file (the number SIPp calls)."""
    return await lkapi.sip.create_inbound_trunk(trunk_request())


def place_call(workdir: Path, served: Served) -> asyncio.Task[SippResult]:
    """SIPp as Five9: one call that waits for the BYE and checks its routing headers."""
    workdir.mkdir(parents=True, exist_ok=True)
    media = free_port() & ~1
    return asyncio.ensure_future(
        run_sipp(
            served.target,
            SCENARIO,
            workdir=workdir,
            service=SERVICE,
            variables={"ani": "5550100"},
            local_port=free_port(),
            extra=["-mp", str(media)],
            timeout=30,
        )
    )


async def wait_room(lkapi: api.LiveKitAPI, timeout: float = 10.0) -> lk_room.ListRoomsResponse:
    """ListRooms until a room is there."""
    for _ in range(int(timeout / 0.05)):
        rooms = await lkapi.room.list_rooms(lk_room.ListRoomsRequest())
        if rooms.rooms:
            return rooms
        await asyncio.sleep(0.05)
    raise AssertionError("no room appeared: the call did not reach byeline")


def why(result: SippResult) -> str:
    """SIPp's own account of a failure."""
    return (
        f"sipp exit {result.returncode}\nerrors:\n{result.errors[-1500:]}\n"
        f"log:\n{result.log[-800:]}\nmessages:\n{result.messages[-3000:]}"
    )


def routing_json() -> str:
    """The routing attributes as JSON (for the protojson request)."""
    return json.dumps(ROUTING)
