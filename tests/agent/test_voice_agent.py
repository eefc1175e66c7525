"""The voice routing agent: intent engine, agent logic at text level, and calls over SIP.

Text-level tests run a real ``AgentSession`` with the offline intent engine and no audio.  The
call there is a real ``Call`` whose controller is a real (unstarted) ``SipEdge``: it has no SIP
leg, so its handback ends ``not_sent``, which is what these tests may observe of the BYE.  The
SIP tests place calls with the Five9 simulator against an in-process edge running
``VoiceAgentRunner`` and read what Five9 receives.

``ScriptedSTT`` and ``ToneTTS`` below are fakes of speech PROVIDERS (LiveKit Agents ships none):
no offline STT that fits the test's time budget recognises the simulator's voice reliably, and a
tone makes the agent's speech measurable.  Everything of byeline's runs for real.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from livekit.agents import APIConnectionError, LanguageCode, stt, tts
from livekit.agents import llm as lk_llm
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions, NotGivenOr
from livekit.agents.utils import AudioBuffer, shortuuid
from livekit.agents.voice import AgentSession
from livekit.agents.voice.run_result import RunResult

from byeline.agent.handback import HANDBACK_TOOL_NAME, HandbackContext, SummarizedRouteDecision
from byeline.agent.intent_llm import IntentLLM, no_input_note, normalise
from byeline.agent.routes import MAX_METADATA_BYTES, InputMode, Routes, load_routes
from byeline.agent.routing_agent import (
    RoutingAgent,
    TranscriptLine,
    VoiceAgentRunner,
    caller_number,
    greeting_text,
)
from byeline.edge.call import Call, Delivery, new_call_id
from byeline.edge.server import EdgeConfig, SipEdge
from byeline.edge.trunk import TrunkSet, load_trunk
from byeline.five9.simulator import CallPlan, HangUp, Press, Say, Wait, place_call
from byeline.five9.variables import default_call_variables
from byeline.net.sip_transport import ListenSpec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "src" / "byeline" / "examples"


@pytest.fixture
def routes() -> Routes:
    return load_routes(EXAMPLES / "routes.yaml")


# -- the intent engine, pure ---------------------------------------------------------------------


def test_normalise_drops_stop_words_and_punctuation() -> None:
    assert normalise("Hi, I'd like to PAY my bill, please!") == ["i'd", "pay", "bill"]
    assert normalise("Café — billing?") == ["cafe", "billing"]


@pytest.mark.parametrize(
    ("said", "route"),
    [
        ("I have a question about my bill", "billing"),
        ("billing please", "billing"),
        ("I want to pay my bills", "billing"),  # prefix match: bills ~ bill
        ("what's your pricing for the upgrade", "sales"),
        ("can I talk to a human", "agent"),
        ("representitive", "agent"),  # fuzzy: a misrecognised word
    ],
)
def test_match_finds_the_route(routes: Routes, said: str, route: str) -> None:
    found = IntentLLM(routes).match(said)
    assert found.route is not None and found.route.name == route
    assert found.confidence >= 0.6


def test_off_topic_and_ambiguous_words_are_not_confident(routes: Routes) -> None:
    engine = IntentLLM(routes)
    assert engine.match("what's the weather like").confidence == 0
    assert engine.match("").route is None
    both = engine.match("billing or sales")
    assert both.confidence < 0.6  # two routes equally likely: ask again


# -- the agent at text level ---------------------------------------------------------------------


def _call(attributes: dict[str, str] | None = None) -> Call:
    edge = SipEdge(EdgeConfig(), TrunkSet([load_trunk(EXAMPLES / "five9-trunk.json")]))
    attrs = {
        "five9.call_id": "300000000042",
        "five9.campaign": "Acme Support",
        "five9.ani": "+15555550123",
        "sip.callStatus": "active",
    }
    return Call(
        call_id=new_call_id(),
        identity="sip_+15555550123",
        attributes=attributes if attributes is not None else attrs,
        controller=edge,
    )


class _TextSession:
    """A started text-only session with the routing agent on a call."""

    def __init__(self, routes: Routes, *, no_input_timeout: float = 30.0) -> None:
        self.call = _call()
        self.state = HandbackContext(call=self.call, routes=routes)
        self.lines: list[TranscriptLine] = []
        self.agent = RoutingAgent(
            self.state, no_input_timeout=no_input_timeout, on_transcript=self.lines.append
        )
        self.session: AgentSession[HandbackContext] = AgentSession(
            llm=IntentLLM(routes), vad=None, userdata=self.state, user_away_timeout=None
        )

    async def __aenter__(self) -> _TextSession:
        await self.session.start(self.agent)
        await _until(lambda: any(line["role"] == "assistant" for line in self.lines))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.aclose()


async def _until(condition: Any, timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


async def test_greeting_uses_the_call_attributes(routes: Routes) -> None:
    async with _TextSession(routes) as t:
        greeting = t.lines[0]
        assert greeting["role"] == "assistant"
        assert greeting["text"].startswith("You have reached Acme Support. Thanks for calling.")
    templated = replace(routes, greeting=replace(routes.greeting, text="Hi {caller}, {campaign}."))
    assert greeting_text(templated, {"sip.h.x-callani": "+1555", "five9.campaign": "X"}) == (
        "Hi +1555, X."
    )
    assert greeting_text(templated, {}) == "Hi , ."
    assert caller_number({"sip.phoneNumber": "+1666"}) == "+1666"


async def test_billing_phrase_hands_back_on_the_billing_route(routes: Routes) -> None:
    async with _TextSession(routes) as t:
        result: RunResult[None] = await t.session.run(user_input="I have a question about my bill")
        call = result.expect.next_event().is_function_call(name=HANDBACK_TOOL_NAME)
        assert json.loads(call.event().item.arguments)["route"] == "billing"
        result.expect.next_event().is_function_call_output()
        goodbye = result.expect.next_event().is_message(role="assistant")
        assert goodbye.event().item.text_content == "Connecting you to billing."
        # Step 1 (attributes) at the decision; step 3 (the BYE) once the goodbye turn is done.
        assert t.call.attributes["five9.route_value"] == "Billing"
        assert t.call.attributes["five9.route_type"] == "skill_transfer"
        handed = await asyncio.wait_for(_handed_back(t.state), 5)
        assert handed is not None and handed.delivery is Delivery.NOT_SENT  # no SIP leg here
    meta = json.loads(t.call.attributes["five9.metadata"])
    assert meta["route"] == "billing" and meta["input_mode"] == "speech"
    assert meta["attempts"] == 1 and meta["confidence"] >= 0.6
    assert meta["five9_call_id"] == "300000000042"
    assert meta["summary"] == "I have a question about my bill"
    assert [(line["role"], line["text"]) for line in t.lines][1:] == [
        ("user", "I have a question about my bill"),
        ("event", "route billing"),
        ("assistant", "Connecting you to billing."),
    ]


async def _handed_back(state: HandbackContext) -> Any:
    while state._task is None:
        await asyncio.sleep(0.01)
    return await state.wait_handed_back()


async def test_off_topic_reprompts_then_takes_the_fallback(routes: Routes) -> None:
    assert routes.max_attempts == 3
    async with _TextSession(routes) as t:
        for said in ("what's the weather like", "do you sell pizza"):
            result: RunResult[None] = await t.session.run(user_input=said)
            msg = result.expect.next_event().is_message(role="assistant")
            assert (msg.event().item.text_content or "").startswith("Sorry, I didn't get that.")
            result.expect.no_more_events()
            assert t.state.decision is None
        result = await t.session.run(user_input="blue is my favourite colour")
        call = result.expect.next_event().is_function_call(name=HANDBACK_TOOL_NAME)
        args = json.loads(call.event().item.arguments)
        assert args["route"] == "general" and args["intent"] == "no_match"
        result.expect.next_event().is_function_call_output()
        goodbye = result.expect.next_event().is_message(role="assistant")
        assert goodbye.event().item.text_content == (
            "Let me connect you with someone who can help."
        )
    meta = json.loads(t.call.attributes["five9.metadata"])
    assert meta["route"] == "general" and meta["attempts"] == 3
    assert meta["input_mode"] == "speech"
    assert t.call.attributes["five9.route_reason"] == "no route chosen"


async def test_a_key_routes_at_once(routes: Routes) -> None:
    async with _TextSession(routes) as t:
        t.call.emit("dtmf", "7")  # no route: an attempt, the engine reprompts
        await _until(lambda: sum(line["role"] == "assistant" for line in t.lines) >= 2)
        assert t.lines[-1]["text"].startswith("Sorry, I didn't get that.")
        t.call.emit("dtmf", "2")
        await asyncio.wait_for(_handed_back(t.state), 5)
    assert t.call.attributes["five9.route_value"] == "Sales"
    meta = json.loads(t.call.attributes["five9.metadata"])
    assert meta["input_mode"] == "dtmf" and meta["attempts"] == 2 and meta["confidence"] == 1.0
    assert [line["text"] for line in t.lines if line["role"] == "event"] == [
        "key 7",
        "key 2",
        "route sales",
    ]
    assert (t.lines[-1]["role"], t.lines[-1]["text"]) == ("assistant", "Connecting you to sales.")


async def test_no_input_reprompts_then_takes_the_fallback(routes: Routes) -> None:
    async with _TextSession(routes, no_input_timeout=0.2) as t:
        await asyncio.wait_for(_handed_back(t.state), 10)
    events = [line["text"] for line in t.lines if line["role"] == "event"]
    assert events == ["no input", "no input", "no input", "route general"]
    reprompts = [line["text"] for line in t.lines if line["role"] == "assistant"][1:3]
    assert all(r.startswith("Sorry, I didn't hear anything.") for r in reprompts)
    meta = json.loads(t.call.attributes["five9.metadata"])
    assert meta["route"] == "general" and meta["intent"] == "no_input"
    assert meta["input_mode"] == "none" and meta["attempts"] == 3


def test_engine_counts_notes_as_attempts(routes: Routes) -> None:
    from livekit.agents.llm import ChatContext

    ctx = ChatContext.empty()
    engine = IntentLLM(routes)
    ctx.add_message(role="system", content=[no_input_note(8)])
    assert engine.reply(ctx, {HANDBACK_TOOL_NAME}).text.startswith("Sorry, I didn't hear")
    ctx.add_message(role="assistant", content=["Sorry..."])
    ctx.add_message(role="user", content=["uh"])
    ctx.add_message(role="assistant", content=["Sorry..."])
    ctx.add_message(role="system", content=[no_input_note(8)])
    reply = engine.reply(ctx, {HANDBACK_TOOL_NAME})
    assert reply.route is routes.fallback and reply.intent == "no_input"
    # Without the tool (a reply inside a tool step), the engine only talks.
    assert engine.reply(ctx, set()).route is None


def test_metadata_summary_stays_under_the_header_limit(routes: Routes) -> None:
    call_attrs = {"five9.call_id": "3" * 12, "five9.session_id": "A" * 32}
    decision = SummarizedRouteDecision(
        route=routes.routes[0],
        input_mode=InputMode.SPEECH,
        attempts=2,
        intent="billing",
        confidence=0.9,
        summary="é" * 900,  # escapes make it six times longer in JSON
    )
    text = decision.metadata(call_attrs)
    assert len(text) <= MAX_METADATA_BYTES
    doc = json.loads(text)
    assert doc["route"] == "billing" and doc["five9_call_id"] == "3" * 12
    assert doc["summary"].startswith("é")


# -- calls over SIP ------------------------------------------------------------------------------


class ScriptedSTT(stt.STT[None]):
    """FAKE speech-to-text PROVIDER: each utterance the VAD cuts is "heard" as the next line
    of a script (empty once the script is over)."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self.lines = list(lines)

    async def _recognize_impl(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = "",
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> stt.SpeechEvent:
        text = self.lines.pop(0) if self.lines else ""
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            alternatives=[stt.SpeechData(text=text, language=LanguageCode("en"))],
        )


class ToneTTS(tts.TTS[None]):
    """FAKE text-to-speech PROVIDER: a 16 kHz tone, 40 ms per character of text."""

    def __init__(self) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False), sample_rate=16000, num_channels=1
        )

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        return _ToneStream(tts=self, input_text=text, conn_options=conn_options)


class _ToneStream(tts.ChunkedStream):
    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        import numpy as np

        n = int(16000 * 0.04 * max(1, len(self.input_text)))
        tone = (np.sin(2 * np.pi * 440 * np.arange(n) / 16000) * 8000).astype("<i2")
        output_emitter.initialize(
            request_id=shortuuid(), sample_rate=16000, num_channels=1, mime_type="audio/pcm"
        )
        output_emitter.push(tone.tobytes())
        output_emitter.flush()


def _second_talkspurt_ms(wav_path: Path) -> float:
    """Where the agent's second stretch of tone (after the greeting) starts, in ms."""
    import wave

    import numpy as np

    with wave.open(str(wav_path), "rb") as wav:
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").astype(np.int32)
    loud = [abs(frame).mean() > 1000 for frame in pcm[: len(pcm) // 160 * 160].reshape(-1, 160)]
    runs = [i for i in range(1, len(loud)) if loud[i] and not loud[i - 1]]
    quiet_enough = [i for i in runs if not any(loud[max(0, i - 10) : i])]  # after >= 200 ms quiet
    return 20.0 * quiet_enough[1]


@pytest.fixture(scope="module")
def silero() -> Any:
    from livekit.plugins import silero

    return silero.VAD.load()


class _Edge:
    def __init__(self, runner: VoiceAgentRunner, tmp_path: Path, rtp: tuple[int, int]) -> None:
        from byeline.store import CallStore

        self.runner = runner
        self.store = CallStore.open(f"sqlite:///{tmp_path / 'calls.db'}")
        self.edge = SipEdge(
            EdgeConfig(listen=[ListenSpec("UDP", "127.0.0.1", 0)], rtp_ports=rtp),
            TrunkSet([load_trunk(EXAMPLES / "five9-trunk.json")]),
            store=self.store,
            agent=runner,
            result_attributes=runner.routes.result_attributes.names(),
        )
        self.target = ""

    async def __aenter__(self) -> _Edge:
        bound = await self.edge.start()
        self.target = f"127.0.0.1:{bound[0].port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.edge.shutdown()
        await self.store.aflush()
        self.store.close()

    def plan(self, actions: list[Any], rtp: tuple[int, int]) -> CallPlan:
        cavs = default_call_variables(ani="+15555550123", dnis="+18005550100")
        return CallPlan(
            target=self.target, call_variables=cavs, timeout=30, rtp_ports=rtp, actions=actions
        )


@pytest.fixture
async def speech_edge(
    routes: Routes, tmp_path: Path, silero: Any
) -> AsyncIterator[tuple[_Edge, ScriptedSTT]]:
    heard = ScriptedSTT(["I'd like to pay my bill"])
    runner = VoiceAgentRunner(routes, stt=heard, tts=ToneTTS(), vad=silero, no_input_timeout=10)
    async with _Edge(runner, tmp_path, (34000, 34100)) as edge:
        yield edge, heard


async def test_spoken_request_reaches_five9_on_the_bye(
    speech_edge: tuple[_Edge, ScriptedSTT], tmp_path: Path
) -> None:
    edge, _ = speech_edge
    plan = edge.plan(
        [Wait(0.5), Say("I would like to pay my bill please"), Wait(20)], (34200, 34300)
    )
    plan.record = tmp_path / "heard.wav"
    outcome = await place_call(plan)
    assert outcome.hung_up_by == "agent", outcome.error
    assert outcome.from_iva.get("X-RouteValue") == "Billing"
    meta = json.loads(outcome.from_iva.get("X-MetaData") or "{}")
    assert meta["input_mode"] == "speech" and meta["intent"] == "billing"
    assert meta["summary"] == "I'd like to pay my bill"
    assert plan.call_variables["X-CallID"] == meta["five9_call_id"]
    # The goodbye (26 characters: 1.04 s of tone) played before the BYE.
    assert outcome.handback_ms is not None and outcome.handback_ms > 1000
    # End of the caller's speech → first packet of the goodbye, as the caller hears it.
    goodbye_ms = _second_talkspurt_ms(plan.record) + (outcome.answer_ms or 0)
    latency = goodbye_ms - (outcome.last_input_ms or 0)
    print(f"end of caller speech -> first goodbye audio: {latency:.0f} ms")
    assert latency < 2500  # (the scripted STT may answer a VAD segment before the last one)
    [lines] = edge.runner.transcripts.values()
    assert [line["role"] for line in lines if line["role"] != "event"] == [
        "assistant",
        "user",
        "assistant",
    ]


async def test_each_call_runs_its_own_vad_around_the_shared_model(
    speech_edge: tuple[_Edge, ScriptedSTT], silero: Any
) -> None:
    # An AgentSession forwards every metrics event of its VAD to its own listeners and keeps
    # them for the session's report. On one VAD object shared by every call, each call's
    # events would reach every live session (N² events, kept until each call ends).
    edge, _ = speech_edge
    on_shared: list[Any] = []
    silero.on("metrics_collected", on_shared.append)
    try:
        outcomes = await asyncio.gather(
            place_call(edge.plan([Wait(1.5), Press("1"), Wait(20)], (34800, 34850))),
            place_call(edge.plan([Wait(1.5), Press("2"), Wait(20)], (34900, 34950))),
        )
    finally:
        silero.off("metrics_collected", on_shared.append)
    assert [o.from_iva.get("X-RouteValue") for o in outcomes] == ["Billing", "Sales"]
    assert on_shared == []  # no call's VAD stream ran on the shared object
    per_call = [edge.runner.session_vad() for _ in range(2)]
    assert per_call[0] is not per_call[1] and per_call[0] is not silero
    # ... and no call loaded the model again.
    assert per_call[0]._onnx_session is per_call[1]._onnx_session is silero._onnx_session
    assert per_call[0]._opts == silero._opts


class _ProvidersSeen(VoiceAgentRunner):
    """The runner as it is, noting the providers each call's session got."""

    seen: list[tuple[Any, Any, Any]]

    def session_providers(self) -> tuple[Any, Any, Any]:
        providers = super().session_providers()
        self.seen.append(providers)
        return providers


def test_each_session_copies_the_providers_byeline_builds(routes: Routes) -> None:
    runner = VoiceAgentRunner(routes, stt=ScriptedSTT([]), tts=ToneTTS(), vad=None)
    (stt_a, llm_a, tts_a), (stt_b, llm_b, tts_b) = (runner.session_providers() for _ in range(2))
    # The intent engine: one copy per session, its phrase table the shared one's.
    assert llm_a is not llm_b and llm_a is not runner.llm
    assert isinstance(llm_a, IntentLLM) and isinstance(llm_b, IntentLLM)
    assert llm_a._phrases is llm_b._phrases is runner.llm._phrases  # type: ignore[attr-defined]
    seen: list[Any] = []
    llm_a.on("metrics_collected", seen.append)
    llm_b.emit("metrics_collected", "b's")
    runner.llm.emit("metrics_collected", "shared")
    assert seen == []
    # Providers of unknown make (these test fakes) are shared as given.
    assert stt_a is stt_b is runner.stt and tts_a is tts_b is runner.tts


def test_openai_plugin_providers_are_copied_around_one_client(routes: Routes) -> None:
    from livekit.plugins import openai

    # Nothing is sent: the providers are only built (an unroutable base URL, a dummy key).
    shared = openai.LLM(model="gpt-4o-mini", api_key="sk-test", base_url="http://127.0.0.1:9/v1")
    runner = VoiceAgentRunner(routes, stt=ScriptedSTT([]), tts=ToneTTS(), vad=None, llm=shared)
    (_, llm_a, _), (_, llm_b, _) = (runner.session_providers() for _ in range(2))
    assert llm_a is not llm_b and llm_a is not shared
    assert llm_a._client is llm_b._client is shared._client  # one HTTP connection pool
    assert llm_a.model == shared.model


async def test_one_calls_provider_errors_end_only_that_calls_agent(
    routes: Routes, tmp_path: Path, silero: Any
) -> None:
    # AgentSession closes when its LLM (or STT, TTS) reports more unrecoverable errors than
    # max_unrecoverable_errors. On one LLM object shared by all calls, one call's failing
    # requests would count in every live session, and every call would lose its agent.
    runner = _ProvidersSeen(
        routes, stt=ScriptedSTT([]), tts=ToneTTS(), vad=silero, no_input_timeout=10
    )
    runner.seen = []
    async with _Edge(runner, tmp_path, (35000, 35100)) as edge:
        failing = asyncio.ensure_future(place_call(edge.plan([Wait(25)], (35200, 35250))))
        for _ in range(100):
            if runner.seen:
                break
            await asyncio.sleep(0.05)
        healthy = asyncio.ensure_future(
            place_call(edge.plan([Wait(3), Press("2"), Wait(20)], (35300, 35350)))
        )
        for _ in range(100):
            if len(runner.seen) == 2:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # both sessions started
        failing_llm = runner.seen[0][1]
        for _ in range(AgentSession().conn_options.max_unrecoverable_errors + 1):
            failing_llm.emit(
                "error",
                lk_llm.LLMError(
                    timestamp=time.time(),
                    label="test",
                    error=APIConnectionError("injected: the provider is unreachable"),
                    recoverable=False,
                ),
            )
        failed, routed = await asyncio.gather(failing, healthy)
    assert failed.hung_up_by == "agent", failed.error
    assert json.loads(failed.from_iva.get("X-MetaData") or "{}")["intent"] == "agent_error"
    assert failed.from_iva.get("X-RouteValue") == routes.fallback.value
    # The other call's agent heard its caller on as if nothing had happened.
    assert routed.hung_up_by == "agent", routed.error
    assert routed.from_iva.get("X-RouteValue") == "Sales"


async def test_keys_route_during_the_greeting(speech_edge: tuple[_Edge, ScriptedSTT]) -> None:
    edge, _ = speech_edge
    outcome = await place_call(edge.plan([Wait(0.3), Press("0"), Wait(20)], (34400, 34500)))
    assert outcome.hung_up_by == "agent", outcome.error
    assert outcome.from_iva.get("X-RouteType") == "agent_transfer"
    meta = json.loads(outcome.from_iva.get("X-MetaData") or "{}")
    assert meta["input_mode"] == "dtmf"


async def test_caller_hanging_up_mid_goodbye_is_recorded_undelivered(
    speech_edge: tuple[_Edge, ScriptedSTT],
) -> None:
    edge, _ = speech_edge
    # Key 1 at 0.3 s; the goodbye "Connecting you to billing." lasts 1.04 s: hang up in it.
    outcome = await place_call(
        edge.plan([Wait(0.3), Press("1"), Wait(0.5), HangUp()], (34600, 34700))
    )
    assert outcome.hung_up_by == "caller"
    assert not outcome.from_iva
    await asyncio.sleep(0.3)
    await edge.store.aflush()
    [record] = edge.store.list_calls(limit=1)
    assert record.ended_by == "caller" and record.delivery == "not_sent"
    # The routing result is kept on the record although no BYE of ours could carry it.
    assert record.attributes.get("five9.route_value") == "Billing"
