"""``livekit.RoomService`` over byeline's calls (see :mod:`.call_rooms` for the mapping).

Served: ``ListRooms``, ``ListParticipants``, ``GetParticipant``, ``UpdateParticipant``,
``RemoveParticipant``, ``DeleteRoom``. ``UpdateParticipant`` changes the call's attributes with
LiveKit's semantics (``""`` deletes a key) before it answers. ``RemoveParticipant`` and
``DeleteRoom`` end the call with a BYE built from the attributes as they are then (so every
update that was answered is on it) and answer once the BYE has its final response or timed
out: a room is never gone before its BYE has left.
"""

from __future__ import annotations

import asyncio
import logging

from livekit.api.access_token import Claims
from livekit.protocol import models
from livekit.protocol import room as lk_room

from ..edge.call import Call, CallState, EndedBy
from .call_rooms import CallRooms
from .tokens import TokenCheck, require_room_admin, require_room_create, require_room_list
from .twirp import Method, TwirpError

__all__ = ["RoomService"]

log = logging.getLogger("byeline.livekit")

#: LiveKit's limits on participant attributes (``livekit-server`` ``pkg/rtc/participant.go``).
MAX_ATTRIBUTES_BYTES = 64 * 1024


class RoomService:
    """The RoomService methods byeline serves."""

    name = "livekit.RoomService"

    def __init__(self, rooms: CallRooms, tokens: TokenCheck) -> None:
        self.rooms = rooms
        self.tokens = tokens

    def methods(self) -> dict[str, Method]:
        """Twirp method name → :class:`Method`."""
        return {
            "ListRooms": Method(lk_room.ListRoomsRequest, self.list_rooms),
            "ListParticipants": Method(lk_room.ListParticipantsRequest, self.list_participants),
            "GetParticipant": Method(lk_room.RoomParticipantIdentity, self.get_participant),
            "UpdateParticipant": Method(lk_room.UpdateParticipantRequest, self.update_participant),
            "RemoveParticipant": Method(lk_room.RoomParticipantIdentity, self.remove_participant),
            "DeleteRoom": Method(lk_room.DeleteRoomRequest, self.delete_room),
        }

    def _claims(self, authorization: str | None) -> Claims:
        return self.tokens.claims(authorization)

    def _participant(self, room: str, identity: str) -> Call:
        call = self.rooms.find(room, identity)
        if call is None:
            if room not in self.rooms.rooms():
                raise TwirpError("not_found", f"room {room!r} not found")
            raise TwirpError("not_found", f"participant {identity!r} not found in room {room!r}")
        return call

    async def list_rooms(
        self, req: lk_room.ListRoomsRequest, authorization: str | None
    ) -> lk_room.ListRoomsResponse:
        """Every room with a call in progress (``names`` filters)."""
        require_room_list(self._claims(authorization))
        wanted = set(req.names)
        return lk_room.ListRoomsResponse(
            rooms=[
                self.rooms.room_info(name, calls)
                for name, calls in self.rooms.rooms().items()
                if not wanted or name in wanted
            ]
        )

    async def list_participants(
        self, req: lk_room.ListParticipantsRequest, authorization: str | None
    ) -> lk_room.ListParticipantsResponse:
        """The SIP participants of ``room``."""
        require_room_admin(self._claims(authorization), req.room)
        calls = self.rooms.rooms().get(req.room)
        if calls is None:
            raise TwirpError("not_found", f"room {req.room!r} not found")
        return lk_room.ListParticipantsResponse(
            participants=[self.rooms.participant_info(c) for c in calls]
        )

    async def get_participant(
        self, req: lk_room.RoomParticipantIdentity, authorization: str | None
    ) -> models.ParticipantInfo:
        """One SIP participant."""
        require_room_admin(self._claims(authorization), req.room)
        return self.rooms.participant_info(self._participant(req.room, req.identity))

    async def update_participant(
        self, req: lk_room.UpdateParticipantRequest, authorization: str | None
    ) -> models.ParticipantInfo:
        """Set the call's attributes (``""`` deletes), name or metadata; answered once applied."""
        require_room_admin(self._claims(authorization), req.room)
        call = self._participant(req.room, req.identity)
        if req.HasField("permission"):
            raise TwirpError(
                "unimplemented",
                "byeline's SIP participants have no track permissions to update",
            )
        changes = dict(req.attributes)
        if changes:
            merged = {**call.attributes, **changes}
            size = sum(len(k.encode()) + len(v.encode()) for k, v in merged.items())
            if size > MAX_ATTRIBUTES_BYTES:
                raise TwirpError(
                    "invalid_argument",
                    f"attributes would take {size} bytes (LiveKit's limit is "
                    f"{MAX_ATTRIBUTES_BYTES})",
                )
            if call.ended:
                raise TwirpError("not_found", f"participant {req.identity!r} has left")
            if call.state is CallState.ENDING:
                # Never answer "applied" for attributes the BYE can no longer carry.
                raise TwirpError(
                    "failed_precondition",
                    f"participant {req.identity!r} is leaving: its BYE was already built",
                )
            call.update_attributes(changes)
            log.info("%s: attributes updated by the LiveKit API: %s", call.call_id, sorted(changes))
        if req.name:
            self.rooms.set_name(call, req.name)
        if req.metadata:
            self.rooms.set_metadata(call, req.metadata)
        return self.rooms.participant_info(call)

    async def remove_participant(
        self, req: lk_room.RoomParticipantIdentity, authorization: str | None
    ) -> lk_room.RemoveParticipantResponse:
        """End the call: BYE with the mapped headers; answered after the BYE's response."""
        require_room_admin(self._claims(authorization), req.room)
        call = self._participant(req.room, req.identity)
        result = await call.hangup(ended_by=EndedBy.AGENT)
        log.info("%s: removed by the LiveKit API: delivery %s", call.call_id, result.delivery.value)
        return lk_room.RemoveParticipantResponse()

    async def delete_room(
        self, req: lk_room.DeleteRoomRequest, authorization: str | None
    ) -> lk_room.DeleteRoomResponse:
        """End every call in the room (each BYE carries its call's mapped headers)."""
        require_room_create(self._claims(authorization))
        calls = self.rooms.rooms().get(req.room)
        if calls is None:
            raise TwirpError("not_found", f"room {req.room!r} not found")
        await asyncio.gather(*(c.hangup(ended_by=EndedBy.AGENT) for c in calls))
        log.info("room %s deleted by the LiveKit API (%d calls ended)", req.room, len(calls))
        return lk_room.DeleteRoomResponse()
