"""Put the layers together for ``byeline serve`` and ``byeline demo``.

Everything a configuration names is loaded and checked before any socket is
opened: a wrong trunk file, routes file or listen address stops start-up with
a one-line reason, not the first call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .agent.menu import DtmfMenuAgent, shutdown_handback
from .agent.routes import Routes, check_routes_against_trunk, load_routes
from .config import ConfigError, ServeConfig
from .edge.call import Call
from .edge.server import SCANNER_USER_AGENTS, AgentFactory, EdgeConfig, SipEdge
from .edge.trunk import DispatchRuleSet, TrunkSet, load_dispatch_rule, load_trunk
from .net.sip_transport import ListenSpec
from .sip.transaction import TimerConfig

log = logging.getLogger("byeline")


@dataclass
class App:
    """A running byeline: the edge, its store, the HTTP API and what it serves."""

    edge: SipEdge
    store: Any
    routes: Routes | None
    cfg: ServeConfig | None = None
    bound: list[ListenSpec] = field(default_factory=list)
    http: Any = None
    retention: Any = None
    _recording_purge: asyncio.Future[None] | None = None

    async def start(self) -> None:
        """Open the HTTP API (so its metrics see every call), then the SIP listeners."""
        cfg = self.cfg
        if cfg is not None and self.store is not None:
            address = cfg.http_address
            if address is not None:
                from .web.server import start_http

                self.http = await start_http(
                    host=address[0],
                    port=address[1],
                    store=self.store,
                    edge=self.edge,
                    token=cfg.api_token,
                    webhooks=cfg.webhooks,
                    webhook_secret=cfg.webhook_secret,
                )
                log.info("HTTP API and dashboard on %s", self.http.url)
            if cfg.retention_days is not None:
                from .store import RetentionTask

                self.retention = RetentionTask(self.store, max_age=cfg.retention_days * 86400)
                self.retention.start()
                if cfg.recordings is not None:
                    self._recording_purge = asyncio.ensure_future(
                        _purge_recordings_forever(Path(cfg.recordings), cfg.retention_days * 86400)
                    )
        self.bound = await self.edge.start()

    async def stop(self) -> None:
        """Hand back every call with the on_shutdown route, flush records, close."""
        await self.edge.shutdown()
        if self.store is not None:
            await self.store.aflush()
        if self.retention is not None:
            await self.retention.stop()
        if self._recording_purge is not None:
            self._recording_purge.cancel()
        if self.http is not None:
            await self.http.stop()
        if self.store is not None:
            self.store.close()


AGENTS = ("voice", "dtmf")


def purge_recordings(directory: Path, older_than: float) -> int:
    """Delete call recordings last written before ``older_than`` (epoch seconds)."""
    removed = 0
    for path in directory.glob("SCL_*.wav"):
        try:
            if path.stat().st_mtime < older_than:
                path.unlink()
                removed += 1
        except OSError:
            continue
    return removed


async def _purge_recordings_forever(directory: Path, max_age: float) -> None:
    """Recordings keep the records' retention: checked at start and every hour."""
    while True:
        removed = await asyncio.to_thread(purge_recordings, directory, time.time() - max_age)
        if removed:
            log.info("retention: %d recordings removed", removed)
        await asyncio.sleep(3600)


def _announcement(path: str | None) -> bytes | None:
    """The recording announcement as 8 kHz PCM, checked at start."""
    if path is None:
        return None
    from .five9.simulator import load_wav_8k

    try:
        return load_wav_8k(Path(path))
    except ValueError as exc:
        raise ConfigError(f"recording_announcement: {exc}") from None


_transcript_roles = {"user": "caller", "assistant": "agent"}


def _build_agent(cfg: ServeConfig, routes: Routes | None, store: Any) -> AgentFactory | None:
    """The agent each call gets: the voice agent (speech and keys) or the keypad menu."""
    if routes is None:
        return None
    if cfg.agent not in AGENTS:
        raise ConfigError(f"agent {cfg.agent!r}: expected one of {', '.join(AGENTS)}")
    if cfg.agent == "dtmf":
        return DtmfMenuAgent(routes, no_input_timeout=cfg.no_input_timeout)
    from livekit.plugins import silero

    from .agent.providers import ProviderConfig, ProviderError, build_llm, build_stt, build_tts
    from .agent.routing_agent import VoiceAgentRunner

    providers = ProviderConfig(
        llm=cfg.llm,
        llm_model=cfg.llm_model,
        llm_base_url=cfg.llm_base_url,
        stt=cfg.stt,
        stt_model=cfg.stt_model,
        stt_base_url=cfg.stt_base_url,
        tts=cfg.tts,
        tts_model=cfg.tts_model,
        tts_voice=cfg.tts_voice,
        tts_base_url=cfg.tts_base_url,
    )
    try:
        providers.check()
        llm, stt, tts = (
            build_llm(providers, routes),
            build_stt(providers, routes),
            build_tts(providers),
        )
    except ProviderError as exc:
        raise ConfigError(str(exc)) from None
    if cfg.vad_sample_rate not in (8000, 16000):
        raise ConfigError(f"vad_sample_rate {cfg.vad_sample_rate}: expected 8000 or 16000")
    runner = VoiceAgentRunner(
        routes,
        stt=stt,
        tts=tts,
        llm=llm,
        # Loaded once, shared by every call.  At 8 kHz by default: the call is 8 kHz
        # G.711, so upsampling it for the VAD only costs CPU (see docs/PERFORMANCE.md).
        vad=silero.VAD.load(
            sample_rate=cfg.vad_sample_rate,  # type: ignore[arg-type]
            min_silence_duration=cfg.vad_min_silence,
        ),
        input_sample_rate=cfg.vad_sample_rate,
        no_input_timeout=cfg.no_input_timeout,
        session_options={
            "turn_handling": {
                # The VAD ends the caller's turn: pocketsphinx is not a streaming recogniser.
                "turn_detection": "vad",
                "endpointing": {"min_delay": cfg.endpointing_delay},
            }
        },
    )

    async def agent(call: Call) -> None:
        if store is not None:
            call.on(
                "transcript",
                lambda line: store.transcript(
                    call.call_id,
                    _transcript_roles.get(line["role"], line["role"]),
                    line["text"],
                    line["at"],
                ),
            )
        await runner(call)

    return agent


def _named_routes(
    cfg: ServeConfig, trunks: TrunkSet, dispatch: DispatchRuleSet | None, routes: Routes | None
) -> dict[str, Routes]:
    """``agents = ["NAME=ROUTES_FILE", ...]``: the routes of each agent a dispatch rule may name."""
    named: dict[str, Routes] = {}
    for entry in cfg.agents:
        name, sep, path = entry.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ConfigError(f"agents {entry!r}: expected NAME=ROUTES_FILE")
        named[name.strip()] = load_routes(path.strip())
    for r in named.values():
        problems = [p for t in trunks for p in check_routes_against_trunk(r, t)]
        if problems:
            raise ConfigError(problems[0])
    if named and dispatch is not None:
        for rule in dispatch:
            unknown = [a for a in rule.agents if a not in named]
            if unknown:
                raise ConfigError(
                    f"{rule.source}: room_config.agents names {unknown[0]!r}, which no "
                    f"agents entry registers (known: {', '.join(sorted(named))})"
                )
            if not rule.agents and routes is None:
                raise ConfigError(f"{rule.source}: names no agent and there is no --routes")
    return named


def build_app(cfg: ServeConfig, *, store: Any = None) -> App:
    """Load and check every file the configuration names; build the edge."""
    from .cli import tls_context

    if not cfg.trunk:
        raise ConfigError("no trunk file: give --trunk FILE (a LiveKit inbound trunk JSON)")
    trunks = TrunkSet(load_trunk(path) for path in cfg.trunk)
    dispatch = (
        DispatchRuleSet(load_dispatch_rule(p) for p in cfg.dispatch) if cfg.dispatch else None
    )
    routes = load_routes(cfg.routes) if cfg.routes else None
    if routes is not None:
        problems = [p for t in trunks for p in check_routes_against_trunk(routes, t)]
        if problems:
            raise ConfigError(
                problems[0] + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else "")
            )
    listen = [ListenSpec.parse(s) for s in cfg.sip] or [ListenSpec("UDP", "127.0.0.1", 5060)]
    edge_cfg = EdgeConfig(
        listen=listen,
        media_ip=cfg.media_ip,
        rtp_ports=cfg.rtp_range,
        max_calls=cfg.max_calls,
        media_timeout=cfg.media_timeout,
        shutdown_grace=cfg.shutdown_grace,
        answer_delay=cfg.answer_delay,
        timers=TimerConfig(t1=cfg.sip_t1),
        invite_rate=cfg.invite_rate,
        invite_burst=cfg.invite_burst,
        overload_delay=cfg.overload_delay,
        overload_records=cfg.overload_records,
        drop_user_agents=(
            SCANNER_USER_AGENTS if cfg.drop_user_agents is None else tuple(cfg.drop_user_agents)
        ),
        recordings=cfg.recordings,
        record_trunks=tuple(cfg.record_trunks),
        recording_announcement=_announcement(cfg.recording_announcement),
    )
    if cfg.recordings is not None:
        Path(cfg.recordings).mkdir(parents=True, exist_ok=True)
    if store is None and cfg.db:
        from .store import CallStore

        store = CallStore.open(cfg.db)
        interrupted = store.mark_interrupted(time.time())
        if interrupted:
            log.warning("%d calls were interrupted by the last stop; marked as such", interrupted)
    named = _named_routes(cfg, trunks, dispatch, routes)
    default_agent = _build_agent(cfg, routes, store)
    named_agents = {name: _build_agent(cfg, r, store) for name, r in named.items()}

    def routes_for(call: Call) -> Routes | None:
        return named.get(call.agent_name or "", routes)

    async def agent(call: Call) -> None:
        # An agent per campaign, LiveKit's way: the dispatch rule names the agent.
        factory = named_agents.get(call.agent_name or "") or default_agent
        if factory is not None:
            await factory(call)

    async def on_shutdown(call: Call) -> None:
        chosen = routes_for(call)
        if chosen is not None:
            await shutdown_handback(call, chosen)

    result_names = tuple(
        dict.fromkeys(
            name
            for r in ([routes] if routes else []) + list(named.values())
            for name in r.result_attributes.names()
        )
    )
    edge = SipEdge(
        edge_cfg,
        trunks,
        dispatch,
        store=store,
        agent=agent if default_agent is not None or named_agents else None,
        on_shutdown_route=on_shutdown,
        result_attributes=result_names,
    )
    edge.transports.tls_context = tls_context(cfg.tls_cert, cfg.tls_key)
    cfg.http_address  # noqa: B018 - a bad --http stops start-up before any socket opens
    if cfg.webhooks and not cfg.webhook_secret:
        raise ConfigError("webhooks need webhook_secret (BYELINE_WEBHOOK_SECRET) to sign requests")
    return App(edge=edge, store=store, routes=routes, cfg=cfg)
