"""The ``Call`` the routing agent sees when it runs on a LiveKit deployment.

On LiveKit the caller is a SIP participant in a room and LiveKit's SIP service owns the SIP
leg. :func:`sip_participant_call` builds a plain :class:`byeline.edge.call.Call` from that
participant (its identity and attributes: the Five9 context ``headers_to_attributes`` put
there), whose controller is a :class:`LiveKitSipLeg` instead of byeline's SIP edge. The agent
code is the same on both: ``attributes``, ``update_attributes``, ``hangup``.

``hangup()`` follows the safe order (DESIGN.md; LiveKit issue #404 lost headers here):

1. the attribute changes are written to the SIP participant with ``UpdateParticipant`` and
   AWAITED (retried a few times), so LiveKit's SIP service maps the final attributes through
   the trunk's ``attributes_to_headers`` when it builds the BYE;
2. the SIP leg is ended: the ``lk.sip.EndCall`` participant RPC, with the explicit headers,
   where the deployment's SIP service registers it; else ``RemoveParticipant`` (explicit headers
   cannot be sent that way: they are recorded as refused);
3. it waits until the SIP participant has left. The room is never deleted by byeline: LiveKit
   closes it once empty, after the BYE has gone.

byeline's header guard runs here too: an attribute value with CR, LF, NUL or another control
character (or, when the trunk is known, one its mapping would refuse) is never written to the
participant, so LiveKit, which sends attribute values unchecked, cannot put it on the BYE.

The BYE's response reaches LiveKit's SIP service, not the agent: the result's delivery is
``pending`` (see LiveKit's SIP call logs), ``not_sent`` when the caller left first.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Protocol, TypeVar

from livekit import api, rtc
from livekit.api.room_service import RoomService
from livekit.protocol import room as lk_room

from ..edge import attributes as attrs
from ..edge.call import Call, CallResult, CallState, Delivery, EndedBy, HeaderRefusal
from ..edge.trunk import Trunk

__all__ = [
    "END_CALL_RPC",
    "LiveKitRoomApi",
    "LiveKitServer",
    "LiveKitSipLeg",
    "SipParticipant",
    "find_sip_participant",
    "sip_participant_call",
]

log = logging.getLogger("byeline.livekit")

#: The participant RPC LiveKit's SIP service registers on a SIP participant (``livekit/sip``
#: ``pkg/sip/rpc.go``): JSON ``{"headers": {...}}``, ends the call with a BYE carrying them.
END_CALL_RPC = "lk.sip.EndCall"

#: ``ParticipantInfo.Kind.SIP`` and ``rtc.ParticipantKind.PARTICIPANT_KIND_SIP``: both 3.
SIP_KIND = 3

#: Attributes LiveKit's SIP service owns; the agent never writes them back.
_SERVICE_PREFIX = "sip."


class SipParticipant(Protocol):
    """What is read from a SIP participant (``rtc.RemoteParticipant`` or ``ParticipantInfo``)."""

    @property
    def identity(self) -> str: ...

    @property
    def attributes(self) -> Mapping[str, str]: ...

    @property
    def kind(self) -> int: ...


class LiveKitServer(Protocol):
    """The LiveKit calls a LiveKit-mode call makes. :class:`LiveKitRoomApi` is the real one."""

    async def update_attributes(
        self, room: str, identity: str, attributes: Mapping[str, str]
    ) -> Mapping[str, str]:
        """``UpdateParticipant``: set (``""`` deletes); returns the participant's attributes."""
        ...

    async def end_call(self, identity: str, headers: Mapping[str, str]) -> bool:
        """The ``lk.sip.EndCall`` RPC; ``False`` when the deployment does not have it."""
        ...

    async def remove_participant(self, room: str, identity: str) -> None:
        """``RemoveParticipant`` (LiveKit's SIP service then sends the BYE)."""
        ...

    async def wait_left(self, room: str, identity: str, timeout: float) -> bool:
        """Wait until the participant has left the room; ``False`` on timeout."""
        ...


class LiveKitRoomApi:
    """:class:`LiveKitServer` on LiveKit's RoomService client and, in a worker, the room.

    ``local`` is the agent's own participant (for the RPC) and ``room`` the connected room (for
    the participant's departure); without them, the RPC is not tried and departure is polled
    with ``ListParticipants``.
    """

    def __init__(
        self,
        rooms: RoomService,
        *,
        room: rtc.Room | None = None,
        rpc_timeout: float = 10.0,
        poll: float = 0.2,
    ) -> None:
        self.rooms = rooms
        self.room = room
        self.rpc_timeout = rpc_timeout
        self.poll = poll

    async def update_attributes(
        self, room: str, identity: str, attributes: Mapping[str, str]
    ) -> Mapping[str, str]:
        info = await self.rooms.update_participant(
            lk_room.UpdateParticipantRequest(
                room=room, identity=identity, attributes=dict(attributes)
            )
        )
        return dict(info.attributes)

    async def end_call(self, identity: str, headers: Mapping[str, str]) -> bool:
        if self.room is None:
            return False
        try:
            await self.room.local_participant.perform_rpc(
                destination_identity=identity,
                method=END_CALL_RPC,
                payload=json.dumps({"headers": dict(headers)}),
                response_timeout=self.rpc_timeout,
            )
        except rtc.RpcError as exc:
            if exc.code == rtc.RpcError.ErrorCode.UNSUPPORTED_METHOD:
                return False  # an older SIP service: fall back to RemoveParticipant
            raise
        return True

    async def remove_participant(self, room: str, identity: str) -> None:
        try:
            await self.rooms.remove_participant(
                lk_room.RoomParticipantIdentity(room=room, identity=identity)
            )
        except api.ServerError as exc:
            if exc.code != api.ServerErrorCode.NOT_FOUND:
                raise  # not found: already gone

    async def wait_left(self, room: str, identity: str, timeout: float) -> bool:
        if self.room is not None:
            return await _wait_left_room(self.room, identity, timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                listed = await self.rooms.list_participants(
                    lk_room.ListParticipantsRequest(room=room)
                )
            except api.ServerError as exc:
                if exc.code == api.ServerErrorCode.NOT_FOUND:
                    return True  # the room itself is gone
                raise
            if all(p.identity != identity for p in listed.participants):
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(self.poll)


async def _wait_left_room(room: rtc.Room, identity: str, timeout: float) -> bool:
    if identity not in room.remote_participants:
        return True
    left: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_left(participant: rtc.RemoteParticipant) -> None:
        if participant.identity == identity and not left.done():
            left.set_result(None)

    room.on("participant_disconnected", on_left)
    try:
        await asyncio.wait_for(left, timeout)
        return True
    except TimeoutError:
        return False
    finally:
        room.off("participant_disconnected", on_left)


_P = TypeVar("_P", bound=SipParticipant)


def find_sip_participant(participants: Iterable[_P]) -> _P | None:
    """The first SIP participant (kind SIP, or carrying ``sip.callID``)."""
    for participant in participants:
        if participant.kind == SIP_KIND or attrs.ATTR_CALL_ID in participant.attributes:
            return participant
    return None


def _control_character(value: str) -> str | None:
    for ch in value:
        code = ord(ch)
        if code == 0x09 or 0x20 <= code <= 0x7E or code >= 0xA0:
            continue
        return {0x0D: "CR", 0x0A: "LF", 0x00: "NUL"}.get(code, f"U+{code:04X}")
    return None


class LiveKitSipLeg:
    """The controller of a LiveKit-mode :class:`Call` (what ``hangup()`` does on LiveKit).

    ``trunk``, when given (the same trunk file the deployment uses), lets the guard check
    exactly the headers the BYE will carry and lets the result list them.
    """

    def __init__(
        self,
        server: LiveKitServer,
        *,
        room: str,
        identity: str,
        remote_attributes: Mapping[str, str],
        trunk: Trunk | None = None,
        update_attempts: int = 3,
        retry_delay: float = 0.2,
        leave_timeout: float = 10.0,
    ) -> None:
        self.server = server
        self.room = room
        self.identity = identity
        self.remote: dict[str, str] = dict(remote_attributes)
        self.trunk = trunk
        self.update_attempts = update_attempts
        self.retry_delay = retry_delay
        self.leave_timeout = leave_timeout
        self.steps: list[str] = []
        """What was done, in order (``update``, ``end_call``, ``remove``, ``left``), for logs."""

    # -- events from the room -------------------------------------------------------------------

    def remote_attributes_changed(self, changed: Mapping[str, str]) -> None:
        """LiveKit told us the participant's attributes changed (``""`` deleted)."""
        for key, value in changed.items():
            if value == "":
                self.remote.pop(key, None)
            else:
                self.remote[key] = value

    def caller_left(self, call: Call) -> None:
        """The SIP participant left before any hangup of ours: the caller hung up first."""
        if call.result is None and call.state is not CallState.ENDING:
            call.emit("caller_hangup")
            call._finish(CallResult(ended_by=EndedBy.CALLER, delivery=Delivery.NOT_SENT))

    # -- hangup ---------------------------------------------------------------------------------

    def _changes(self, current: Mapping[str, str]) -> tuple[dict[str, str], list[HeaderRefusal]]:
        """What to write to the participant so its attributes equal ``current``, guarded."""
        mapping = self.trunk.attributes_to_headers if self.trunk is not None else {}
        changes: dict[str, str] = {}
        refusals: list[HeaderRefusal] = []
        for key, value in current.items():
            if key.startswith(_SERVICE_PREFIX) or self.remote.get(key) == value:
                continue
            header = mapping.get(key)
            if header is not None:
                try:
                    attrs.check_header(header, value)
                except attrs.HeaderRefused as exc:
                    refusals.append(HeaderRefusal(header, exc.reason))
                    value = ""
            elif (bad := _control_character(value)) is not None:
                refusals.append(HeaderRefusal(f"attribute {key}", f"value contains {bad}"))
                value = ""
            if value != "" or key in self.remote:
                changes[key] = value
        for key in self.remote:
            if not key.startswith(_SERVICE_PREFIX) and key not in current:
                changes[key] = ""
        return changes, refusals

    async def _push(self, changes: Mapping[str, str]) -> bool:
        for attempt in range(self.update_attempts):
            try:
                now = await self.server.update_attributes(self.room, self.identity, changes)
            except Exception as exc:
                log.warning(
                    "%s: attribute update failed (attempt %d of %d): %s",
                    self.identity,
                    attempt + 1,
                    self.update_attempts,
                    exc,
                )
                await asyncio.sleep(self.retry_delay * 2**attempt)
                continue
            self.remote = dict(now)
            self.steps.append("update")
            return True
        return False

    async def hangup_call(
        self, call: Call, headers: list[tuple[str, str]], ended_by: EndedBy
    ) -> CallResult:
        """Attributes onto the SIP participant (awaited), then end the SIP leg, then wait."""
        if call.result is not None:
            return call.result
        current = call.attributes
        changes, refusals = self._changes(current)
        explicit, refused = attrs.merge_headers([], headers)
        refusals += [HeaderRefusal(r.name, r.reason) for r in refused]
        pushed = True
        if changes:
            pushed = await self._push(changes)
            if not pushed:
                log.error(
                    "%s: routing attributes could not be written to the SIP participant; "
                    "the BYE will lack them",
                    call.call_id,
                )
        if call.result is not None:  # the caller left while we wrote
            return call.result
        call._set_status(CallState.ENDING)
        mapped: list[tuple[str, str]] = []
        if self.trunk is not None:
            sent = {**current, **changes}
            mapped, _ = attrs.outgoing_headers(self.trunk, sent, stage="bye")
        rpc_headers = list(explicit)
        if not pushed and mapped:
            # The update never arrived: the RPC can still carry the mapped headers itself.
            rpc_headers, _ = attrs.merge_headers(mapped, explicit)
        ended = False
        try:
            ended = await self.server.end_call(self.identity, dict(rpc_headers))
        except Exception as exc:
            log.warning(
                "%s: %s failed: %s; removing the participant", call.call_id, END_CALL_RPC, exc
            )
        if ended:
            self.steps.append("end_call")
        else:
            if explicit:
                refusals += [
                    HeaderRefusal(name, f"needs {END_CALL_RPC}, which this deployment lacks")
                    for name, _ in explicit
                ]
                explicit = []
            try:
                await self.server.remove_participant(self.room, self.identity)
                self.steps.append("remove")
            except Exception as exc:
                log.error("%s: cannot remove the SIP participant: %s", call.call_id, exc)
                result = CallResult(
                    ended_by=ended_by, delivery=Delivery.NOT_SENT, refusals=refusals
                )
                call._finish(result)
                return result
        if await self.server.wait_left(self.room, self.identity, self.leave_timeout):
            self.steps.append("left")
        else:
            log.warning(
                "%s: the SIP participant has not left after %.0f s",
                call.call_id,
                self.leave_timeout,
            )
        carried = explicit if ended else []
        # Without the update (and without the RPC carrying the mapped headers) only the
        # explicit headers can be on the BYE.
        reached = pushed or (ended and bool(mapped))
        on_bye = attrs.merge_headers(mapped, carried)[0] if reached else carried
        result = CallResult(
            ended_by=ended_by, delivery=Delivery.PENDING, headers=on_bye, refusals=refusals
        )
        call._finish(result)
        return result


def sip_participant_call(
    participant: SipParticipant,
    *,
    room: str,
    server: LiveKitServer,
    trunk: Trunk | None = None,
    leave_timeout: float = 10.0,
) -> tuple[Call, LiveKitSipLeg]:
    """The agent's :class:`Call` for a SIP participant of ``room``, and its controller.

    The call id is the participant's ``sip.callID`` (LiveKit's ``SCL_...``), the caller
    ``sip.phoneNumber`` and the callee ``sip.trunkPhoneNumber``.
    """
    attributes = dict(participant.attributes)
    leg = LiveKitSipLeg(
        server,
        room=room,
        identity=participant.identity,
        remote_attributes=attributes,
        trunk=trunk,
        leave_timeout=leave_timeout,
    )
    call = Call(
        call_id=attributes.get(attrs.ATTR_CALL_ID) or participant.identity,
        identity=participant.identity,
        attributes=attributes,
        controller=leg,
        caller=attributes.get(attrs.ATTR_PHONE_NUMBER, ""),
        callee=attributes.get(attrs.ATTR_TRUNK_PHONE_NUMBER, ""),
    )
    status = attributes.get(attrs.ATTR_CALL_STATUS, attrs.CALL_STATUS_ACTIVE)
    if status != attrs.CALL_STATUS_RINGING:
        call._set_status(CallState.ACTIVE)
        call._attributes[attrs.ATTR_CALL_STATUS] = status  # as LiveKit reported it
    return call, leg
