"""``byeline demo``: the whole loop on loopback with the bundled examples.

byeline serves the example trunk and routes on a loopback port; SIPp plays
Five9's IVR and places a few calls: a caller pressing 1, one pressing 2, one
who says nothing (fallback after the reprompts) and one who hangs up first.
For each call the demo prints what Five9 would receive on the BYE (read from
SIPp's own message log, i.e. what crossed the wire) and what byeline recorded.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

from .app import build_app
from .config import ServeConfig
from .five9.sipp import SippResult, dtmf_capture, render_scenario, run_sipp, sipp_binary

DEMO_CALLS = [
    (
        "caller presses 1",
        "five9_dtmf",
        "1",
        {"want_type": "skill_transfer", "want_value": "Billing"},
    ),
    ("caller presses 2", "five9_dtmf", "2", {"want_type": "skill_transfer", "want_value": "Sales"}),
    ("silent caller", "five9_dtmf", None, {"want_type": "skill_transfer", "want_value": "General"}),
    ("caller hangs up first", "five9_hangup", None, {}),
]


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run_demo(keep_db: str | None = None) -> int:
    """Run the demo; 0 when every call did what it should."""
    sipp_binary()
    return asyncio.run(_demo(keep_db))


async def _demo(keep_db: str | None) -> int:
    logging.basicConfig(
        level=logging.WARNING, format="  byeline log: %(message)s", stream=sys.stdout
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    examples = resources.files("byeline") / "examples"
    with tempfile.TemporaryDirectory(prefix="byeline-demo-") as tmp:
        work = Path(tmp)
        port = _free_udp_port()
        cfg = ServeConfig(
            trunk=[str(examples / "five9-trunk.json")],
            routes=str(examples / "routes.yaml"),
            sip=[f"udp:127.0.0.1:{port}"],
            db=keep_db or str(work / "demo.db"),
            rtp_ports="31000-31200",
            no_input_timeout=1.5,
        )
        app = build_app(cfg)
        await app.start()
        print(f"byeline serving examples/five9-trunk.json on udp:127.0.0.1:{port}\n")
        failures = 0
        try:
            for number, (title, name, digit, variables) in enumerate(DEMO_CALLS, start=1):
                pcap = dtmf_capture(digit) if digit else None
                run_dir = work / f"call{number}"
                run_dir.mkdir()
                scenario = render_scenario(name, run_dir, pcap=pcap)
                started = time.monotonic()
                result = await run_sipp(
                    f"127.0.0.1:{port}",
                    scenario,
                    workdir=run_dir,
                    variables={"ani": f"555010{number}", **variables},
                    timeout=30,
                )
                failures += _report(number, title, result, time.monotonic() - started)
        finally:
            await app.stop()
        _print_records(cfg.db)
    if failures:
        print(f"\n{failures} call(s) did not go as expected", file=sys.stderr)
        return 1
    print("\nall calls handed back as expected")
    return 0


def _report(number: int, title: str, result: SippResult, seconds: float) -> int:
    print(f"call {number}: {title}  ({seconds:.1f} s)")
    if result.received_byes:
        print("  Five9 received BYE; FromIVA would hold:")
        for name, value in result.received_byes[-1].items():
            print(f'    GET(FromIVA, "{name}") = {value}')
    else:
        print("  no BYE from byeline reached Five9 (the caller hung up first)")
    if not result.ok:
        reason = (
            result.errors.strip().splitlines()
            or result.stderr.strip().splitlines()
            or ["sipp failed"]
        )[-1]
        print(f"  FAILED: {reason}")
        return 1
    print()
    return 0


def _print_records(db: str) -> None:
    from .store import CallStore

    store = CallStore.open(db)
    try:
        print("call records (byeline calls list):")
        for r in reversed(store.list_calls(limit=10)):
            route = (r.route or {}).get("five9.route_value", "-")
            print(
                f"  {r.call_id}  caller {r.caller:<10} ended by {r.ended_by or '-':<7} "
                f"delivery {r.delivery or '-':<10} route {route}"
            )
    finally:
        store.close()
