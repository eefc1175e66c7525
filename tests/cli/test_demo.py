"""``byeline demo`` end to end: the voice agent, the simulator, the records."""

from __future__ import annotations

import subprocess
import sys


def test_demo_routes_every_call() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "byeline.cli", "demo"], capture_output=True, text=True, timeout=180
    )
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert 'GET(FromIVA, "X-RouteValue") = Billing' in out
    assert 'GET(FromIVA, "X-RouteValue") = Sales' in out
    assert "IVR next: transfer the call to agent General" in out
    assert "the caller hung up first" in out
    assert '"intent":"no_input"' in out
    assert "all 5 calls ended as expected" in out
