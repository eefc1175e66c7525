"""The LiveKit-mode handback code against byeline's own LiveKit API (real, no fakes).

The call handle a LiveKit worker uses (:mod:`byeline.livekit.call_handle`) finds the SIP
participant with ``ListParticipants``, reads the Five9 context from its attributes, and the
ordinary :func:`byeline.agent.handback.handback` runs on it: ``UpdateParticipant`` (awaited),
then, without a room to send the ``lk.sip.EndCall`` RPC in, ``RemoveParticipant``. SIPp, as
Five9, checks the BYE's routing headers.
"""

from __future__ import annotations

import json

from e2e_harness import ROUTES, TRUNK
from livekit.protocol import room as lk_room
from livekit_harness import LiveKitServed, create_five9_trunk, place_call, wait_room, why

from byeline.agent.handback import handback
from byeline.agent.routes import InputMode, RouteDecision, load_routes
from byeline.edge.call import Delivery, EndedBy
from byeline.edge.trunk import load_trunk
from byeline.livekit.call_handle import LiveKitRoomApi, find_sip_participant, sip_participant_call


async def test_handback_through_the_livekit_call_handle(lk_serve: LiveKitServed) -> None:
    lkapi = lk_serve.lkapi
    await create_five9_trunk(lkapi)
    sipp = place_call(lk_serve.tmp / "sipp", lk_serve.served)
    [room] = (await wait_room(lkapi)).rooms
    listed = await lkapi.room.list_participants(lk_room.ListParticipantsRequest(room=room.name))
    participant = find_sip_participant(listed.participants)
    assert participant is not None

    call, leg = sip_participant_call(
        participant, room=room.name, server=LiveKitRoomApi(lkapi.room), trunk=load_trunk(TRUNK)
    )
    assert call.call_id.startswith("SCL_") and call.caller == "5550100"
    assert call.attributes["five9.call_id"].startswith("3005550100")  # from X-CallID

    routes = load_routes(ROUTES)
    billing = routes.by_name("billing")
    assert billing is not None
    decision = RouteDecision(route=billing, input_mode=InputMode.DTMF, attempts=1, intent="billing")
    result = await handback(call, decision, routes, play_goodbye=False)

    assert leg.steps == ["update", "remove", "left"]
    assert (result.ended_by, result.delivery) == (EndedBy.AGENT, Delivery.PENDING)
    assert dict(result.headers)["X-RouteValue"] == "Billing"

    outcome = await sipp
    assert outcome.ok, why(outcome)
    [bye] = outcome.received_byes
    assert bye["X-RouteType"] == "skill_transfer"
    assert bye["X-RouteValue"] == "Billing"
    assert bye["X-RouteReason"] == "caller asked for billing"
    meta = json.loads(bye["X-MetaData"])
    assert meta["route"] == "billing" and meta["input_mode"] == "dtmf"
    assert meta["five9_call_id"] == call.attributes["five9.call_id"]
    assert dict(result.headers) == bye  # what the handle expected is what crossed the wire
