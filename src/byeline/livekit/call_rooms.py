"""byeline's calls seen as LiveKit rooms: each call is a SIP participant in a room.

The room is named as LiveKit's dispatch would name it (``EvaluateDispatchRule``, mirrored in
:func:`byeline.edge.trunk.room_name`) when a dispatch rule took the call; the random part
LiveKit adds is the random part of byeline's call id, so the name is stable for the call's
life. Without a rule the room is ``call-<call id>``. A direct rule puts every call it takes in
one room, as on LiveKit; individual rules (the Five9 example) give one room per call.

The participant is the caller as LiveKit's SIP service shows it: identity ``sip_<caller>``
(hashed with ``hide_phone_number``), name ``Phone <caller>``, kind ``SIP``, the call's
attributes, the rule's metadata.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable

from livekit.protocol import models

from ..edge import attributes as attrs
from ..edge.call import Call, CallState
from ..edge.server import SipEdge
from ..edge.trunk import DispatchRule, room_name

__all__ = ["CallRooms"]


class CallRooms:
    """The rooms and SIP participants of the calls in progress on ``edge``."""

    def __init__(self, edge: SipEdge) -> None:
        self.edge = edge
        self._retired: dict[str, DispatchRule] = {}
        self._first_seen: dict[str, float] = {}
        self._names: dict[str, str] = {}  # call id -> participant name set by UpdateParticipant
        self._metadata: dict[str, str] = {}  # call id -> metadata set by UpdateParticipant

    # -- rules, including those deleted while their calls go on ------------------------------

    def retire(self, rules: Iterable[DispatchRule]) -> None:
        """Keep deleted or replaced rules known, so their calls keep their room names."""
        for rule in rules:
            self._retired[rule.id] = rule

    def rule_of(self, call: Call) -> DispatchRule | None:
        """The dispatch rule that took ``call`` (``sip.ruleID``), if any."""
        rule_id = call.attributes.get(attrs.ATTR_RULE_ID, "")
        if not rule_id:
            return None
        for rule in self.edge.dispatch or ():
            if rule.id == rule_id:
                return rule
        return self._retired.get(rule_id)

    # -- names --------------------------------------------------------------------------------

    def room_of(self, call: Call) -> str:
        """The room ``call`` is in."""
        rule = self.rule_of(call)
        if rule is None:
            return f"call-{call.call_id}"
        suffix = call.call_id.removeprefix("SCL_")
        try:
            return room_name(rule, call.caller, call.callee, suffix)
        except ValueError:
            return f"call-{call.call_id}"

    def identity_of(self, call: Call) -> str:
        """The SIP participant's identity."""
        rule = self.rule_of(call)
        hide = rule.hide_phone_number if rule is not None else False
        return attrs.participant_identity(call.caller, hide_phone_number=hide)

    # -- state ----------------------------------------------------------------------------------

    def rooms(self) -> dict[str, list[Call]]:
        """Room name → the calls in it, for every call in progress (oldest room first)."""
        calls = self.edge.calls
        now = time.time()
        live = {c.call_id for c in calls}
        for call_id in list(self._first_seen):
            if call_id not in live:
                self._first_seen.pop(call_id, None)
                self._names.pop(call_id, None)
                self._metadata.pop(call_id, None)
        out: dict[str, list[Call]] = {}
        for call in calls:
            self._first_seen.setdefault(call.call_id, now)
            out.setdefault(self.room_of(call), []).append(call)
        return out

    def find(self, room: str, identity: str) -> Call | None:
        """The call whose participant ``identity`` is in ``room``."""
        for call in self.rooms().get(room, []):
            if self.identity_of(call) == identity:
                return call
        return None

    def set_name(self, call: Call, name: str) -> None:
        """The participant name UpdateParticipant gave."""
        self._names[call.call_id] = name

    def set_metadata(self, call: Call, metadata: str) -> None:
        """The participant metadata UpdateParticipant gave."""
        self._metadata[call.call_id] = metadata

    # -- LiveKit messages ---------------------------------------------------------------------

    def room_info(self, name: str, calls: list[Call]) -> models.Room:
        """The ``livekit.Room`` of ``name``."""
        started = min((self._first_seen.get(c.call_id, time.time()) for c in calls), default=0.0)
        return models.Room(
            sid="RM_" + hashlib.sha256(name.encode()).hexdigest()[:12],
            name=name,
            creation_time=int(started),
            creation_time_ms=int(started * 1000),
            num_participants=len(calls),
            num_publishers=len(calls),
            metadata="",
        )

    def participant_info(self, call: Call) -> models.ParticipantInfo:
        """The ``livekit.ParticipantInfo`` of the call's SIP participant."""
        rule = self.rule_of(call)
        hide = rule.hide_phone_number if rule is not None else False
        joined = self._first_seen.get(call.call_id, time.time())
        state = (
            models.ParticipantInfo.State.JOINED
            if call.state is CallState.RINGING
            else models.ParticipantInfo.State.ACTIVE
        )
        return models.ParticipantInfo(
            sid="PA_" + call.call_id.removeprefix("SCL_"),
            identity=self.identity_of(call),
            name=self._names.get(
                call.call_id, attrs.participant_name(call.caller, hide_phone_number=hide)
            ),
            state=state,
            metadata=self._metadata.get(call.call_id, rule.metadata if rule else ""),
            joined_at=int(joined),
            joined_at_ms=int(joined * 1000),
            is_publisher=True,
            kind=models.ParticipantInfo.Kind.SIP,
            attributes=call.attributes,
        )
