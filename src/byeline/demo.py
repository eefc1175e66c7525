"""``byeline demo``: the whole loop on loopback with the bundled examples.

byeline serves the example trunk and routes with the voice agent (offline
speech: pocketsphinx, espeak-ng, silero VAD) on a loopback port.  The Five9
simulator places a handful of calls as Five9's IVR would: two spoken requests
(recordings of Festival's voice shipped with byeline), a key press, a caller
who hangs up first and a silent caller who gets the fallback route.  For each
call it prints the transcript, what Five9 receives on the BYE (FromIVA) and
what the example IVR script does next.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .app import App, build_app
from .config import ServeConfig
from .five9.flow import IvrFlow, load_flow
from .five9.simulator import (
    Action,
    CallFailed,
    CallOutcome,
    CallPlan,
    Play,
    Press,
    Wait,
    place_call,
)
from .five9.variables import default_call_variables


@dataclass
class DemoCall:
    """One call of the demo and the route it should end with."""

    title: str
    actions: list[Action] = field(default_factory=list)
    hangup_after: float | None = None
    expect_value: str | None = None


def _calls(examples: Path) -> list[DemoCall]:
    callers = examples / "callers"
    return [
        DemoCall(
            "a billing question, spoken", [Play(callers / "billing.wav")], expect_value="Billing"
        ),
        DemoCall("a purchase, spoken", [Play(callers / "sales.wav")], expect_value="Sales"),
        DemoCall("key 0 pressed", [Wait(0.5), Press("0")], expect_value="General"),
        DemoCall("the caller hangs up first", hangup_after=1.5),
        DemoCall("a silent caller", [], expect_value="General"),
    ]


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run_demo(keep_db: str | None = None) -> int:
    """Run the demo; 0 when every call ended as it should."""
    logging.basicConfig(level=logging.ERROR, format="  byeline log: %(message)s", stream=sys.stdout)
    return asyncio.run(_demo(keep_db))


async def _demo(keep_db: str | None) -> int:
    examples = Path(str(resources.files("byeline") / "examples"))
    flow = load_flow(examples / "five9-ivr.yaml")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="byeline-demo-") as tmp:
        port = _free_udp_port()
        cfg = ServeConfig(
            trunk=[str(examples / "five9-trunk.json")],
            routes=str(examples / "routes.yaml"),
            sip=[f"udp:127.0.0.1:{port}"],
            db=keep_db or str(Path(tmp) / "demo.db"),
            rtp_ports="31000-31200",
            no_input_timeout=2.0,
        )
        print("starting byeline with the voice agent (pocketsphinx, espeak-ng, silero VAD)...")
        app = build_app(cfg)
        await app.start()
        print(f"byeline serving examples/five9-trunk.json on udp:127.0.0.1:{port}\n")
        failures = 0
        calls = _calls(examples)
        try:
            # The calls run at once, as Five9 would send them; each is printed in turn.
            outcomes = await asyncio.gather(
                *(_place(flow, port, n, c) for n, c in enumerate(calls, start=1))
            )
            for number, (demo_call, outcome) in enumerate(zip(calls, outcomes, strict=True), 1):
                failures += await _report(app, flow, number, demo_call, outcome)
        finally:
            await app.stop()
    took = time.monotonic() - started
    if failures:
        print(f"{failures} call(s) did not end as expected ({took:.0f} s)", file=sys.stderr)
        return 1
    print(f"all {len(calls)} calls ended as expected in {took:.0f} s; records: byeline calls list")
    return 0


async def _place(flow: IvrFlow, port: int, number: int, demo: DemoCall) -> CallOutcome | str:
    ani = f"+1555010{number:04d}"
    ids = default_call_variables(ani=ani, dnis="+18005550100")
    cavs = flow.call_variables(
        {
            "ani": ani,
            "dnis": "+18005550100",
            "call_id": ids["X-CallID"],
            "session_id": ids["X-CallSessionID"],
        }
    )
    plan = CallPlan(
        target=f"127.0.0.1:{port}",
        call_variables=cavs,
        caller=ani,
        actions=demo.actions,
        hangup_after=demo.hangup_after,
        timeout=50,
        rtp_ports=(32000 + 100 * number, 32099 + 100 * number),
    )
    try:
        return await place_call(plan)
    except CallFailed as exc:
        return str(exc)


async def _report(
    app: App, flow: IvrFlow, number: int, demo: DemoCall, outcome: CallOutcome | str
) -> int:
    print(f"call {number}: {demo.title}")
    if isinstance(outcome, str):
        print(f"  FAILED: {outcome}\n")
        return 1
    await _print_transcript(app, outcome)
    _print_from_iva(outcome)
    ivr = flow.outcome(outcome.from_iva, caller_hung_up=outcome.hung_up_by == "caller")
    print(f"  IVR next: {ivr.description}\n")
    got = outcome.from_iva.get("X-RouteValue")
    if demo.expect_value is None:
        return 0 if outcome.hung_up_by == "caller" else 1
    if got != demo.expect_value:
        print(f"  FAILED: expected X-RouteValue {demo.expect_value}, got {got}\n")
        return 1
    return 0


async def _print_transcript(app: App, outcome: CallOutcome) -> None:
    if app.store is None:
        return
    await app.store.aflush()
    record = next(
        (r for r in app.store.list_calls(limit=5) if r.sip_call_id == outcome.sip_call_id), None
    )
    if record is None:
        return
    full = app.store.get_call(record.call_id)
    lines = getattr(full, "transcript", None) or []
    t0 = record.answered_at or record.started_at or 0.0
    for line in lines:
        role = getattr(line, "role", "")
        if role not in ("caller", "agent"):
            continue
        print(f"  {getattr(line, 'at', t0) - t0:5.1f} s {role:>6}: {getattr(line, 'text', '')}")


def _print_from_iva(outcome: CallOutcome) -> None:
    if outcome.from_iva:
        print("  Five9 received the BYE; FromIVA holds:")
        for name, value in outcome.from_iva.pairs:
            print(f'    GET(FromIVA, "{name}") = {value}')
    else:
        print("  no BYE from the agent: the caller hung up first (the result stays in the record)")
