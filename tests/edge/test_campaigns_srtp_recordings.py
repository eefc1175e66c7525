"""SRTP per trunk policy, an agent per campaign and call recordings, over SIP with the simulator."""

from __future__ import annotations

import wave
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from byeline.app import App, build_app
from byeline.config import ServeConfig
from byeline.five9.simulator import CallFailed, CallPlan, Press, Wait, place_call
from byeline.five9.variables import default_call_variables

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "src" / "byeline" / "examples"
DATA = ROOT / "tests" / "data" / "campaigns"


async def _app(tmp: Path, **kwargs: object) -> App:
    cfg = ServeConfig(
        sip=["udp:127.0.0.1:0"],
        db=str(tmp / "calls.db"),
        rtp_ports="36100-36300",
        agent="dtmf",
        **kwargs,
    )  # type: ignore[arg-type]
    app = build_app(cfg)
    await app.start()
    return app


def _plan(app: App, dnis: str = "+18005550100", **kwargs: object) -> CallPlan:
    cavs = default_call_variables(ani="+15555550123", dnis=dnis)
    kwargs.setdefault("actions", [Wait(0.3), Press("1")])
    return CallPlan(
        target=f"127.0.0.1:{app.bound[0].port}",
        call_variables=cavs,
        dnis=dnis,
        timeout=20,
        rtp_ports=(36400, 36500),
        **kwargs,
    )  # type: ignore[arg-type]


async def test_srtp_required_by_the_trunk(tmp_path: Path) -> None:
    app = await _app(
        tmp_path, trunk=[str(DATA / "trunk-srtp.json")], routes=str(EXAMPLES / "routes.yaml")
    )
    try:
        with pytest.raises(CallFailed, match="488"):
            await place_call(_plan(app))  # plain RTP offered: refused
        outcome = await place_call(_plan(app, srtp=True))
        assert outcome.srtp and outcome.from_iva.get("X-RouteValue") == "Billing"  # key 1, SRTP
        assert outcome.rtp_received > 0  # byeline's SRTP decrypted by the caller
        assert app.store is not None
        await app.store.aflush()
        record = app.store.get_call(app.store.list_calls(limit=1)[0].call_id)
        assert record is not None
        raw = b"".join(m.raw.encode() if isinstance(m.raw, str) else m.raw for m in record.trace)
        assert b"RTP/SAVP" in raw and b"a=crypto:" in raw
        assert b"inline:<redacted>" in raw or b"<redacted>" in raw  # keys never stored
    finally:
        await app.stop()


async def test_srtp_allowed_takes_plain_too(tmp_path: Path) -> None:
    app = await _app(
        tmp_path, trunk=[str(EXAMPLES / "five9-trunk.json")], routes=str(EXAMPLES / "routes.yaml")
    )
    try:  # the example trunk does not set media_encryption: LiveKit's default, DISABLE
        outcome = await place_call(_plan(app))
        assert not outcome.srtp and outcome.from_iva.get("X-RouteValue") == "Billing"
    finally:
        await app.stop()


async def test_an_agent_per_campaign(tmp_path: Path) -> None:
    app = await _app(
        tmp_path,
        trunk=[str(DATA / "trunk-campaigns.json")],
        dispatch=[str(DATA / "dispatch-sales.json"), str(DATA / "dispatch-support.json")],
        agents=[
            f"sales-agent={DATA / 'routes-sales.yaml'}",
            f"support-agent={DATA / 'routes-support.yaml'}",
        ],
    )
    try:
        sales = await place_call(_plan(app, dnis="+18005550111"))
        support = await place_call(_plan(app, dnis="+18005550122"))
        assert sales.from_iva.get("X-RouteValue") == "SalesQueue"
        assert support.from_iva.get("X-RouteValue") == "SupportQueue"
        assert support.from_iva.get("X-RouteReason") == "support agent chose billing"
    finally:
        await app.stop()


def test_a_rule_naming_an_unknown_agent_stops_start_up(tmp_path: Path) -> None:
    from byeline.config import ConfigError

    cfg = ServeConfig(
        trunk=[str(DATA / "trunk-campaigns.json")],
        dispatch=[str(DATA / "dispatch-sales.json")],
        agents=[f"support-agent={DATA / 'routes-support.yaml'}"],
        db=str(tmp_path / "x.db"),
    )
    with pytest.raises(ConfigError, match="'sales-agent', which no agents entry registers"):
        build_app(cfg)


async def test_recording_two_channels_and_api(tmp_path: Path) -> None:
    recordings = tmp_path / "recordings"
    app = await _app(
        tmp_path,
        trunk=[str(EXAMPLES / "five9-trunk.json")],
        routes=str(EXAMPLES / "routes.yaml"),
        recordings=str(recordings),
        http="127.0.0.1:0",
        api_token="t0ken",
    )
    try:
        outcome = await place_call(_plan(app, actions=[Wait(1.0), Press("2")]))
        assert outcome.from_iva.get("X-RouteValue") == "Sales"
        assert app.store is not None
        await app.store.aflush()
        call_id = app.store.list_calls(limit=1)[0].call_id
        path = recordings / f"{call_id}.wav"
        with wave.open(str(path), "rb") as wav:
            assert (wav.getnchannels(), wav.getframerate(), wav.getsampwidth()) == (2, 8000, 2)
            frames = wav.getnframes()
            stereo = np.frombuffer(wav.readframes(frames), dtype="<i2").reshape(-1, 2)
        assert 0.8 < frames / 8000 < 5.0  # about the call's length
        assert stereo.shape[1] == 2
        url = app.http.url
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer t0ken"}) as http:
            async with http.get(f"{url}/calls/{call_id}") as resp:
                assert (await resp.json())["recording"] == f"/calls/{call_id}/recording"
            async with http.get(f"{url}/calls?limit=1") as resp:  # listed with the calls
                listed = (await resp.json())["calls"][0]
                assert listed["recording"] == f"/calls/{call_id}/recording"
            async with http.get(f"{url}/calls/{call_id}/recording") as resp:
                assert resp.status == 200 and (await resp.read())[:4] == b"RIFF"
            async with http.get(f"{url}/calls/..%2F..%2Fetc%2Fpasswd/recording") as resp:
                assert resp.status == 404
    finally:
        await app.stop()


def test_recordings_follow_the_retention(tmp_path: Path) -> None:
    import os
    import time

    from byeline.app import purge_recordings

    old, new = tmp_path / "SCL_old.wav", tmp_path / "SCL_new.wav"
    old.write_bytes(b"RIFF")
    new.write_bytes(b"RIFF")
    os.utime(old, (time.time() - 90 * 86400,) * 2)
    assert purge_recordings(tmp_path, time.time() - 30 * 86400) == 1
    assert not old.exists() and new.exists()
