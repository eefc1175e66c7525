"""The Five9 simulator against byeline (in-process) and against SIPp as an agent UAS."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from byeline.agent.handback import ROUTE_DECIDED_AT
from byeline.app import App, build_app
from byeline.config import ServeConfig
from byeline.five9 import simulator
from byeline.five9.script import ScriptError, parse_script
from byeline.five9.simulator import CallFailed, CallPlan, HangUp, Press, Wait, place_call
from byeline.five9.variables import FromIVA, default_call_variables, merge_call_variables

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "src" / "byeline" / "examples"
SCENARIOS = ROOT / "src" / "byeline" / "five9" / "sipp"


async def _start(tmp_path: Path, trunk: Path, rtp: str) -> App:
    cfg = ServeConfig(
        trunk=[str(trunk)],
        routes=str(EXAMPLES / "routes.yaml"),
        sip=["udp:127.0.0.1:0"],
        db=str(tmp_path / "calls.db"),
        rtp_ports=rtp,
        no_input_timeout=1.0,
    )
    app = build_app(cfg)
    await app.start()
    return app


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[App]:
    app = await _start(tmp_path, EXAMPLES / "five9-trunk.json", "32000-32100")
    yield app
    await app.stop()


def _target(app: App) -> str:
    return f"127.0.0.1:{app.bound[0].port}"


def _plan(app: App, **kwargs: object) -> CallPlan:
    cavs = default_call_variables(ani="+15555550123", dnis="+18005550100")
    return CallPlan(
        target=_target(app), call_variables=cavs, timeout=15, rtp_ports=(33000, 33100), **kwargs
    )  # type: ignore[arg-type]


async def test_dtmf_call_reads_from_iva(edge: App) -> None:
    plan = _plan(edge, actions=[Wait(0.2), Press("1")])
    outcome = await place_call(plan)
    assert outcome.answered and outcome.final_code == 200
    assert outcome.hung_up_by == "agent"
    assert outcome.from_iva.get("X-RouteType") == "skill_transfer"
    assert outcome.from_iva.get("x-routevalue") == "Billing"  # GET is case-insensitive
    assert outcome.from_iva.get("X-RouteReason") == "caller asked for billing"
    meta = outcome.from_iva.get("X-MetaData") or ""
    assert plan.call_variables["X-CallID"] in meta  # Five9's call id made the round trip
    assert outcome.answer_ms is not None and outcome.bye_ms is not None
    assert outcome.bye_ms >= outcome.answer_ms
    assert outcome.rtp_received > 0  # byeline sends RTP from the answer on


async def test_decision_time_is_recorded_and_precedes_the_bye(edge: App) -> None:
    """The handback records when the route was decided; the SIP trace when the BYE left."""
    outcome = await place_call(_plan(edge, actions=[Wait(0.2), Press("1")]))
    assert outcome.from_iva.get("X-RouteValue") == "Billing"
    # The key's first RFC 4733 packet leaves on a tick after it was queued, before the BYE.
    assert outcome.last_input_ms is not None and outcome.last_key_sent_ms is not None
    assert outcome.bye_ms is not None
    assert outcome.last_input_ms <= outcome.last_key_sent_ms < outcome.bye_ms
    assert outcome.last_key_sent_ms - outcome.last_input_ms < 200
    # Not a BYE header: the trunk maps only the result attributes.
    assert all("decided" not in name.lower() for name, _ in outcome.from_iva.pairs)
    assert edge.store is not None
    await edge.store.aflush()
    (listed,) = edge.store.list_calls(limit=5)
    record = edge.store.get_call(listed.call_id)
    assert record is not None
    decided = float(record.attributes[ROUTE_DECIDED_AT])
    bye = min(m.at for m in record.trace if m.direction == "out" and m.first_line[:4] == "BYE ")
    # The voice agent (this fixture's) speaks its goodbye in between: about a second.
    assert decided <= bye < decided + 10.0


def test_calls_take_rtp_ports_round_robin() -> None:
    """A call must not bind the port another call closed a moment ago: the agent may still be
    sending there, and the new call would latch that stale source and send its keys to a
    closed port (about one lost key in 40 to 640 at 100 concurrent calls, before this)."""
    allocator = simulator._port_allocator((47000, 47100))
    assert simulator._port_allocator((47000, 47100)) is allocator
    first = allocator.allocate("127.0.0.1")
    allocator.release(first)
    second = allocator.allocate("127.0.0.1")
    allocator.release(second)
    assert second != first


async def test_a_cancelled_call_gives_its_rtp_port_back() -> None:
    # Nobody answers on this port: the call waits for a final response and is cancelled.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        plan = CallPlan(
            target=f"127.0.0.1:{silent.getsockname()[1]}",
            call_variables=default_call_variables(ani="+15555550100", dnis="+18005550100"),
            timeout=30,
            rtp_ports=(47200, 47300),
        )
        task = asyncio.create_task(place_call(plan))
        allocator = simulator._port_allocator(plan.rtp_ports)
        async with asyncio.timeout(5):
            while not allocator.in_use:
                await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert not allocator.in_use  # the shared allocator has it back, for the calls that follow


async def test_caller_hangs_up_first(edge: App) -> None:
    outcome = await place_call(_plan(edge, hangup_after=0.3))
    assert outcome.hung_up_by == "caller"
    assert outcome.bye_code == 200
    assert not outcome.from_iva
    assert edge.store is not None
    await edge.store.aflush()
    [record] = edge.store.list_calls(limit=1)
    assert record.ended_by == "caller" and record.delivery == "not_sent"


async def test_script_wait_then_keys(edge: App) -> None:
    actions = parse_script([{"wait": 0.1}, {"press": "2"}, {"wait": 5}])
    outcome = await place_call(_plan(edge, actions=actions))
    assert outcome.from_iva.get("X-RouteValue") == "Sales"


async def test_not_answered_raises_with_the_code(edge: App) -> None:
    plan = _plan(edge)
    plan.dnis = "+19999999999"
    with pytest.raises(CallFailed, match="404"):
        await place_call(plan)


async def test_digest_auth(tmp_path: Path) -> None:
    app = await _start(tmp_path, ROOT / "tests/data/five9/trunk-auth.json", "32200-32300")
    try:
        good = _plan(app, auth=("five9", "s3cret-pass"), actions=[Press("0")])
        outcome = await place_call(good)
        assert outcome.from_iva.get("X-RouteType") == "agent_transfer"
        bad = _plan(app, auth=("five9", "wrong"))
        with pytest.raises(CallFailed, match="401"):
            await place_call(bad)
        none = _plan(app)
        with pytest.raises(CallFailed, match="401"):
            await place_call(none)
    finally:
        await app.stop()


async def test_against_sipp_agent_uas(tmp_path: Path) -> None:
    """SIPp answers and hangs up with known headers: the simulator reads them as Five9 would."""
    port = 5096
    sipp = await asyncio.create_subprocess_exec(
        "sipp",
        "-sf",
        str(SCENARIOS / "agent_uas.xml"),
        "-i",
        "127.0.0.1",
        "-mi",
        "127.0.0.1",
        "-p",
        str(port),
        "-m",
        "1",
        "-nostdin",
        "-timeout",
        "20s",
        "-trace_err",
        cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await asyncio.sleep(0.5)
        cavs = default_call_variables(ani="+15555550123", dnis="+18005550100")
        outcome = await place_call(
            CallPlan(
                target=f"127.0.0.1:{port}",
                call_variables=cavs,
                timeout=15,
                rtp_ports=(33200, 33300),
            )
        )
        assert outcome.hung_up_by == "agent"
        assert outcome.from_iva.pairs == [
            ("X-RouteType", "phone_transfer"),
            ("X-RouteValue", "+1 800 555 0199"),
            ("x-routereason", "caller asked for a person"),
            ("X-MetaData", '{"intent":"agent","score":0.93}'),
            ("X-Unmapped-Extra", "kept as sent"),
        ]
        assert outcome.from_iva.get("X-RouteReason") == "caller asked for a person"
        assert await asyncio.wait_for(sipp.wait(), 10) == 0
    finally:
        if sipp.returncode is None:
            sipp.kill()
            await sipp.wait()


def test_call_variables() -> None:
    five9 = default_call_variables(ani="+1555", dnis="+1800")
    assert list(five9)[:4] == ["X-CallANI", "X-CallDNIS", "X-CallID", "X-CallSessionID"]
    template = default_call_variables(ani="+1555", dnis="+1800", style="five9-template")
    assert set(template) == {"X-five9ani", "X-five9dnis", "X-five9callid", "X-five9sessionid"}
    merged = merge_call_variables(five9, [("x-callani", "+1666"), ("X-Extra", "1")])
    assert merged["x-callani"] == "+1666" and "X-CallANI" not in merged
    with pytest.raises(ValueError, match="cav-style"):
        default_call_variables(ani="1", dnis="2", style="nope")


def test_from_iva() -> None:
    f = FromIVA([("X-A", "1"), ("x-a", "2"), ("X-B", "3")])
    assert f.get("X-A") == "1" and f.get("x-b") == "3" and f.get("X-C") is None
    assert f.tostring() == "X-A=1;x-a=2;X-B=3"
    assert f.as_dict() == {"X-A": "1", "x-a": "2", "X-B": "3"}


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ({"press": "1"}, "expected a list"),
        ([{"press": "12x"}], "step 1: press takes keys"),
        ([{"wait": -1}], "step 1: wait takes"),
        ([{"dance": 1}], "unknown step 'dance'"),
        ([{"say": ""}], "say takes"),
        (["jump"], "expected one of"),
    ],
)
def test_script_errors(steps: object, message: str) -> None:
    with pytest.raises(ScriptError, match=message):
        parse_script(steps)


def test_script_steps(tmp_path: Path) -> None:
    actions = parse_script([{"wait": 1}, {"press": "1#"}, "hangup"], base=tmp_path)
    assert actions == [Wait(1.0), Press("1#"), HangUp()]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "byeline.cli", "five9", "call", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "status", "needle"),
    [
        (["nosuchhost.invalid:5060"], 2, "cannot resolve"),
        (["127.0.0.1:9", "--timeout", "1.5"], 2, "no final response"),
        (["127.0.0.1:5060", "--cav", "Foo=1"], 2, "name it X-Foo"),
        (["127.0.0.1:5060", "--auth", "nocolon"], 2, "USER:PASSWORD"),
        (["127.0.0.1:5060", "--expect", "novalue"], 2, "NAME=VALUE"),
        (["sip:@@@"], 2, "not a valid SIP URI"),
    ],
)
def test_cli_failures_one_line(args: list[str], status: int, needle: str) -> None:
    r = _cli(*args)
    assert r.returncode == status, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr


async def test_cli_expect_diff_and_match(edge: App) -> None:
    target = _target(edge)
    ok = await asyncio.to_thread(
        _cli,
        target,
        "--dtmf",
        "1",
        "--expect",
        "X-RouteValue=Billing",
        "--rtp-ports",
        "33400-33500",
        "--timeout",
        "15",
    )
    assert ok.returncode == 0, ok.stderr
    assert 'GET(FromIVA, "X-RouteValue") = Billing' in ok.stdout
    bad = await asyncio.to_thread(
        _cli,
        target,
        "--dtmf",
        "2",
        "--expect",
        "X-RouteValue=Billing",
        "--rtp-ports",
        "33400-33500",
        "--timeout",
        "15",
    )
    assert bad.returncode == 1
    assert "- X-RouteValue: Billing" in bad.stderr and "+ X-RouteValue: Sales" in bad.stderr
