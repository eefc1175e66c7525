"""Real providers by configuration: LiveKit's OpenAI plugin against a FAKE OpenAI server.

The cloud services cannot be reached from here, so ``FakeOpenAI`` below is a
labelled stand-in for the OpenAI HTTP API (chat completions with streaming tool
calls, transcriptions, speech), served on loopback.  Everything else is real:
LiveKit's plugin and the ``openai`` client speak HTTP to it, and byeline's
routing agent and handback tool run as in production.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from livekit.agents import AgentSession

from byeline.agent.handback import HANDBACK_TOOL_NAME, HandbackContext
from byeline.agent.providers import (
    ProviderConfig,
    ProviderError,
    build_llm,
    build_stt,
    build_tts,
)
from byeline.agent.routes import Routes, load_routes
from byeline.agent.routing_agent import RoutingAgent
from byeline.edge.call import Call, new_call_id
from byeline.edge.server import EdgeConfig, SipEdge
from byeline.edge.trunk import TrunkSet, load_trunk

pytest.importorskip("livekit.plugins.openai")

EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "byeline" / "examples"


class FakeOpenAI:
    """FAKE of the OpenAI API (a cloud service not reachable here), for the plugin's real client."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self.chat)
        self.app.router.add_post("/v1/audio/transcriptions", self.transcribe)
        self.app.router.add_post("/v1/audio/speech", self.speech)
        self.runner = web.AppRunner(self.app)
        self.url = ""

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/v1"

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        last = body["messages"][-1]
        tools = [t["function"]["name"] for t in body.get("tools", [])]
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)

        async def chunk(delta: dict[str, Any], finish: str | None = None) -> None:
            doc = {
                "id": "c1",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            await resp.write(f"data: {json.dumps(doc)}\n\n".encode())

        said = str(last.get("content", "")).lower()
        if last["role"] == "user" and "bill" in said and HANDBACK_TOOL_NAME in tools:
            args = json.dumps({"route": "billing", "intent": "billing", "confidence": 0.9})
            await chunk(
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": HANDBACK_TOOL_NAME, "arguments": args},
                        }
                    ],
                }
            )
            await chunk({}, "tool_calls")
        else:
            text = "Connecting you to billing." if last["role"] == "tool" else "How can I help?"
            await chunk({"role": "assistant", "content": text})
            await chunk({}, "stop")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def transcribe(self, request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"text": "I have a question about my bill"})

    async def speech(self, request: web.Request) -> web.Response:
        await request.json()
        return web.Response(body=b"\x00\x00" * 2400, content_type="audio/pcm")  # 0.1 s at 24 kHz

    async def stop(self) -> None:
        await self.runner.cleanup()


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    fake = FakeOpenAI()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def routes() -> Routes:
    return load_routes(EXAMPLES / "routes.yaml")


def _call() -> Call:
    edge = SipEdge(EdgeConfig(), TrunkSet([load_trunk(EXAMPLES / "five9-trunk.json")]))
    return Call(
        call_id=new_call_id(),
        identity="sip_+1555",
        controller=edge,
        attributes={"five9.campaign": "Acme", "sip.callStatus": "active"},
    )


async def test_openai_compatible_llm_routes_the_call(
    fake_openai: FakeOpenAI, routes: Routes
) -> None:
    cfg = ProviderConfig(llm="openai", llm_model="local-model", llm_base_url=fake_openai.url)
    llm = build_llm(cfg, routes, environ={"OPENAI_API_KEY": "not-a-real-key"})
    call = _call()
    state = HandbackContext(call=call, routes=routes)
    session: AgentSession[HandbackContext] = AgentSession(
        llm=llm, vad=None, userdata=state, user_away_timeout=None
    )
    await session.start(RoutingAgent(state))
    try:
        result = await session.run(user_input="I have a question about my bill")
        fn = result.expect.next_event().is_function_call(name=HANDBACK_TOOL_NAME)
        assert json.loads(fn.event().item.arguments)["route"] == "billing"
        assert call.attributes["five9.route_value"] == "Billing"
        meta = json.loads(call.attributes["five9.metadata"])
        assert meta["intent"] == "billing" and meta["confidence"] == 0.9
    finally:
        await session.aclose()
    # The real client sent our tool schema and the routes in its instructions.
    first = fake_openai.requests[0]
    assert first["model"] == "local-model"
    assert any(t["function"]["name"] == HANDBACK_TOOL_NAME for t in first["tools"])
    system = " ".join(str(m.get("content")) for m in first["messages"] if m["role"] == "system")
    assert "billing" in system


async def test_openai_stt_and_tts_through_the_plugin(
    fake_openai: FakeOpenAI, routes: Routes
) -> None:
    from livekit import rtc

    env = {"BYELINE_STT_API_KEY": "k", "BYELINE_TTS_API_KEY": "k"}
    stt = build_stt(ProviderConfig(stt="openai", stt_base_url=fake_openai.url), routes, env)
    frame = rtc.AudioFrame(
        b"\x00\x00" * 1600, sample_rate=16000, num_channels=1, samples_per_channel=1600
    )
    event = await stt.recognize([frame])
    assert event.alternatives[0].text == "I have a question about my bill"
    tts = build_tts(ProviderConfig(tts="openai", tts_base_url=fake_openai.url), env)
    frames = [f.frame async for f in tts.synthesize("Connecting you to billing.")]
    assert sum(f.samples_per_channel for f in frames) > 0


def test_configuration_errors(routes: Routes) -> None:
    with pytest.raises(ProviderError, match="llm 'gpt': expected one of offline, openai"):
        ProviderConfig(llm="gpt").check()
    with pytest.raises(ProviderError, match="OPENAI_API_KEY"):
        build_llm(ProviderConfig(llm="openai"), routes, environ={})


async def test_offline_defaults(routes: Routes) -> None:
    from byeline.agent.intent_llm import IntentLLM
    from byeline.agent.speech import EspeakTTS

    assert isinstance(build_llm(ProviderConfig(), routes, environ={}), IntentLLM)
    assert isinstance(build_tts(ProviderConfig(), environ={}), EspeakTTS)
    await asyncio.sleep(0)
