"""``livekit.SIP`` over byeline's trunks and dispatch rules, changed at run time.

Served: ``CreateSIPInboundTrunk``, ``ListSIPInboundTrunk``, ``GetSIPInboundTrunk``,
``UpdateSIPInboundTrunk`` (whole replacement), ``DeleteSIPTrunk``, ``CreateSIPDispatchRule``,
``ListSIPDispatchRule``, ``UpdateSIPDispatchRule`` (whole replacement),
``DeleteSIPDispatchRule``.

A request is checked exactly as a trunk or dispatch-rule file is (:mod:`byeline.edge.trunk`:
LiveKit's ``Validate()`` plus byeline's stricter rules, then the conflict checks of
``ValidateTrunksIter`` and ``DispatchRuleValidator`` against the others), then the edge's sets
are rebuilt and swapped in one step (:meth:`SipEdge.replace_routing`). Calls in progress keep
the trunk they came in on. New ids are random, in LiveKit's shape (``ST_``, ``SDR_`` + 12).
Changes live until byeline stops: the ``--trunk`` and ``--dispatch`` files are what a restart
loads.

Besides LiveKit's checks, a trunk must map every result attribute of the routes file through
``attributes_to_headers`` (``failed_precondition`` otherwise), the rule ``serve`` applies at
start: an unmapped routing attribute could never reach Five9.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Sequence

from google.protobuf import json_format
from livekit.protocol import sip as lk_sip

from ..edge.server import SipEdge
from ..edge.trunk import (
    DispatchRule,
    DispatchRuleSet,
    Trunk,
    TrunkFileError,
    TrunkSet,
    normalize_number,
    parse_dispatch_rule,
    parse_trunk,
)
from .call_rooms import CallRooms
from .tokens import TokenCheck, require_sip_admin
from .twirp import Method, TwirpError

__all__ = ["SipService", "new_id"]

log = logging.getLogger("byeline.livekit")

_ID_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"  # LiveKit's base57


def new_id(prefix: str) -> str:
    """A random id in LiveKit's shape: ``ST_`` or ``SDR_`` and 12 base57 characters."""
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))


def _problems(exc: TrunkFileError) -> TwirpError:
    return TwirpError("invalid_argument", "; ".join(exc.problems))


class SipService:
    """The SIP methods byeline serves, over one :class:`SipEdge`."""

    name = "livekit.SIP"

    def __init__(self, edge: SipEdge, rooms: CallRooms, tokens: TokenCheck) -> None:
        self.edge = edge
        self.rooms = rooms
        self.tokens = tokens

    def methods(self) -> dict[str, Method]:
        """Twirp method name → :class:`Method`."""
        return {
            "CreateSIPInboundTrunk": Method(
                lk_sip.CreateSIPInboundTrunkRequest, self.create_inbound_trunk
            ),
            "ListSIPInboundTrunk": Method(
                lk_sip.ListSIPInboundTrunkRequest, self.list_inbound_trunk
            ),
            "UpdateSIPInboundTrunk": Method(
                lk_sip.UpdateSIPInboundTrunkRequest, self.update_inbound_trunk
            ),
            "GetSIPInboundTrunk": Method(lk_sip.GetSIPInboundTrunkRequest, self.get_inbound_trunk),
            "DeleteSIPTrunk": Method(lk_sip.DeleteSIPTrunkRequest, self.delete_trunk),
            "CreateSIPDispatchRule": Method(
                lk_sip.CreateSIPDispatchRuleRequest, self.create_dispatch_rule
            ),
            "ListSIPDispatchRule": Method(
                lk_sip.ListSIPDispatchRuleRequest, self.list_dispatch_rule
            ),
            "UpdateSIPDispatchRule": Method(
                lk_sip.UpdateSIPDispatchRuleRequest, self.update_dispatch_rule
            ),
            "DeleteSIPDispatchRule": Method(
                lk_sip.DeleteSIPDispatchRuleRequest, self.delete_dispatch_rule
            ),
        }

    # -- the edge's sets ------------------------------------------------------------------------

    def _swap(self, trunks: Sequence[Trunk], rules: Sequence[DispatchRule]) -> None:
        try:
            trunk_set = TrunkSet(trunks)
            rule_set = DispatchRuleSet(rules) if rules else None
        except TrunkFileError as exc:
            raise _problems(exc) from None
        old_rules = list(self.edge.dispatch or ())
        self.edge.replace_routing(trunk_set, rule_set)
        self.rooms.retire(old_rules)

    def _check_result_mapping(self, trunk: Trunk) -> None:
        mapped = trunk.attributes_to_headers
        missing = [a for a in self.edge.result_attributes if a not in mapped]
        if missing:
            raise TwirpError(
                "failed_precondition",
                f"trunk {trunk.name!r}: attributes_to_headers does not map the routing "
                f"result attribute(s) {', '.join(missing)}; they could never reach Five9",
            )

    def _trunk(self, trunk_id: str) -> Trunk:
        trunk = self.edge.trunks.by_id(trunk_id)
        if trunk is None:
            raise TwirpError("not_found", f"SIP trunk {trunk_id!r} not found")
        return trunk

    def _rule(self, rule_id: str) -> DispatchRule:
        for rule in self.edge.dispatch or ():
            if rule.id == rule_id:
                return rule
        raise TwirpError("not_found", f"SIP dispatch rule {rule_id!r} not found")

    # -- inbound trunks -------------------------------------------------------------------------

    async def create_inbound_trunk(
        self, req: lk_sip.CreateSIPInboundTrunkRequest, authorization: str | None
    ) -> lk_sip.SIPInboundTrunkInfo:
        """Add a trunk, checked as ``byeline trunk validate`` checks a file."""
        require_sip_admin(self.tokens.claims(authorization))
        data = json_format.MessageToDict(req, preserving_proto_field_name=True)
        tid = new_id("ST_")
        try:
            trunk = parse_trunk(data, source="CreateSIPInboundTrunk", trunk_id=tid)
        except TrunkFileError as exc:
            raise _problems(exc) from None
        self._check_result_mapping(trunk)
        self._swap([*self.edge.trunks, trunk], list(self.edge.dispatch or ()))
        log.info("SIP trunk %s (%s) created by the LiveKit API", tid, trunk.name)
        return trunk.info

    async def update_inbound_trunk(
        self, req: lk_sip.UpdateSIPInboundTrunkRequest, authorization: str | None
    ) -> lk_sip.SIPInboundTrunkInfo:
        """Replace a trunk whole (``replace``); field updates (``update``) are not served."""
        require_sip_admin(self.tokens.claims(authorization))
        old = self._trunk(req.sip_trunk_id)
        if req.WhichOneof("action") != "replace":
            raise TwirpError(
                "unimplemented",
                "byeline updates a trunk by replacing it whole (UpdateSIPInboundTrunk "
                "with 'replace'); field updates are not served",
            )
        info = lk_sip.SIPInboundTrunkInfo()
        info.CopyFrom(req.replace)
        info.sip_trunk_id = ""
        data = {"trunk": json_format.MessageToDict(info, preserving_proto_field_name=True)}
        try:
            trunk = parse_trunk(data, source="UpdateSIPInboundTrunk", trunk_id=old.id)
        except TrunkFileError as exc:
            raise _problems(exc) from None
        self._check_result_mapping(trunk)
        trunks = [trunk if t.id == old.id else t for t in self.edge.trunks]
        self._swap(trunks, list(self.edge.dispatch or ()))
        log.info("SIP trunk %s (%s) replaced by the LiveKit API", old.id, trunk.name)
        return trunk.info

    async def list_inbound_trunk(
        self, req: lk_sip.ListSIPInboundTrunkRequest, authorization: str | None
    ) -> lk_sip.ListSIPInboundTrunkResponse:
        """Every trunk (``trunk_ids`` and ``numbers`` filter; one page holds them all)."""
        require_sip_admin(self.tokens.claims(authorization))
        ids = set(req.trunk_ids)
        numbers = {normalize_number(n) for n in req.numbers}
        items = []
        for trunk in self.edge.trunks:
            if ids and trunk.id not in ids:
                continue
            offered = {normalize_number(n) for n in trunk.numbers}
            if numbers and offered and not numbers & offered:
                continue  # a trunk without numbers takes every number
            items.append(trunk.info)
        return lk_sip.ListSIPInboundTrunkResponse(items=items)

    async def get_inbound_trunk(
        self, req: lk_sip.GetSIPInboundTrunkRequest, authorization: str | None
    ) -> lk_sip.GetSIPInboundTrunkResponse:
        """One trunk by id."""
        require_sip_admin(self.tokens.claims(authorization))
        return lk_sip.GetSIPInboundTrunkResponse(trunk=self._trunk(req.sip_trunk_id).info)

    async def delete_trunk(
        self, req: lk_sip.DeleteSIPTrunkRequest, authorization: str | None
    ) -> lk_sip.SIPTrunkInfo:
        """Remove a trunk from what new calls are matched against."""
        require_sip_admin(self.tokens.claims(authorization))
        trunk = self._trunk(req.sip_trunk_id)
        self._swap(
            [t for t in self.edge.trunks if t.id != trunk.id], list(self.edge.dispatch or ())
        )
        log.info("SIP trunk %s (%s) deleted by the LiveKit API", trunk.id, trunk.name)
        info = trunk.info
        return lk_sip.SIPTrunkInfo(
            sip_trunk_id=trunk.id,
            kind=lk_sip.SIPTrunkInfo.TrunkKind.TRUNK_INBOUND,
            inbound_addresses=list(info.allowed_addresses),
            inbound_numbers=list(info.allowed_numbers),
            inbound_username=info.auth_username,
            name=info.name,
            metadata=info.metadata,
        )

    # -- dispatch rules -------------------------------------------------------------------------

    async def create_dispatch_rule(
        self, req: lk_sip.CreateSIPDispatchRuleRequest, authorization: str | None
    ) -> lk_sip.SIPDispatchRuleInfo:
        """Add a dispatch rule (the ``dispatch_rule`` form or the older flat one)."""
        require_sip_admin(self.tokens.claims(authorization))
        data = json_format.MessageToDict(req, preserving_proto_field_name=True)
        rid = new_id("SDR_")
        try:
            rule = parse_dispatch_rule(data, source="CreateSIPDispatchRule", rule_id=rid)
        except TrunkFileError as exc:
            raise _problems(exc) from None
        self._swap(list(self.edge.trunks), [*(self.edge.dispatch or ()), rule])
        log.info("SIP dispatch rule %s (%s) created by the LiveKit API", rid, rule.name)
        return rule.info

    async def update_dispatch_rule(
        self, req: lk_sip.UpdateSIPDispatchRuleRequest, authorization: str | None
    ) -> lk_sip.SIPDispatchRuleInfo:
        """Replace a dispatch rule whole (``replace``)."""
        require_sip_admin(self.tokens.claims(authorization))
        old = self._rule(req.sip_dispatch_rule_id)
        if req.WhichOneof("action") != "replace":
            raise TwirpError(
                "unimplemented",
                "byeline updates a dispatch rule by replacing it whole (UpdateSIPDispatchRule "
                "with 'replace'); field updates are not served",
            )
        info = lk_sip.SIPDispatchRuleInfo()
        info.CopyFrom(req.replace)
        info.sip_dispatch_rule_id = ""
        data = {"dispatch_rule": json_format.MessageToDict(info, preserving_proto_field_name=True)}
        try:
            rule = parse_dispatch_rule(data, source="UpdateSIPDispatchRule", rule_id=old.id)
        except TrunkFileError as exc:
            raise _problems(exc) from None
        rules = [rule if r.id == old.id else r for r in self.edge.dispatch or ()]
        self._swap(list(self.edge.trunks), rules)
        log.info("SIP dispatch rule %s (%s) replaced by the LiveKit API", old.id, rule.name)
        return rule.info

    async def list_dispatch_rule(
        self, req: lk_sip.ListSIPDispatchRuleRequest, authorization: str | None
    ) -> lk_sip.ListSIPDispatchRuleResponse:
        """Every rule (``dispatch_rule_ids`` and ``trunk_ids`` filter)."""
        require_sip_admin(self.tokens.claims(authorization))
        ids = set(req.dispatch_rule_ids)
        trunk_ids = set(req.trunk_ids)
        items = [
            rule.info
            for rule in _rules(self.edge.dispatch)
            if (not ids or rule.id in ids)
            and (not trunk_ids or not rule.trunk_ids or trunk_ids & set(rule.trunk_ids))
        ]
        return lk_sip.ListSIPDispatchRuleResponse(items=items)

    async def delete_dispatch_rule(
        self, req: lk_sip.DeleteSIPDispatchRuleRequest, authorization: str | None
    ) -> lk_sip.SIPDispatchRuleInfo:
        """Remove a dispatch rule; its calls keep their rooms."""
        require_sip_admin(self.tokens.claims(authorization))
        rule = self._rule(req.sip_dispatch_rule_id)
        self._swap(list(self.edge.trunks), [r for r in _rules(self.edge.dispatch) if r is not rule])
        log.info("SIP dispatch rule %s (%s) deleted by the LiveKit API", rule.id, rule.name)
        return rule.info


def _rules(rules: Iterable[DispatchRule] | None) -> list[DispatchRule]:
    return list(rules or ())
