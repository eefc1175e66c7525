"""LiveKit's control API on byeline serve, driven by the real livekit-api client.

A trunk is created from a JSON file with ``CreateSIPInboundTrunk`` and listed; SIPp places a
Five9 call on it; the call is a room with one SIP participant (``ListRooms``,
``ListParticipants``); ``UpdateParticipant`` sets the routing attributes; ``DeleteRoom`` ends
the call, and SIPp checks that its BYE carries the four routing headers.
"""

from __future__ import annotations

from livekit.protocol import models
from livekit.protocol import room as lk_room
from livekit.protocol import sip as lk_sip
from livekit_harness import (
    ROUTING,
    ROUTING_HEADERS,
    LiveKitServed,
    create_five9_trunk,
    place_call,
    wait_room,
    why,
)

from byeline.store import CallStore


async def test_trunk_call_update_participant_delete_room(lk_serve: LiveKitServed) -> None:
    lkapi = lk_serve.lkapi
    created = await create_five9_trunk(lkapi)
    assert created.sip_trunk_id.startswith("ST_") and created.name == "Five9 e2e"
    listed = await lkapi.sip.list_inbound_trunk(lk_sip.ListSIPInboundTrunkRequest())
    names = {t.name: t for t in listed.items}
    assert set(names) == {"Five9 e2e", "Five9 from another data center"}
    assert dict(names["Five9 e2e"].attributes_to_headers) == {
        "five9.route_reason": "X-RouteReason",
        "five9.route_type": "X-RouteType",
        "five9.route_value": "X-RouteValue",
        "five9.metadata": "X-MetaData",
    }

    call = place_call(lk_serve.tmp / "sipp", lk_serve.served)
    rooms = await wait_room(lkapi)
    [room] = rooms.rooms
    assert room.name.startswith("call-SCL_") and room.num_participants == 1
    listed_p = await lkapi.room.list_participants(lk_room.ListParticipantsRequest(room=room.name))
    [participant] = listed_p.participants
    assert participant.identity == "sip_5550100"
    assert participant.kind == models.ParticipantInfo.Kind.SIP
    attributes = dict(participant.attributes)
    assert attributes["sip.trunkID"] == created.sip_trunk_id
    assert attributes["five9.campaign"] == "Inbound Support"
    assert attributes["sip.h.x-callani"] == "5550100"

    updated = await lkapi.room.update_participant(
        lk_room.UpdateParticipantRequest(
            room=room.name, identity=participant.identity, attributes=ROUTING
        )
    )
    assert {k: updated.attributes[k] for k in ROUTING} == ROUTING
    await lkapi.room.delete_room(lk_room.DeleteRoomRequest(room=room.name))
    # DeleteRoom answers once the BYE has its response: the room is gone now.
    after = await lkapi.room.list_rooms(lk_room.ListRoomsRequest())
    assert list(after.rooms) == []

    result = await call
    assert result.ok, why(result)
    [bye] = result.received_byes
    assert bye == ROUTING_HEADERS

    await lk_serve.served.stop(10)
    store = CallStore.open(str(lk_serve.served.db))
    try:
        [record] = store.list_calls(limit=5)
        assert (record.ended_by, record.delivery) == ("agent", "delivered")
        assert record.trunk_id == created.sip_trunk_id
    finally:
        store.close()


async def test_delete_trunk_and_dispatch_rule(lk_serve: LiveKitServed) -> None:
    lkapi = lk_serve.lkapi
    created = await create_five9_trunk(lkapi)
    rule = await lkapi.sip.create_dispatch_rule(
        lk_sip.CreateSIPDispatchRuleRequest(
            dispatch_rule=lk_sip.SIPDispatchRuleInfo(
                name="Five9 to voice agent",
                trunk_ids=[created.sip_trunk_id],
                rule=lk_sip.SIPDispatchRule(
                    dispatch_rule_individual=lk_sip.SIPDispatchRuleIndividual(room_prefix="five9")
                ),
                attributes={"five9.entry": "ivr"},
            )
        )
    )
    assert rule.sip_dispatch_rule_id.startswith("SDR_")
    rules = await lkapi.sip.list_dispatch_rule(lk_sip.ListSIPDispatchRuleRequest())
    assert [r.name for r in rules.items] == ["Five9 to voice agent"]

    # A call through the rule is in a room named as LiveKit names it.
    call = place_call(lk_serve.tmp / "sipp", lk_serve.served)
    [room] = (await wait_room(lkapi)).rooms
    assert room.name.startswith("five9_5550100_")
    [p] = (
        await lkapi.room.list_participants(lk_room.ListParticipantsRequest(room=room.name))
    ).participants
    assert p.attributes["five9.entry"] == "ivr"
    assert p.attributes["sip.ruleID"] == rule.sip_dispatch_rule_id

    # Deleting the rule and the trunk does not disturb the call in progress.
    await lkapi.sip.delete_dispatch_rule(
        lk_sip.DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id=rule.sip_dispatch_rule_id)
    )
    deleted = await lkapi.sip.delete_trunk(
        lk_sip.DeleteSIPTrunkRequest(sip_trunk_id=created.sip_trunk_id)
    )
    assert deleted.name == "Five9 e2e"
    assert (await lkapi.sip.list_dispatch_rule(lk_sip.ListSIPDispatchRuleRequest())).items == []
    [same] = (await lkapi.room.list_rooms(lk_room.ListRoomsRequest())).rooms
    assert same.name == room.name

    await lkapi.room.update_participant(
        lk_room.UpdateParticipantRequest(room=room.name, identity=p.identity, attributes=ROUTING)
    )
    await lkapi.room.remove_participant(
        lk_room.RoomParticipantIdentity(room=room.name, identity=p.identity)
    )
    result = await call
    assert result.ok, why(result)
    assert result.received_byes == [ROUTING_HEADERS]
