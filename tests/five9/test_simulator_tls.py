"""The simulator over TLS against byeline's TLS listener (a self-signed certificate)."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_harness import self_signed

from byeline.app import App, build_app
from byeline.config import ServeConfig
from byeline.five9.simulator import CallFailed, CallPlan, Press, Wait, place_call
from byeline.five9.variables import default_call_variables

EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "byeline" / "examples"


async def _tls_app(tmp_path: Path, trunk: Path) -> tuple[App, CallPlan]:
    """byeline on a TLS listener with a self-signed certificate, and a plan that trusts it."""
    cert, key = self_signed(tmp_path)
    cfg = ServeConfig(
        trunk=[str(trunk)],
        routes=str(EXAMPLES / "routes.yaml"),
        sip=["tls:127.0.0.1:0"],
        db=str(tmp_path / "calls.db"),
        rtp_ports="34600-34700",
        tls_cert=str(cert),
        tls_key=str(key),
        agent="dtmf",
    )
    app = build_app(cfg)
    await app.start()
    plan = CallPlan(
        target=f"127.0.0.1:{app.bound[0].port}",
        call_variables=default_call_variables(ani="+15555550123", dnis="+18005550100"),
        transport="tls",
        tls_ca=cert,
        timeout=15,
        rtp_ports=(34800, 34900),
    )
    return app, plan


async def test_dtmf_call_over_tls(tmp_path: Path) -> None:
    app, plan = await _tls_app(tmp_path, EXAMPLES / "five9-trunk.json")
    try:
        plan.actions = [Wait(0.2), Press("2")]
        outcome = await place_call(plan)
        assert outcome.from_iva.get("X-RouteValue") == "Sales"
        assert app.store is not None
        await app.store.aflush()
        [record] = app.store.list_calls(limit=1)
        assert record.transport == "TLS" and record.delivery == "delivered"
        # Without the CA the certificate is refused: no call, a one-line reason.
        plan.tls_ca = None
        with pytest.raises(CallFailed, match="certificate verify failed"):
            await place_call(plan)
    finally:
        await app.stop()


async def test_srtp_media_over_tls_signalling(tmp_path: Path) -> None:
    """SDES keys travel in the SDP, so SRTP goes with TLS: the two together, and the 488."""
    trunk = Path(__file__).resolve().parents[1] / "data" / "campaigns" / "trunk-srtp.json"
    app, plan = await _tls_app(tmp_path, trunk)
    try:
        plan.srtp, plan.actions = True, [Wait(0.3), Press("0")]
        outcome = await place_call(plan)
        assert outcome.srtp and outcome.rtp_received > 0
        assert outcome.from_iva.get("X-RouteType") == "agent_transfer"  # key 0 over SRTP
        plan.srtp = False
        with pytest.raises(CallFailed, match="488"):
            await place_call(plan)
    finally:
        await app.stop()
