"""The voice routing agent: a LiveKit Agents ``Agent`` per call, run on the call's RTP.

:class:`VoiceAgentRunner` is what the SIP edge calls for every answered call (``agent=`` of
``SipEdge``, like :class:`~byeline.agent.menu.DtmfMenuAgent`).  For each call it waits for media,
builds an ``AgentSession`` whose audio is the call's RTP (:mod:`byeline.agent.session_io`; no
LiveKit room), and starts a :class:`RoutingAgent`:

- greets (the routes' greeting; ``{campaign}`` and ``{caller}`` filled from the call's
  attributes, or "You have reached <campaign>." in front when the campaign is known);
- listens: speech goes VAD → STT → the LLM (the offline :class:`IntentLLM` by default), which
  reprompts or calls the :data:`handback_tool`; keys route at once, as in the DTMF menu;
- no input for ``no_input_timeout`` seconds after the agent stopped speaking, or a key that
  chooses nothing, is an attempt too: a note in the conversation, and the LLM answers it;
- after ``max_attempts`` the LLM takes the fallback route; the agent enforces it besides (one
  more attempt and it hands back itself), so a real LLM that forgets cannot keep a caller;
- the handback order: result attributes → goodbye played to its last packet → BYE.  A caller
  who hangs up during the goodbye ends the playout; the handback then returns ``not_sent``.

Both sides' words, with times, are kept on the runner (``VoiceAgentRunner.transcripts``) and
emitted as the call event ``"transcript"`` (one ``{"role", "text", "at"}`` dict per line).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, TypedDict, TypeVar

from livekit import rtc
from livekit.agents import llm as lk_llm
from livekit.agents import stt as lk_stt
from livekit.agents import tts as lk_tts
from livekit.agents import vad as lk_vad
from livekit.agents.voice import Agent, AgentSession
from livekit.agents.voice.events import (
    AgentStateChangedEvent,
    CloseEvent,
    ConversationItemAddedEvent,
    EventTypes,
    UserStateChangedEvent,
)
from livekit.plugins import silero

from ..edge.call import Call, EndedBy
from ..net.rtp import RtpEndpoint
from .handback import HANDBACK_TOOL_NAME, HandbackContext, handback_tool, load_prompt
from .intent_llm import IntentLLM, no_input_note, no_match_note
from .routes import InputMode, Route, Routes
from .session_io import CALL_SAMPLE_RATE, CallAudioInput, CallAudioOutput
from .speech.espeak_tts import EspeakTTS
from .speech.pocketsphinx_stt import PocketsphinxSessionSTT, PocketsphinxSTT

__all__ = [
    "RoutingAgent",
    "TranscriptLine",
    "VoiceAgentRunner",
    "caller_number",
    "campaign_name",
    "greeting_text",
    "routing_instructions",
]

log = logging.getLogger("byeline.agent")

_CAMPAIGN_KEYS = ("five9.campaign", "sip.h.x-callcampaign", "sip.h.x-five9campaign")
_CALLER_KEYS = ("five9.ani", "sip.h.x-callani", "sip.h.x-five9ani", "sip.phoneNumber")


class TranscriptLine(TypedDict):
    """One line of a call's transcript."""

    role: str  # "user", "assistant", or "event" (keys, no input, decisions)
    text: str
    at: float  # UNIX time


def _first(attributes: Mapping[str, str], keys: tuple[str, ...]) -> str | None:
    return next((attributes[k] for k in keys if attributes.get(k)), None)


def campaign_name(attributes: Mapping[str, str]) -> str | None:
    """The Five9 campaign, from the mapped attribute or the raw ``X-`` header."""
    return _first(attributes, _CAMPAIGN_KEYS)


def caller_number(attributes: Mapping[str, str]) -> str | None:
    """The caller's number (ANI), from Five9's variables or the SIP From."""
    return _first(attributes, _CALLER_KEYS)


class _Blank(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


def greeting_text(routes: Routes, attributes: Mapping[str, str]) -> str:
    """The greeting for this call.

    ``{campaign}`` and ``{caller}`` in the routes' greeting are filled from the attributes
    (blank when unknown); a greeting without them gets "You have reached <campaign>." in front
    when the campaign is known.
    """
    text = routes.greeting.text
    campaign = campaign_name(attributes)
    if "{" in text:
        try:
            return " ".join(
                text.format_map(
                    _Blank(campaign=campaign or "", caller=caller_number(attributes) or "")
                ).split()
            )
        except (ValueError, IndexError, KeyError):
            return text  # braces that are not placeholders: say it as written
    return f"You have reached {campaign}. {text}" if campaign else text


def routing_instructions(routes: Routes, attributes: Mapping[str, str]) -> str:
    """Instructions for a real LLM doing the intent engine's job (ignored by the engine)."""
    lines = [
        "You answer phone calls transferred from a Five9 IVR. Find out what the caller wants "
        f"and call the `{HANDBACK_TOOL_NAME}` tool with the matching route. Keep every reply "
        "to one or two short sentences; you speak on a phone line.",
        "Routes:",
    ]
    for route in routes.routes:
        about = ", ".join(route.phrases) or route.reason or route.name
        key = f" (key {route.dtmf})" if route.dtmf else ""
        lines.append(f"- {route.name}{key}: {about}")
    lines.append(
        f"If the caller's need is unclear, ask again. After {routes.max_attempts} attempts "
        f"without a clear answer (a system note '[byeline] ...' counts as one), call "
        f"`{HANDBACK_TOOL_NAME}` with route {routes.fallback.name!r}."
    )
    campaign = campaign_name(attributes)
    caller = caller_number(attributes)
    if campaign:
        lines.append(f"Campaign: {campaign}.")
    if caller:
        lines.append(f"Caller number: {caller}.")
    return "\n".join(lines)


async def _prompt_frames(pcm: bytes) -> AsyncIterator[rtc.AudioFrame]:
    step = 2 * CALL_SAMPLE_RATE // 10  # 100 ms
    for i in range(0, len(pcm), step):
        chunk = pcm[i : i + step]
        yield rtc.AudioFrame(chunk, CALL_SAMPLE_RATE, 1, len(chunk) // 2)


class RoutingAgent(Agent):
    """Greet, listen to speech and keys, reprompt, and hand the call back on a route."""

    def __init__(
        self,
        state: HandbackContext,
        *,
        no_input_timeout: float | None = None,
        instructions: str | None = None,
        on_transcript: Callable[[TranscriptLine], None] | None = None,
    ) -> None:
        routes = state.routes
        super().__init__(
            instructions=instructions or routing_instructions(routes, state.call.attributes),
            tools=[handback_tool],
        )
        self.state = state
        self.routes = routes
        self.no_input_timeout = (
            no_input_timeout if no_input_timeout is not None else routes.no_input_timeout
        )
        self._on_transcript = on_transcript
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._session_listeners: list[tuple[EventTypes, Callable[..., Any]]] = []
        self._call_listeners: list[tuple[str, Callable[..., Any]]] = []
        self.greeting = greeting_text(routes, state.call.attributes)
        state.on_decision = lambda d: self._transcript("event", f"route {d.route.name}")

    # -- lifecycle --------------------------------------------------------------------------------

    async def on_enter(self) -> None:
        """Wire the call's and the session's events; greet."""
        call = self.state.call
        session_events: list[tuple[EventTypes, Callable[..., Any]]] = [
            ("conversation_item_added", self._on_item),
            ("agent_state_changed", self._on_agent_state),
            ("user_state_changed", self._on_user_state),
        ]
        for event, callback in session_events:
            self.session.on(event, callback)
            self._session_listeners.append((event, callback))
        call_events: list[tuple[str, Callable[..., Any]]] = [
            ("dtmf", lambda digit: self._spawn(self.on_key(digit))),
            ("media_timeout", lambda: self._spawn(self.on_media_timeout())),
            ("ended", lambda _result: self._cancel_timer()),
        ]
        for name, fn in call_events:
            call.on(name, fn)
            self._call_listeners.append((name, fn))
        # Keys pressed while the session was starting were kept by the Call and reached the
        # dtmf listener above as it was registered, in order.
        audio: AsyncIterator[rtc.AudioFrame] | None = None
        prompt = self.routes.greeting.prompt
        if prompt is not None:
            try:
                audio = _prompt_frames(load_prompt(prompt))
            except (OSError, ValueError) as exc:
                log.warning("%s: greeting prompt not played: %s", call.call_id, exc)
        if audio is not None:
            self.session.say(self.greeting, audio=audio)
        else:
            self.session.say(self.greeting)

    async def on_exit(self) -> None:
        """Unwire everything."""
        self.close()

    def close(self) -> None:
        """Stop timers and listeners (idempotent)."""
        self._cancel_timer()
        if self._session_listeners:
            session = self.session
            for event, callback in self._session_listeners:
                session.off(event, callback)
        self._session_listeners.clear()
        for name, fn in self._call_listeners:
            self.state.call.off(name, fn)
        self._call_listeners.clear()

    # -- inputs -----------------------------------------------------------------------------------

    async def on_key(self, digit: str) -> None:
        """A key routes at once; an unknown key is an attempt answered by the LLM."""
        state = self.state
        if state.decision is not None or state.call.ended:
            return
        self._cancel_timer()
        state.attempts += 1
        state.input_mode = InputMode.DTMF
        self._transcript("event", f"key {digit}")
        route = self.routes.by_dtmf(digit)
        if route is not None:
            await self.hand_back_now(route, intent=route.name, confidence=1.0)
            return
        if self._over_budget():
            await self.hand_back_now(self.routes.fallback, intent="no_match")
            return
        await self._note(no_match_note(f"key {digit} chooses no route"))

    async def on_media_timeout(self) -> None:
        """No RTP from the caller any more: the fallback route, no goodbye."""
        await self.hand_back_now(
            self.routes.fallback,
            intent="media_timeout",
            input_mode=InputMode.NONE,
            ended_by=EndedBy.TIMEOUT,
            say_goodbye=False,
        )

    async def on_no_input(self) -> None:
        """The caller said nothing for ``no_input_timeout`` seconds."""
        state = self.state
        if state.decision is not None or state.call.ended:
            return
        state.attempts += 1
        self._transcript("event", "no input")
        if self._over_budget():
            await self.hand_back_now(self.routes.fallback, intent="no_input")
            return
        await self._note(no_input_note(self.no_input_timeout))

    async def hand_back_now(
        self,
        route: Route,
        *,
        intent: str,
        confidence: float | None = None,
        input_mode: InputMode | None = None,
        ended_by: EndedBy = EndedBy.AGENT,
        say_goodbye: bool = True,
    ) -> None:
        """Decide without the LLM (keys, timeouts): attributes → goodbye → BYE."""
        state = self.state
        decision = state.decide(route, intent=intent, confidence=confidence, input_mode=input_mode)
        if decision is None:
            return
        self._cancel_timer()
        self.session.input.set_audio_enabled(False)  # no further turns: the route is chosen
        try:
            await self.session.interrupt(force=True)
            if say_goodbye and route.goodbye and route.prompt is None and not state.call.ended:
                await self.session.say(route.goodbye, allow_interruptions=False)
        except Exception as exc:  # a failing goodbye must not cost the routing result
            log.warning("%s: goodbye not said: %s", state.call.call_id, exc)
        await state.hand_back(ended_by=ended_by, play_goodbye=say_goodbye)

    # -- session events ---------------------------------------------------------------------------

    def _on_item(self, ev: ConversationItemAddedEvent) -> None:
        item = ev.item
        if item.type != "message" or item.role not in ("user", "assistant"):
            return
        text = item.text_content or ""
        if not text:
            return
        self._transcript(item.role, text, item.created_at)
        if item.role != "user":
            return
        state = self.state
        self._cancel_timer()
        if state.decision is not None:
            return
        state.attempts += 1
        state.input_mode = InputMode.SPEECH
        state.heard.append(text)
        if self._over_budget():
            # The LLM had its max_attempts; it did not hand back.
            self._spawn(self.hand_back_now(self.routes.fallback, intent="no_match"))

    def _on_agent_state(self, ev: AgentStateChangedEvent) -> None:
        if ev.new_state == "listening" and self.session.user_state != "speaking":
            self._arm_timer()
        else:
            self._cancel_timer()

    def _on_user_state(self, ev: UserStateChangedEvent) -> None:
        if ev.new_state == "speaking":
            self._cancel_timer()

    # -- inside -----------------------------------------------------------------------------------

    def _over_budget(self) -> bool:
        return self.state.attempts > self.routes.max_attempts

    async def _note(self, note: str) -> None:
        """Add an attempt without words to the conversation and let the LLM answer it."""
        ctx = self.chat_ctx.copy()
        ctx.add_message(role="system", content=[note])
        await self.update_chat_ctx(ctx)
        await self.session.interrupt()
        self.session.generate_reply()

    def _arm_timer(self) -> None:
        self._cancel_timer()
        if self.state.decision is not None or self.state.call.ended:
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(
            self.no_input_timeout, lambda: self._spawn(self.on_no_input())
        )

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: agent step failed", self.state.call.call_id, exc_info=task.exception())

    def _transcript(self, role: str, text: str, at: float | None = None) -> None:
        if self._on_transcript is not None:
            self._on_transcript(TranscriptLine(role=role, text=text, at=at or time.time()))


_P = TypeVar("_P", lk_stt.STT[Any], lk_llm.LLM[Any], lk_tts.TTS[Any])


def _per_session(provider: _P) -> _P:
    """``provider`` for one session: a shallow copy with an event emitter of its own, for the
    providers byeline builds (see :meth:`VoiceAgentRunner.session_providers`); any other
    provider as it is."""
    if not _copied_per_session(provider):
        return provider
    clone = copy.copy(provider)
    rtc.EventEmitter.__init__(clone)  # no listener of the shared object or of other sessions
    return clone


def _copied_per_session(provider: object) -> bool:
    # Their state is options, clients, caches and worker handles, right to share by reference;
    # their constructors register no listener on themselves. A provider of unknown make might
    # (LiveKit's adapters do), and its copy would then forward its events to the original.
    return isinstance(provider, (IntentLLM, EspeakTTS, PocketsphinxSTT)) or type(
        provider
    ).__module__.startswith("livekit.plugins.openai.")


class VoiceAgentRunner:
    """Run a :class:`RoutingAgent` in an ``AgentSession`` on every call (``SipEdge(agent=...)``).

    ``stt``, ``tts`` and ``vad`` are LiveKit Agents providers (offline ones on the embedded
    edge); ``llm`` defaults to the offline :class:`IntentLLM` of the routes, and any
    ``llm.LLM`` (an OpenAI-compatible one) can replace it.  ``session_options`` go to
    ``AgentSession`` as they are (turn handling, endpointing...). Without a ``turn_handling``
    of their own, the VAD ends the caller's turn (``turn_detection="vad"``), as on the embedded
    edge: LiveKit's default end-of-turn model would otherwise run where it can (its local
    fallback) and, when it doubts a short sentence is finished, hold the turn open for its
    longest endpointing delay (about 1.8 s more per turn in a test), or not at all on a slower
    core, where its prediction times out.

    A :class:`~.speech.PocketsphinxSTT` with a VAD is streamed (``stream_stt``, default True):
    each session gets :meth:`~.speech.PocketsphinxSTT.for_session`, which decodes while the
    caller speaks, opened by the session's VAD; else LiveKit wraps the STT in a
    ``StreamAdapter`` (a second VAD, and decoding after the end of the turn).
    """

    def __init__(
        self,
        routes: Routes,
        *,
        stt: lk_stt.STT[Any],
        tts: lk_tts.TTS[Any],
        vad: lk_vad.VAD | None,
        llm: lk_llm.LLM[Any] | None = None,
        no_input_timeout: float | None = None,
        input_sample_rate: int = 16000,
        media_wait: float = 10.0,
        session_options: Mapping[str, Any] | None = None,
        keep_transcripts: int = 256,
        stream_stt: bool = True,
    ) -> None:
        self.routes = routes
        self.stt = stt
        self.tts = tts
        self.vad = vad
        self.llm = llm if llm is not None else IntentLLM(routes)
        self.no_input_timeout = no_input_timeout
        self.input_sample_rate = input_sample_rate
        self.media_wait = media_wait
        self.session_options = dict(session_options or {})
        self.keep_transcripts = keep_transcripts
        self.stream_stt = stream_stt
        if isinstance(tts, EspeakTTS):
            # The goodbyes are said the moment a route is chosen: have them ready.
            goodbyes = [r.goodbye for r in (*routes.routes, routes.fallback) if r.goodbye]
            tts.prerender(goodbyes)
        self.transcripts: OrderedDict[str, list[TranscriptLine]] = OrderedDict()
        """Per call id, the transcript of the last ``keep_transcripts`` calls."""
        self.contexts: dict[str, HandbackContext] = {}
        """The handback state of the calls running now."""

    def session_providers(
        self,
    ) -> tuple[lk_stt.STT[Any], lk_llm.LLM[Any], lk_tts.TTS[Any]]:
        """The STT, LLM and TTS of one call's session, each with listeners of its own.

        An ``AgentSession`` subscribes to the ``error`` and ``metrics_collected`` events of its
        providers. On one object shared by every call, an unrecoverable error of one call's
        LLM, STT or TTS request would reach every live session, and each would count it against
        its own budget (``max_unrecoverable_errors``) and close: one call's failing request
        would end the agent of every call. Each call's metrics would reach every session too.
        So the providers byeline builds (the intent engine, espeak-ng, pocketsphinx, LiveKit's
        OpenAI plugin) are copied for each session: a shallow copy, whose options, HTTP client,
        decoder workers and caches are the shared object's, with an event emitter of its own.
        Any other provider is shared as given. A pocketsphinx STT that is streamed (see the
        class) gives each session its own :meth:`~.speech.PocketsphinxSTT.for_session`; the VAD
        is :meth:`session_vad`'s.
        """
        stt = self.stt
        if isinstance(stt, PocketsphinxSTT) and self.vad is not None and self.stream_stt:
            # Decoded while the caller speaks: the session's VAD opens each utterance and
            # LiveKit flushes it at the VAD's end of speech (manual_flush).
            session_stt: lk_stt.STT[Any] = stt.for_session()
        else:
            session_stt = _per_session(stt)
        return session_stt, _per_session(self.llm), _per_session(self.tts)

    def session_vad(self) -> lk_vad.VAD | None:
        """The VAD of one call's session.

        An ``AgentSession`` subscribes to its VAD's metrics events, forwards each to its own
        listeners and keeps it for the session's report until the session ends. One VAD object
        shared by every call would send each call's events (one a second while a caller is
        heard) to every live session: N² of them, kept. So a silero VAD is wrapped anew for each
        call around the same ONNX session and options: the model is loaded once, and each
        session hears only its own call. Any other VAD is shared as given.
        """
        vad = self.vad
        if isinstance(vad, silero.VAD):
            return silero.VAD(session=vad._onnx_session, opts=vad._opts)
        return vad

    async def __call__(self, call: Call) -> None:
        """Run the agent on ``call`` until it is handed back or the caller hangs up."""
        media = await self._wait_media(call)
        state = HandbackContext(call=call, routes=self.routes)
        if media is None:
            if not call.ended:  # answered, but no media to talk on: back to Five9 at once
                state.decide(self.routes.fallback, intent="no_media", input_mode=InputMode.NONE)
                await state.hand_back(ended_by=EndedBy.ERROR, play_goodbye=False)
            return
        lines = self.transcripts[call.call_id] = []
        while len(self.transcripts) > self.keep_transcripts:
            self.transcripts.popitem(last=False)

        def on_transcript(line: TranscriptLine) -> None:
            lines.append(line)
            call.emit("transcript", line)

        options: dict[str, Any] = {
            "user_away_timeout": None,  # the agent's own no-input timer does this job
            "aec_warmup_duration": None,  # no echo canceller to warm up on a G.711 leg
        }
        if self.vad is not None:
            options["turn_handling"] = {"turn_detection": "vad"}
        options.update(self.session_options)
        stt, llm, tts = self.session_providers()
        session: AgentSession[HandbackContext] = AgentSession(
            stt=stt, vad=self.session_vad(), llm=llm, tts=tts, userdata=state, **options
        )
        if isinstance(stt, PocketsphinxSessionSTT):
            opened = stt  # the session's VAD opens each utterance

            def on_user_state(ev: UserStateChangedEvent) -> None:
                if ev.new_state == "speaking":
                    opened.speech_started()

            session.on("user_state_changed", on_user_state)
        audio_in = CallAudioInput(media, sample_rate=self.input_sample_rate)
        audio_out = CallAudioOutput(media)
        session.input.audio = audio_in
        session.output.audio = audio_out
        agent = RoutingAgent(
            state,
            no_input_timeout=self.no_input_timeout,
            on_transcript=on_transcript,
        )
        closed = asyncio.get_running_loop().create_future()

        def on_close(ev: CloseEvent) -> None:
            if not closed.done():
                closed.set_result(ev)

        session.on("close", on_close)
        self.contexts[call.call_id] = state
        try:
            await session.start(agent, record=False)
            ended = asyncio.ensure_future(call.wait_ended())
            await asyncio.wait({ended, closed}, return_when=asyncio.FIRST_COMPLETED)
            ended.cancel()
            ended_by = EndedBy.AGENT
            if not call.ended and state.decision is None:
                # The session closed under the call (an error): the call still goes back.
                log.warning("%s: agent session closed early; fallback route", call.call_id)
                state.decide(self.routes.fallback, intent="agent_error")
                ended_by = EndedBy.ERROR
            if state.decision is not None:
                # Started already by the goodbye's end, or now: the caller hung up during
                # the goodbye, or the session ended first. Returns; never raises.
                state.hand_back(ended_by=ended_by)
                await state.wait_handed_back()
        finally:
            self.contexts.pop(call.call_id, None)
            agent.close()
            await session.aclose()
            await audio_out.aclose()
            await audio_in.aclose()

    async def _wait_media(self, call: Call) -> RtpEndpoint | None:
        if call.media is not None:
            return call.media
        ready = asyncio.get_running_loop().create_future()

        def on_event(*_args: Any) -> None:
            if not ready.done():
                ready.set_result(None)

        call.on("media_ready", on_event)
        call.on("ended", on_event)
        try:
            await asyncio.wait_for(ready, self.media_wait)
        except TimeoutError:
            log.warning("%s: no media after %.0f s", call.call_id, self.media_wait)
        finally:
            call.off("media_ready", on_event)
            call.off("ended", on_event)
        return None if call.ended else call.media
