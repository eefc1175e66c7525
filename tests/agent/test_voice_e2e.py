"""The voice agent end to end with its real offline providers, over SIP and RTP.

byeline runs in-process with the default voice agent (silero VAD, pocketsphinx,
espeak-ng, the intent engine); the Five9 simulator speaks the Festival
recordings shipped in ``examples/callers``.  Nothing is faked.
"""

from __future__ import annotations

import json
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from byeline.app import App, build_app
from byeline.config import ServeConfig
from byeline.five9.simulator import CallPlan, Play, Wait, place_call
from byeline.five9.variables import default_call_variables

EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "byeline" / "examples"
CALLERS = EXAMPLES / "callers"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def voice_app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[App]:
    tmp = tmp_path_factory.mktemp("voice")
    cfg = ServeConfig(
        trunk=[str(EXAMPLES / "five9-trunk.json")],
        routes=str(EXAMPLES / "routes.yaml"),
        sip=["udp:127.0.0.1:0"],
        db=str(tmp / "calls.db"),
        rtp_ports="35600-35800",
        no_input_timeout=3.0,
    )
    app = build_app(cfg)
    await app.start()
    yield app
    await app.stop()


def _plan(app: App, actions: list[object], **kwargs: object) -> CallPlan:
    cavs = default_call_variables(ani="+15555550123", dnis="+18005550100")
    return CallPlan(
        target=f"127.0.0.1:{app.bound[0].port}",
        call_variables=cavs,
        actions=actions,
        timeout=60,
        rtp_ports=(35900, 35999),  # type: ignore[arg-type]
        **kwargs,
    )  # type: ignore[arg-type]


pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_spoken_request_routes_the_call(voice_app: App) -> None:
    outcome = await place_call(_plan(voice_app, [Play(CALLERS / "sales.wav")]))
    assert outcome.hung_up_by == "agent"
    assert outcome.from_iva.get("X-RouteValue") == "Sales"
    meta = json.loads(outcome.from_iva.get("X-MetaData") or "{}")
    assert meta["input_mode"] == "speech" and meta["attempts"] == 1
    assert outcome.response_ms is not None and outcome.response_ms < 5000
    assert voice_app.store is not None
    await voice_app.store.aflush()
    record = voice_app.store.get_call(voice_app.store.list_calls(limit=1)[0].call_id)
    assert record is not None
    roles = [line.role for line in record.transcript]
    assert "caller" in roles and "agent" in roles


async def test_no_match_reprompts_then_falls_back(voice_app: App) -> None:
    off = Play(CALLERS / "offtopic.wav")
    outcome = await place_call(_plan(voice_app, [off, Wait(2.5), off, Wait(2.5), off, Wait(30)]))
    assert outcome.from_iva.get("X-RouteValue") == "General"
    meta = json.loads(outcome.from_iva.get("X-MetaData") or "{}")
    assert (meta["intent"], meta["input_mode"], meta["attempts"]) == ("no_match", "speech", 3)


async def test_barge_in_stops_the_greeting(voice_app: App, tmp_path: Path) -> None:
    """The caller talks over the greeting: the agent's audio stops within a second."""
    recording = tmp_path / "agent.wav"
    outcome = await place_call(
        _plan(voice_app, [Wait(1.0), Play(CALLERS / "billing.wav")], record=recording)
    )
    assert outcome.from_iva.get("X-RouteValue") == "Billing"
    with wave.open(str(recording), "rb") as wav:
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float64)

    def energy(start: float, end: float) -> float:
        window = pcm[int(start * 8000) : int(end * 8000)]
        return float(np.abs(window).mean()) if window.size else 0.0

    speaking = energy(0.2, 1.0)  # the greeting before the caller starts
    talked_over = energy(2.2, 3.2)  # the caller is speaking: the greeting must have stopped
    assert speaking > 300, speaking
    assert talked_over < speaking / 10, (speaking, talked_over)
