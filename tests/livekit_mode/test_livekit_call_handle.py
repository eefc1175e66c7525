"""The LiveKit-mode call handle's logic, on FAKES of LiveKit's server APIs.

LABELLED FAKES: no LiveKit server, SIP service or WebRTC room can run here, so
:class:`FakeLiveKit` stands in for them (``UpdateParticipant``, the ``lk.sip.EndCall`` RPC,
``RemoveParticipant``, the participant leaving) and :class:`FakeRoom` for ``rtc.Room``'s events.
They record what the handle asked, in order, and nothing else is faked: the handle, ``Call``
and ``handback`` are byeline's real code. The same handle runs for real against byeline's own
LiveKit API in test_livekit_handback_api.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from livekit import rtc

from byeline.edge.call import Delivery, EndedBy
from byeline.edge.trunk import load_trunk
from byeline.livekit.call_handle import find_sip_participant, sip_participant_call
from byeline.livekit.worker import bind_room

TRUNK = Path(__file__).resolve().parents[1] / "data" / "e2e" / "trunk.json"
FIVE9 = {
    "sip.callID": "SCL_abc",
    "sip.phoneNumber": "5550100",
    "sip.trunkPhoneNumber": "+18005550100",
    "sip.callStatus": "active",
    "five9.call_id": "300555",
}
ROUTE = {
    "five9.route_type": "skill_transfer",
    "five9.route_value": "Billing",
    "five9.route_reason": "caller asked for billing",
}


@dataclass
class FakeParticipant:
    """FAKE of a SIP participant (what ParticipantInfo and rtc.RemoteParticipant expose)."""

    identity: str
    attributes: dict[str, str]
    kind: int = 3


@dataclass
class FakeLiveKit:
    """FAKE of LiveKit's server APIs, recording every call in order."""

    rpc: bool = True
    update_failures: int = 0
    attributes: dict[str, str] = field(default_factory=lambda: dict(FIVE9))
    log: list[tuple[str, Any]] = field(default_factory=list)

    async def update_attributes(
        self, room: str, identity: str, attributes: Mapping[str, str]
    ) -> Mapping[str, str]:
        if self.update_failures:
            self.update_failures -= 1
            self.log.append(("update failed", dict(attributes)))
            raise ConnectionError("LiveKit unreachable (fake)")
        for k, v in attributes.items():
            if v == "":
                self.attributes.pop(k, None)
            else:
                self.attributes[k] = v
        self.log.append(("update", dict(attributes)))
        return dict(self.attributes)

    async def end_call(self, identity: str, headers: Mapping[str, str]) -> bool:
        self.log.append(("end_call" if self.rpc else "end_call unsupported", dict(headers)))
        return self.rpc

    async def remove_participant(self, room: str, identity: str) -> None:
        self.log.append(("remove", identity))

    async def wait_left(self, room: str, identity: str, timeout: float) -> bool:
        self.log.append(("left", identity))
        return True


def make(fake: FakeLiveKit, *, trunk: bool = True) -> Any:
    participant = FakeParticipant("sip_5550100", dict(FIVE9))
    return sip_participant_call(
        participant,
        room="five9_5550100_abc",
        server=fake,
        trunk=load_trunk(TRUNK) if trunk else None,
    )


async def test_attributes_are_written_and_awaited_before_the_leg_ends() -> None:
    fake = FakeLiveKit()
    call, leg = make(fake)
    call.update_attributes(ROUTE)
    result = await call.hangup(headers={"X-Extra": "1"})
    assert [step for step, _ in fake.log] == ["update", "end_call", "left"]
    assert fake.log[0][1] == ROUTE  # only the agent's attributes, never sip.*
    assert fake.log[1][1] == {"X-Extra": "1"}  # explicit headers go with the RPC
    assert leg.steps == ["update", "end_call", "left"]
    assert result.delivery is Delivery.PENDING and result.ended_by is EndedBy.AGENT
    assert dict(result.headers) == {
        "X-RouteReason": "caller asked for billing",
        "X-RouteType": "skill_transfer",
        "X-RouteValue": "Billing",
        "X-Extra": "1",
    }
    assert call.ended and await call.hangup() is result


async def test_without_the_rpc_the_participant_is_removed() -> None:
    fake = FakeLiveKit(rpc=False)
    call, _ = make(fake)
    call.update_attributes(ROUTE)
    result = await call.hangup(headers={"X-Extra": "1"})
    assert [step for step, _ in fake.log] == ["update", "end_call unsupported", "remove", "left"]
    # Explicit headers need the RPC: reported, not silently lost.
    assert [r.name for r in result.refusals] == ["X-Extra"]
    assert "X-Extra" not in dict(result.headers)


async def test_a_failed_update_is_retried_then_the_rpc_carries_the_headers() -> None:
    fake = FakeLiveKit(update_failures=5)
    call, leg = make(fake)
    leg.retry_delay = 0.0
    call.update_attributes(ROUTE)
    result = await call.hangup()
    steps = [step for step, _ in fake.log]
    assert steps == ["update failed"] * 3 + ["end_call", "left"]
    assert fake.log[3][1]["X-RouteValue"] == "Billing"
    assert dict(result.headers)["X-RouteType"] == "skill_transfer"


async def test_unsafe_values_never_reach_the_participant() -> None:
    fake = FakeLiveKit()
    call, _ = make(fake)
    call.update_attributes({**ROUTE, "five9.route_value": "Billing\r\nX-Evil: 1"})
    result = await call.hangup()
    written = fake.log[0][1]
    assert "five9.route_value" not in written and "five9.route_value" not in fake.attributes
    assert [r.name for r in result.refusals] == ["X-RouteValue"]
    assert "CR" in result.refusals[0].reason

    # Without the trunk, a control character in any attribute is still withheld.
    fake2 = FakeLiveKit()
    call2, _ = make(fake2, trunk=False)
    call2.update_attributes({"notes": "a\nb", "five9.route_type": "hangup"})
    await call2.hangup()
    assert fake2.log[0][1] == {"five9.route_type": "hangup"}


async def test_deleted_attributes_are_deleted_on_the_participant() -> None:
    fake = FakeLiveKit()
    call, _ = make(fake)
    call.update_attributes({"five9.call_id": ""})
    await call.hangup()
    assert fake.log[0] == ("update", {"five9.call_id": ""})


async def test_caller_leaving_first_is_not_sent_and_nothing_is_called() -> None:
    fake = FakeLiveKit()
    call, leg = make(fake)
    room = FakeRoom()
    unbind = bind_room(room, call, leg)
    room.emit("participant_disconnected", FakeParticipant("sip_5550100", {}))
    assert call.ended
    result = await call.hangup()
    assert (result.ended_by, result.delivery) == (EndedBy.CALLER, Delivery.NOT_SENT)
    assert fake.log == []
    unbind()


class FakeRoom(rtc.EventEmitter[str]):
    """FAKE of ``rtc.Room``'s events (LiveKit's SDK emitter, no connection)."""


async def test_room_events_reach_the_call() -> None:
    fake = FakeLiveKit()
    call, leg = make(fake)
    room = FakeRoom()
    unbind = bind_room(room, call, leg)
    keys: list[str] = []
    call.on("dtmf", keys.append)
    me = FakeParticipant("sip_5550100", {})
    other = FakeParticipant("sip_other", {})
    room.emit("sip_dtmf_received", rtc.SipDTMF(code=1, digit="1", participant=me))
    room.emit("sip_dtmf_received", rtc.SipDTMF(code=2, digit="2", participant=other))
    room.emit("participant_attributes_changed", {"five9.call_id": ""}, me)
    room.emit("participant_disconnected", other)
    assert keys == ["1"] and not call.ended
    assert "five9.call_id" not in leg.remote
    unbind()
    room.emit("sip_dtmf_received", rtc.SipDTMF(code=3, digit="3", participant=me))
    assert keys == ["1"]


def test_find_sip_participant() -> None:
    agent = FakeParticipant("agent", {}, kind=4)
    sip = FakeParticipant("sip_1", {}, kind=3)
    legacy = FakeParticipant("sip_2", {"sip.callID": "SCL_x"}, kind=0)
    assert find_sip_participant([agent, sip]) is sip
    assert find_sip_participant([agent, legacy]) is legacy
    assert find_sip_participant([agent]) is None


@pytest.mark.parametrize("status", ["ringing", "active"])
def test_call_state_follows_sip_call_status(status: str) -> None:
    participant = FakeParticipant("sip_5550100", {**FIVE9, "sip.callStatus": status})
    call, _ = sip_participant_call(participant, room="r", server=FakeLiveKit())
    assert call.attributes["sip.callStatus"] == status
    assert call.state.value == ("ringing" if status == "ringing" else "active")
