"""The handback step: routing result onto the call, goodbye, BYE.

The order is the whole point (DESIGN.md, LiveKit issue #404):

1. the result attributes are set on the call;
2. the goodbye is played, and we wait until it has left on the wire;
3. ``hangup()`` builds the BYE from the attributes as they are now.

Step 1 always happens before step 3, even when step 2 fails or the caller
hangs up during it.  A handback after the caller hung up does not raise: the
result says ``not_sent`` and the record keeps the routing result.

For LLM agents the same step is a LiveKit Agents function tool, :data:`handback_tool`: it takes
the decision (step 1 at once), makes the turn's reply the goodbye, and runs :func:`handback` when
that turn has played out.  Its state is the session's userdata, a :class:`HandbackContext`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import wave
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from livekit.agents.llm import ToolError, function_tool
from livekit.agents.voice import RunContext

from ..edge.call import Call, CallResult, Delivery, EndedBy
from .routes import MAX_METADATA_BYTES, InputMode, Route, RouteDecision, Routes, _bounded_json

log = logging.getLogger("byeline.agent")

#: The call attribute that says when the agent took its decision: wall-clock seconds since the
#: epoch with microseconds, as a string (``time.time()``). Set once, with the result attributes,
#: so the call record keeps it; the trunk maps only the names it lists to BYE headers, so it
#: does not reach Five9. Against the BYE's row in the SIP trace it gives decision→BYE.
ROUTE_DECIDED_AT = "byeline.route_decided_at"


def _set_decision(call: Call, decision: RouteDecision, routes: Routes) -> None:
    """Step 1: the result attributes, and the decision time unless an earlier step set it."""
    current = call.attributes
    changes = decision.attributes(routes, current)
    if not current.get(ROUTE_DECIDED_AT):
        changes[ROUTE_DECIDED_AT] = f"{time.time():.6f}"
    call.update_attributes(changes)
    if ROUTE_DECIDED_AT in changes:
        # In-process listeners (tests, metrics) get the moment as a call event too.
        call.emit("route_decided", decision.route.name, float(changes[ROUTE_DECIDED_AT]))


async def handback(
    call: Call,
    decision: RouteDecision,
    routes: Routes,
    *,
    ended_by: EndedBy = EndedBy.AGENT,
    play_goodbye: bool = True,
) -> CallResult:
    """Hand the call back to Five9 with ``decision`` on the BYE."""
    # 1. Attributes first, always: even a call that is already over keeps its result.
    _set_decision(call, decision, routes)
    if call.ended:
        assert call.result is not None
        log.info("%s: handback after the caller hung up: result kept, not delivered", call.call_id)
        return call.result
    # 2. The goodbye, played to the end (barge-in is not honoured here: the route is decided).
    prompt = decision.route.prompt
    if play_goodbye and prompt is not None and call.media is not None:
        try:
            await call.media.play(load_prompt(prompt))
        except Exception as exc:  # a broken prompt must not cost the routing data
            log.warning("%s: goodbye prompt not played: %s", call.call_id, exc)
    # 3. The BYE, built from the attributes as they are now.
    result = await call.hangup(ended_by=ended_by)
    if result.delivery is not Delivery.DELIVERED:
        log.warning("%s: routing result %s", call.call_id, result.delivery.value)
    return result


def load_prompt(path: Path) -> bytes:
    """A prompt WAV as 8 kHz mono 16-bit PCM (the call's native audio)."""
    with wave.open(str(path), "rb") as wav:
        if wav.getnchannels() != 1 or wav.getsampwidth() != 2 or wav.getframerate() != 8000:
            raise ValueError(
                f"{path}: prompts must be 8 kHz mono 16-bit PCM WAV (got "
                f"{wav.getframerate()} Hz, {wav.getnchannels()} channel(s), "
                f"{8 * wav.getsampwidth()}-bit)"
            )
        return wav.readframes(wav.getnframes())


# --------------------------------------------------------------------------------------------
# The handback as a LiveKit Agents function tool
# --------------------------------------------------------------------------------------------

#: The tool's name, as an LLM calls it.
HANDBACK_TOOL_NAME = "handback"
#: Most characters of the caller's words kept in the metadata summary.
SUMMARY_CHARS = 240


@dataclass(frozen=True)
class SummarizedRouteDecision(RouteDecision):
    """A :class:`RouteDecision` whose metadata also carries a short summary of the caller's words.

    The summary never pushes the metadata past the header limit: it is cut to fit first.
    """

    summary: str | None = None

    def metadata(self, call_attributes: Mapping[str, str]) -> str:
        """The metadata JSON of :meth:`RouteDecision.metadata` plus ``summary``.

        The summary gets the room the other fields leave; it loses its oldest words first.
        """
        text = super().metadata(call_attributes)
        if not self.summary:
            return text
        room = MAX_METADATA_BYTES - len(text) - len(',"summary":""')
        summary = self.summary
        while summary and len(json.dumps(summary, ensure_ascii=True)) - 2 > room:
            summary = summary[max(1, len(summary) // 10) :]
        if not summary:
            return text
        doc = json.loads(text)
        doc["summary"] = summary
        return _bounded_json(doc, MAX_METADATA_BYTES)


@dataclass
class HandbackContext:
    """What a handback needs to know about the call: the ``AgentSession``'s userdata.

    It counts the caller's attempts, remembers what the caller said and how (speech or keys),
    and makes sure one decision only is taken per call: the first one wins.
    """

    call: Call
    routes: Routes
    attempts: int = 0
    input_mode: InputMode = InputMode.NONE
    heard: list[str] = field(default_factory=list)
    decision: RouteDecision | None = None
    result: CallResult | None = None
    on_decision: Callable[[RouteDecision], None] | None = None
    """Called once with the decision, right after the attributes were set."""
    _task: asyncio.Task[CallResult] | None = None

    def summary(self) -> str | None:
        """The caller's words, latest last, cut from the front to ``SUMMARY_CHARS``."""
        text = " / ".join(h.strip() for h in self.heard if h.strip())
        if len(text) > SUMMARY_CHARS:
            text = "..." + text[-(SUMMARY_CHARS - 3) :]
        return text or None

    def decide(
        self,
        route: Route,
        *,
        intent: str | None = None,
        confidence: float | None = None,
        input_mode: InputMode | None = None,
    ) -> RouteDecision | None:
        """Take the decision and set the result attributes on the call (step 1, at once).

        Returns ``None`` when a decision was already taken: the first one stands.
        """
        if self.decision is not None:
            return None
        self.decision = SummarizedRouteDecision(
            route=route,
            input_mode=input_mode if input_mode is not None else self.input_mode,
            attempts=self.attempts,
            intent=intent or route.name,
            confidence=confidence,
            summary=self.summary(),
        )
        _set_decision(self.call, self.decision, self.routes)
        log.info(
            "%s: route %s (%s, attempt %d)",
            self.call.call_id,
            route.name,
            self.decision.input_mode,
            self.attempts,
        )
        if self.on_decision is not None:
            self.on_decision(self.decision)
        return self.decision

    def hand_back(
        self, *, ended_by: EndedBy = EndedBy.AGENT, play_goodbye: bool = True
    ) -> asyncio.Task[CallResult]:
        """Run :func:`handback` once for the decision taken (steps 1 again, 2 and 3)."""
        if self.decision is None:
            raise RuntimeError("hand_back() before decide()")
        if self._task is None:
            self._task = asyncio.ensure_future(
                handback(
                    self.call,
                    self.decision,
                    self.routes,
                    ended_by=ended_by,
                    play_goodbye=play_goodbye,
                )
            )
            self._task.add_done_callback(self._done)
        return self._task

    def _done(self, task: asyncio.Task[CallResult]) -> None:
        if not task.cancelled() and task.exception() is None:
            self.result = task.result()

    async def wait_handed_back(self) -> CallResult | None:
        """The handback's result once it ran; ``None`` if none was started."""
        if self._task is None:
            return None
        try:
            return await asyncio.shield(self._task)
        except Exception:
            log.exception("%s: handback failed", self.call.call_id)
            return None


def _start(state: HandbackContext) -> None:
    state.hand_back()


def goodbye_instruction(route: Route) -> str:
    """The tool output: what the LLM says as the last turn (JSON, for any LLM to read)."""
    say = "" if route.prompt is not None else (route.goodbye or "")
    return json.dumps(
        {
            "handed_back_to": route.name,
            "say_exactly": say,
            "note": "Say say_exactly to the caller, word for word, and nothing else; "
            "the call ends after it. If it is empty, say nothing.",
        }
    )


@function_tool(name=HANDBACK_TOOL_NAME)
async def handback_tool(
    context: RunContext[HandbackContext],
    route: str,
    intent: str | None = None,
    confidence: float | None = None,
) -> str:
    """Send the call back to the Five9 IVR on a route, once the caller's need is clear.

    Call it once, when the caller has said what they want, or with the fallback route when
    they could not say it after the allowed attempts. After it, only say the goodbye it returns.

    Args:
        route: The route's name, exactly as listed in the instructions.
        intent: A short label for what the caller wants (e.g. "billing").
        confidence: How sure you are, from 0 to 1.
    """
    state = context.userdata
    chosen = state.routes.by_name(route)
    if chosen is None:
        names = ", ".join(r.name for r in (*state.routes.routes, state.routes.fallback))
        raise ToolError(f"no route named {route!r}; the routes are: {names}")
    decision = state.decide(chosen, intent=intent, confidence=confidence)
    if decision is None:
        # Another input (a key, a timeout) decided first; the call is already going back.
        return json.dumps(
            {"handed_back_to": state.decision and state.decision.route.name, "say_exactly": ""}
        )
    # The goodbye is this turn's reply; nobody may cut it (barge-in) once the route is chosen.
    context.disallow_interruptions()
    # Step 3 only once this whole turn, goodbye included, has left on the wire: the speech
    # handle is done when the audio output reported its playback finished.
    context.speech_handle.add_done_callback(lambda _handle: _start(state))
    return goodbye_instruction(chosen)
