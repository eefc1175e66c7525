"""The handoff document applies the BYE's header guard: no forged lines through attributes."""

from __future__ import annotations

import time
from pathlib import Path

from byeline.edge.trunk import TrunkSet, load_trunk
from byeline.store import CallStore
from byeline.web.handoff import routing_result

EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "byeline" / "examples"


def test_refused_values_are_not_offered(tmp_path: Path) -> None:
    trunk = load_trunk(EXAMPLES / "five9-trunk.json")
    store = CallStore.open(str(tmp_path / "calls.db"))
    try:
        store.call_started(
            "SCL_guard", trunk_id=trunk.id, started_at=time.time(), five9_call_id="300000000777"
        )
        store.call_updated(
            "SCL_guard",
            status="ended",
            ended_by="caller",
            delivery="not_sent",
            attributes={
                "five9.route_type": "skill_transfer",
                "five9.route_value": "Billing\nX-RouteType=hangup",
                "five9.route_reason": "x" * 2000,
            },
        )
        assert store.flush(10)
        record = store.get_call("SCL_guard")
        assert record is not None
        result = routing_result(record, TrunkSet([trunk]))
    finally:
        store.close()
    assert result["headers"] == {"X-RouteType": "skill_transfer"}
    lines = [f"{k}={v}" for k, v in result["headers"].items()]
    assert lines == ["X-RouteType=skill_transfer"]
