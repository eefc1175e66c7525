"""byeline's routing agent as a LiveKit Agents worker (``byeline livekit worker``).

The worker registers with the LiveKit deployment (``LIVEKIT_URL``, ``LIVEKIT_API_KEY``,
``LIVEKIT_API_SECRET``) under an agent name that the dispatch rule's
``room_config.agents`` names (``five9-router`` in the example rule). For every call LiveKit
puts in a room, a job:

1. connects, waits for the SIP participant and builds the agent's ``Call`` from it
   (:func:`~byeline.livekit.call_handle.sip_participant_call`): identity, attributes (the
   Five9 context the trunk's ``headers_to_attributes`` put there);
2. wires the room to the call: SIP DTMF → ``dtmf`` events, the participant leaving →
   the caller hung up, attribute changes → what the participant holds now;
3. runs the same :class:`~byeline.agent.routing_agent.RoutingAgent` as ``byeline serve``, in an
   ``AgentSession`` on the room's audio (LiveKit's room IO) instead of byeline's RTP;
4. hands back in the safe order (:class:`~byeline.livekit.call_handle.LiveKitSipLeg`); the
   session never deletes the room (``delete_room_on_close=False``).

Job processes are started by LiveKit Agents (forkserver): what a job needs is read from
``BYELINE_LIVEKIT_*`` environment variables that ``byeline livekit worker`` sets, and the
routes, recogniser and VAD are loaded once per process in :func:`prewarm`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from livekit import rtc
from livekit.agents import AgentServer, JobContext, JobProcess
from livekit.agents.voice import AgentSession
from livekit.agents.voice.events import CloseEvent
from livekit.agents.voice.room_io import RoomOptions

from ..agent.handback import HandbackContext
from ..agent.intent_llm import IntentLLM
from ..agent.routes import Routes, load_routes
from ..agent.routing_agent import RoutingAgent
from ..edge.call import Call, EndedBy
from ..edge.trunk import Trunk, load_trunk
from .call_handle import LiveKitRoomApi, LiveKitSipLeg, sip_participant_call

__all__ = [
    "DEFAULT_AGENT_NAME",
    "WorkerSettings",
    "bind_room",
    "entrypoint",
    "prewarm",
    "run_routing_session",
    "run_worker",
]

log = logging.getLogger("byeline.livekit")

DEFAULT_AGENT_NAME = "five9-router"
CREDENTIALS = ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")


@dataclass(frozen=True)
class WorkerSettings:
    """What every job of the worker needs (passed to job processes in the environment)."""

    routes: Path
    trunk: Path | None = None
    agent_name: str = DEFAULT_AGENT_NAME
    no_input_timeout: float | None = None

    def to_env(self) -> dict[str, str]:
        """``BYELINE_LIVEKIT_*`` variables for the job processes."""
        env = {"BYELINE_LIVEKIT_ROUTES": str(self.routes), "BYELINE_LIVEKIT_AGENT": self.agent_name}
        if self.trunk is not None:
            env["BYELINE_LIVEKIT_TRUNK"] = str(self.trunk)
        if self.no_input_timeout is not None:
            env["BYELINE_LIVEKIT_NO_INPUT_TIMEOUT"] = str(self.no_input_timeout)
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerSettings:
        """The settings :meth:`to_env` wrote."""
        env = os.environ if environ is None else environ
        routes = env.get("BYELINE_LIVEKIT_ROUTES")
        if not routes:
            raise RuntimeError(
                "BYELINE_LIVEKIT_ROUTES is not set (start with byeline livekit worker)"
            )
        trunk = env.get("BYELINE_LIVEKIT_TRUNK")
        timeout = env.get("BYELINE_LIVEKIT_NO_INPUT_TIMEOUT")
        return cls(
            routes=Path(routes),
            trunk=Path(trunk) if trunk else None,
            agent_name=env.get("BYELINE_LIVEKIT_AGENT", DEFAULT_AGENT_NAME),
            no_input_timeout=float(timeout) if timeout else None,
        )


# -- the room and the call --------------------------------------------------------------------


class RoomEvents(Protocol):
    """The part of ``rtc.Room`` :func:`bind_room` uses (``on``/``off`` of its events)."""

    def on(self, event: Any, callback: Callable[..., Any] | None = None) -> Any: ...

    def off(self, event: Any, callback: Callable[..., Any]) -> None: ...


def bind_room(room: RoomEvents, call: Call, leg: LiveKitSipLeg) -> Callable[[], None]:
    """Feed the room's events for the call's SIP participant into the call; returns unbind."""
    identity = leg.identity

    def on_dtmf(ev: rtc.SipDTMF) -> None:
        if ev.participant is None or ev.participant.identity == identity:
            call.emit("dtmf", ev.digit)

    def on_left(participant: rtc.RemoteParticipant) -> None:
        if participant.identity == identity:
            leg.caller_left(call)

    def on_attributes(changed: dict[str, str], participant: rtc.Participant) -> None:
        if participant.identity == identity:
            leg.remote_attributes_changed(changed)

    handlers: list[tuple[str, Callable[..., None]]] = [
        ("sip_dtmf_received", on_dtmf),
        ("participant_disconnected", on_left),
        ("participant_attributes_changed", on_attributes),
    ]
    for event, handler in handlers:
        room.on(event, handler)

    def unbind() -> None:
        for event, handler in handlers:
            room.off(event, handler)

    return unbind


async def run_routing_session(
    call: Call,
    routes: Routes,
    *,
    room: rtc.Room,
    stt: Any,
    tts: Any,
    vad: Any,
    no_input_timeout: float | None = None,
) -> HandbackContext:
    """The routing agent on the room's audio until the call is handed back or the caller left.

    The same steps as :class:`~byeline.agent.routing_agent.VoiceAgentRunner` on the edge;
    only the audio differs (LiveKit's room IO linked to the SIP participant).
    """
    state = HandbackContext(call=call, routes=routes)
    session: AgentSession[HandbackContext] = AgentSession(
        stt=stt,
        vad=vad,
        llm=IntentLLM(routes),
        tts=tts,
        userdata=state,
        user_away_timeout=None,  # the agent's own no-input timer does this job
    )
    agent = RoutingAgent(state, no_input_timeout=no_input_timeout)
    closed: asyncio.Future[CloseEvent] = asyncio.get_running_loop().create_future()

    def on_close(ev: CloseEvent) -> None:
        if not closed.done():
            closed.set_result(ev)

    session.on("close", on_close)
    try:
        await session.start(
            agent,
            room=room,
            room_options=RoomOptions(
                participant_identity=call.identity,
                close_on_disconnect=True,
                delete_room_on_close=False,  # never: the BYE must go first (LiveKit #404)
            ),
            record=False,
        )
        ended: asyncio.Future[Any] = asyncio.ensure_future(call.wait_ended())
        waiting: set[asyncio.Future[Any]] = {ended, closed}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        ended.cancel()
        ended_by = EndedBy.AGENT
        if not call.ended and state.decision is None:
            log.warning("%s: agent session closed early; fallback route", call.call_id)
            state.decide(routes.fallback, intent="agent_error")
            ended_by = EndedBy.ERROR
        if state.decision is not None:
            state.hand_back(ended_by=ended_by)
            await state.wait_handed_back()
    finally:
        agent.close()
        await session.aclose()
    return state


# -- job processes ------------------------------------------------------------------------------


def prewarm(proc: JobProcess) -> None:
    """Load the routes, the trunk, the recogniser and the VAD once per job process."""
    from livekit.plugins import silero

    from ..agent.speech import EspeakTTS, PocketsphinxSTT

    settings = WorkerSettings.from_env()
    routes = load_routes(settings.routes)
    stt = PocketsphinxSTT.for_routes(routes)
    stt.prewarm()
    proc.userdata.update(
        settings=settings,
        routes=routes,
        trunk=load_trunk(settings.trunk) if settings.trunk else None,
        stt=stt,
        tts=EspeakTTS(),
        vad=silero.VAD.load(),
    )


async def entrypoint(ctx: JobContext) -> None:
    """One call: find the SIP participant, run the routing agent, hand back."""
    data = ctx.proc.userdata
    if "routes" not in data:
        prewarm(ctx.proc)
    settings: WorkerSettings = data["settings"]
    routes: Routes = data["routes"]
    trunk: Trunk | None = data["trunk"]
    await ctx.connect()
    participant = await ctx.wait_for_participant(kind=rtc.ParticipantKind.PARTICIPANT_KIND_SIP)
    server = LiveKitRoomApi(ctx.api.room, room=ctx.room)
    call, leg = sip_participant_call(participant, room=ctx.room.name, server=server, trunk=trunk)
    unbind = bind_room(ctx.room, call, leg)
    log.info("%s: SIP participant %s in room %s", call.call_id, call.identity, ctx.room.name)
    try:
        await run_routing_session(
            call,
            routes,
            room=ctx.room,
            stt=data["stt"],
            tts=data["tts"],
            vad=data["vad"],
            no_input_timeout=settings.no_input_timeout,
        )
    finally:
        unbind()
    log.info("%s: handed back (%s)", call.call_id, " → ".join(leg.steps) or "caller left")
    ctx.shutdown(reason="handed back")


# -- the worker ---------------------------------------------------------------------------------


def missing_credentials(environ: Mapping[str, str] | None = None) -> list[str]:
    """The LiveKit credential variables that are not set."""
    env = os.environ if environ is None else environ
    return [name for name in CREDENTIALS if not env.get(name, "").strip()]


def run_worker(settings: WorkerSettings) -> int:
    """Register with the deployment and take calls until SIGTERM/SIGINT (then drain)."""
    os.environ.update(settings.to_env())
    server = AgentServer(setup_fnc=prewarm)
    server.rtc_session(entrypoint, agent_name=settings.agent_name)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stopping: asyncio.Event = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stopping.set)
        running = asyncio.ensure_future(server.run())
        stop = asyncio.ensure_future(stopping.wait())
        await asyncio.wait({running, stop}, return_when=asyncio.FIRST_COMPLETED)
        if stop.done() and not running.done():
            log.info("draining: the calls in progress are handed back first")
            with contextlib.suppress(Exception):
                await server.drain()
        stop.cancel()
        await server.aclose()
        if running.done() and not running.cancelled() and running.exception() is not None:
            raise running.exception()  # type: ignore[misc]

    asyncio.run(main())
    return 0
