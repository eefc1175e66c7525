"""The IVR flow model and the load runner (against byeline in-process)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from byeline.app import App, build_app
from byeline.config import ServeConfig
from byeline.five9.flow import FlowError, load_flow, parse_flow
from byeline.five9.load import Behaviour, MixError, load_mix, percentiles, run_load, write_reports
from byeline.five9.simulator import Press, Wait
from byeline.five9.variables import FromIVA

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "src" / "byeline" / "examples"


def test_example_flow_branches() -> None:
    flow = load_flow(EXAMPLES / "five9-ivr.yaml")
    cavs = flow.call_variables(
        {"ani": "+1555", "dnis": "+1800", "call_id": "42", "session_id": "S1"}
    )
    assert cavs["X-CallID"] == "42" and cavs["X-CallANI"] == "+1555"
    assert flow.transfer_to == "+18005550100"

    skill = flow.outcome(FromIVA([("X-RouteType", "skill_transfer"), ("X-RouteValue", "Billing")]))
    assert (skill.action, skill.params, skill.branch) == (
        "queue_skill",
        {"skill": "Billing"},
        "skill_transfer",
    )
    phone = flow.outcome(
        FromIVA([("x-routetype", "phone_transfer"), ("X-RouteValue", "+18005550199")])
    )
    assert phone.description == "transfer the call to +18005550199"
    unknown = flow.outcome(FromIVA([("X-RouteType", "teleport")]))
    assert unknown.branch is None and unknown.params == {"skill": "General"}
    gone = flow.outcome(FromIVA(), caller_hung_up=True)
    assert gone.action == "caller_disconnected"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "expected a mapping"),
        (
            {"get": {"t": "X-RouteType"}, "case": {"variable": "t", "default": {"action": "x"}}},
            "'x' is not one of",
        ),
        (
            {"get": {"t": "X-RouteType"}, "case": {"variable": "u", "default": {}}},
            "is not set by get",
        ),
        ({"get": {"t": "X-RouteType"}, "case": {"variable": "t"}}, "needs a default branch"),
        (
            {"put": {"CallANI": "1"}, "get": {"t": "X"}, "case": {"variable": "t"}},
            "X- header names",
        ),
        (
            {"get": {"t": "X-R"}, "case": {"variable": "t", "default": {"action": "queue_skill"}}},
            "queue_skill needs skill",
        ),
        ({"bogus": 1}, "unknown key"),
    ],
)
def test_flow_errors(data: object, message: str) -> None:
    with pytest.raises(FlowError, match=message):
        parse_flow(data)


def test_flow_unknown_placeholder() -> None:
    flow = parse_flow(
        {
            "put": {"X-A": "{nope}"},
            "get": {"t": "X-T"},
            "case": {"variable": "t", "default": {"action": "disconnect"}},
        }
    )
    with pytest.raises(FlowError, match="unknown placeholder"):
        flow.call_variables({"ani": "1"})


def test_percentiles() -> None:
    assert percentiles([]) == {"p50": None, "p95": None, "p99": None, "max": None}
    p = percentiles([float(v) for v in range(1, 101)])
    assert (p["p50"], p["p95"], p["p99"], p["max"]) == (50.0, 95.0, 99.0, 100.0)


def test_mix_file(tmp_path: Path) -> None:
    path = tmp_path / "mix.yaml"
    path.write_text(
        '- {name: one, weight: 2, script: [{press: "1"}], expect: {X-A: b}}\n'
        "- {hangup_after: 0.5}\n"
    )
    mix = load_mix(path)
    assert mix[0] == Behaviour("one", 2, (Press("1"),), None, (("X-A", "b"),))
    assert mix[1].hangup_after == 0.5
    path.write_text("- {weight: 0}\n")
    with pytest.raises(MixError, match="weight"):
        load_mix(path)
    path.write_text("- {colour: red}\n")
    with pytest.raises(MixError, match="unknown key"):
        load_mix(path)


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[App]:
    cfg = ServeConfig(
        trunk=[str(EXAMPLES / "five9-trunk.json")],
        routes=str(EXAMPLES / "routes.yaml"),
        sip=["udp:127.0.0.1:0"],
        db=str(tmp_path / "calls.db"),
        rtp_ports="34000-34200",
        max_calls=100,
    )
    app = build_app(cfg)
    await app.start()
    yield app
    await app.stop()


async def test_small_load_run_counts(edge: App, tmp_path: Path) -> None:
    mix = (
        Behaviour("billing", 2, (Wait(0.2), Press("1")), None, (("X-RouteValue", "Billing"),)),
        Behaviour("wrong expect", 1, (Wait(0.2), Press("2")), None, (("X-RouteValue", "Billing"),)),
        Behaviour("hangs up", 1, (), 0.4, ()),
    )
    report = await run_load(
        f"127.0.0.1:{edge.bound[0].port}",
        calls=24,
        concurrency=8,
        rate=40,
        mix=mix,
        timeout=20,
        rtp_ports=(35000, 35400),
        progress=False,
    )
    s = report.summary()
    assert s["calls"] == 24 and s["answered"] == 24 and s["failed"] == 0
    assert s["handed_back"] == 18 and s["caller_hung_up"] == 6
    assert s["expect_checked"] == 18 and s["expect_matched"] == 12
    assert s["handback_ms"]["p50"] is not None and s["answer_ms"]["p99"] is not None
    assert s["rtp_loss_pct"] is not None
    write_reports(report, tmp_path / "r.json", tmp_path / "r.html")
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["summary"]["handed_back"] == 18 and len(doc["calls"]) == 24
    assert "<svg" in (tmp_path / "r.html").read_text()
    assert edge.store is not None
    await edge.store.aflush()
    records = edge.store.list_calls(limit=100)
    assert sum(1 for r in records if r.delivery == "delivered") == 18
    assert sum(1 for r in records if r.delivery == "not_sent") == 6
