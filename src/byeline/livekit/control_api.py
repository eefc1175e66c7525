"""LiveKit's control API on ``byeline serve --http``: what is mounted, and where.

``POST /twirp/livekit.RoomService/<Method>`` and ``POST /twirp/livekit.SIP/<Method>``, with
LiveKit access tokens (:mod:`.tokens`), not byeline's API bearer token. Point a LiveKit server
SDK or ``lk`` at ``http://HOST:PORT`` with the same ``LIVEKIT_API_KEY`` and
``LIVEKIT_API_SECRET`` byeline was started with.

What byeline serves, and what it does not, is listed in :data:`SERVED` and :data:`NOT_SERVED`
(docs/LIVEKIT.md has the same table); a method not served answers Twirp's ``bad_route``.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from ..edge.server import SipEdge
from .call_rooms import CallRooms
from .room_service import RoomService
from .sip_service import SipService
from .tokens import ApiKeys, TokenCheck
from .twirp import PREFIX, twirp_handler

__all__ = ["NOT_SERVED", "SERVED", "add_control_api"]

#: The LiveKit API methods byeline serves.
SERVED: Final = {
    "livekit.RoomService": (
        "ListRooms",
        "ListParticipants",
        "GetParticipant",
        "UpdateParticipant",
        "RemoveParticipant",
        "DeleteRoom",
    ),
    "livekit.SIP": (
        "CreateSIPInboundTrunk",
        "ListSIPInboundTrunk",
        "GetSIPInboundTrunk",
        "UpdateSIPInboundTrunk",
        "DeleteSIPTrunk",
        "CreateSIPDispatchRule",
        "ListSIPDispatchRule",
        "UpdateSIPDispatchRule",
        "DeleteSIPDispatchRule",
    ),
}

#: LiveKit API methods byeline does not serve, and why (they answer ``bad_route``).
NOT_SERVED: Final = {
    "livekit.RoomService": {
        "CreateRoom": "rooms exist only while a call is in them",
        "UpdateRoomMetadata": "a call's room has no metadata of its own",
        "MutePublishedTrack": "the caller's audio is RTP, not a LiveKit track",
        "UpdateSubscriptions": "no WebRTC subscriptions",
        "SendData": "no data channel to the caller",
        "ForwardParticipant": "no other room to forward to",
        "MoveParticipant": "no other room to move to",
    },
    "livekit.SIP": {
        "CreateSIPOutboundTrunk": "byeline answers Five9; it does not dial out",
        "UpdateSIPOutboundTrunk": "no outbound trunks",
        "ListSIPOutboundTrunk": "no outbound trunks",
        "GetSIPOutboundTrunk": "no outbound trunks",
        "ListSIPTrunk": "deprecated in LiveKit; use ListSIPInboundTrunk",
        "CreateSIPTrunk": "deprecated in LiveKit; use CreateSIPInboundTrunk",
        "CreateSIPParticipant": "no outbound calls",
        "TransferSIPParticipant": "Five9 takes no REFER from the AI side: hand back with a BYE",
    },
    "livekit.Egress, livekit.Ingress, livekit.AgentDispatchService": {
        "*": "no media server: byeline's agent runs in process",
    },
}


def add_control_api(app: web.Application, edge: SipEdge, keys: ApiKeys | None) -> None:
    """Mount LiveKit's RoomService and SIP service for ``edge`` on ``app``.

    With ``keys`` ``None`` the routes are there but every request is refused
    (``unauthenticated``): the API is never open.
    """
    tokens = TokenCheck(keys)
    rooms = CallRooms(edge)
    room_service = RoomService(rooms, tokens)
    sip_service = SipService(edge, rooms, tokens)
    handler = twirp_handler(
        {room_service.name: room_service.methods(), sip_service.name: sip_service.methods()}
    )
    app.router.add_route("*", PREFIX + "{service}/{method}", handler)
