"""``byeline livekit apply``: the trunk and dispatch rule files onto a LiveKit deployment.

The files are the ones ``byeline serve`` takes, read and checked the same way
(:func:`~byeline.edge.trunk.load_trunk`, :func:`~byeline.edge.trunk.load_dispatch_rule`).
Resources are matched BY NAME (LiveKit ids are random, files carry none), so applying twice
changes nothing the second time. For each file the plan says ``create``, ``update`` (a whole
replacement with ``UpdateSIPInboundTrunk`` / ``UpdateSIPDispatchRule``) or ``unchanged``,
with the fields that differ; it is printed before anything changes, and ``--dry-run`` stops
there.

A dispatch rule's ``trunk_ids`` may name the trunk file's byeline id (``ST_`` + hash of its
name, what ``byeline serve`` uses): it is translated to the deployment's id for that trunk.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from google.protobuf import json_format
from livekit import api
from livekit.protocol import sip as lk_sip

from ..edge.trunk import load_dispatch_rule, load_trunk

__all__ = ["ApplyError", "Change", "apply_changes", "plan_changes", "run_apply"]

Action = Literal["create", "update", "unchanged"]
_SECRET_FIELDS = frozenset({"auth_password"})


class ApplyError(Exception):
    """A plan that cannot be made (ambiguous names, a file without a name...)."""


@dataclass
class Change:
    """What applying one file does."""

    kind: Literal["trunk", "dispatch rule"]
    name: str
    action: Action
    desired: Any  # SIPInboundTrunkInfo or SIPDispatchRuleInfo, without an id
    existing_id: str = ""
    diff: list[str] = field(default_factory=list)
    applied_id: str = ""

    def describe(self) -> list[str]:
        """The plan lines for this change."""
        where = f" ({self.existing_id})" if self.existing_id else ""
        lines = [f"{self.kind} {self.name!r}: {self.action}{where}"]
        lines += [f"  {d}" for d in self.diff]
        return lines


def _fields(message: Any) -> dict[str, Any]:
    data: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    data.pop("sip_trunk_id", None)
    data.pop("sip_dispatch_rule_id", None)
    return data


def _show(name: str, value: Any) -> str:
    if name in _SECRET_FIELDS:
        return "(hidden)"
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def field_diff(desired: Mapping[str, Any], existing: Mapping[str, Any] | None) -> list[str]:
    """``+ field: value``, ``- field: value`` and ``~ field: old → new`` lines, sorted."""
    lines: list[str] = []
    before = existing or {}
    for name in sorted(set(desired) | set(before)):
        new, old = desired.get(name), before.get(name)
        if new == old:
            continue
        if old is None:
            lines.append(f"+ {name}: {_show(name, new)}")
        elif new is None:
            lines.append(f"- {name}: {_show(name, old)}")
        else:
            lines.append(f"~ {name}: {_show(name, old)} → {_show(name, new)}")
    return lines


def _by_name(items: Any, name: str, kind: str, id_field: str) -> Any | None:
    found = [item for item in items if item.name == name]
    if len(found) > 1:
        ids = ", ".join(getattr(item, id_field) for item in found)
        raise ApplyError(
            f"{len(found)} {kind}s are named {name!r} on the deployment ({ids}); "
            "delete the extra ones first: apply matches by name"
        )
    return found[0] if found else None


def _change(kind: Any, name: str, desired: Any, existing: Any | None, id_field: str) -> Change:
    want = _fields(desired)
    if existing is None:
        return Change(kind, name, "create", desired, diff=field_diff(want, None))
    diff = field_diff(want, _fields(existing))
    action: Action = "update" if diff else "unchanged"
    return Change(kind, name, action, desired, getattr(existing, id_field), diff)


async def plan_changes(
    lkapi: api.LiveKitAPI, trunk_path: Path | None, dispatch_path: Path | None
) -> list[Change]:
    """Read the files, list what the deployment has, and say what applying would change."""
    changes: list[Change] = []
    file_trunk_id = ""
    if trunk_path is not None:
        trunk = load_trunk(trunk_path)
        if not trunk.info.name:
            raise ApplyError(f"{trunk_path}: the trunk needs a name: apply matches trunks by name")
        desired = lk_sip.SIPInboundTrunkInfo()
        desired.CopyFrom(trunk.info)
        desired.sip_trunk_id = ""
        listed = await lkapi.sip.list_inbound_trunk(lk_sip.ListSIPInboundTrunkRequest())
        existing = _by_name(listed.items, desired.name, "inbound trunk", "sip_trunk_id")
        changes.append(_change("trunk", desired.name, desired, existing, "sip_trunk_id"))
        file_trunk_id = trunk.id
    if dispatch_path is not None:
        rule = load_dispatch_rule(dispatch_path)
        if not rule.info.name:
            raise ApplyError(
                f"{dispatch_path}: the dispatch rule needs a name: apply matches rules by name"
            )
        want_rule = lk_sip.SIPDispatchRuleInfo()
        want_rule.CopyFrom(rule.info)
        want_rule.sip_dispatch_rule_id = ""
        if file_trunk_id and file_trunk_id in want_rule.trunk_ids and changes:
            trunk_change = changes[0]
            target = trunk_change.existing_id or "<the trunk being created>"
            ids = [target if t == file_trunk_id else t for t in want_rule.trunk_ids]
            del want_rule.trunk_ids[:]
            want_rule.trunk_ids.extend(ids)
        listed_rules = await lkapi.sip.list_dispatch_rule(lk_sip.ListSIPDispatchRuleRequest())
        existing_rule = _by_name(
            listed_rules.items, want_rule.name, "dispatch rule", "sip_dispatch_rule_id"
        )
        changes.append(
            _change(
                "dispatch rule", want_rule.name, want_rule, existing_rule, "sip_dispatch_rule_id"
            )
        )
    return changes


async def apply_changes(lkapi: api.LiveKitAPI, changes: list[Change]) -> None:
    """Create or update what the plan says, trunk first (a new rule may need its id)."""
    trunk_id = ""
    for change in changes:
        if change.kind == "trunk":
            info: Any = change.desired
            if change.action == "create":
                made = await lkapi.sip.create_inbound_trunk(
                    lk_sip.CreateSIPInboundTrunkRequest(trunk=info)
                )
                change.applied_id = made.sip_trunk_id
            elif change.action == "update":
                await lkapi.sip.update_inbound_trunk(change.existing_id, info)
                change.applied_id = change.existing_id
            else:
                change.applied_id = change.existing_id
            trunk_id = change.applied_id
            continue
        rule: lk_sip.SIPDispatchRuleInfo = change.desired
        if "<the trunk being created>" in rule.trunk_ids:
            ids = [trunk_id if t == "<the trunk being created>" else t for t in rule.trunk_ids]
            del rule.trunk_ids[:]
            rule.trunk_ids.extend(ids)
        if change.action == "create":
            made_rule = await lkapi.sip.create_dispatch_rule(
                lk_sip.CreateSIPDispatchRuleRequest(dispatch_rule=rule)
            )
            change.applied_id = made_rule.sip_dispatch_rule_id
        elif change.action == "update":
            await lkapi.sip.update_dispatch_rule(change.existing_id, rule)
            change.applied_id = change.existing_id
        else:
            change.applied_id = change.existing_id


async def run_apply(
    *,
    url: str,
    api_key: str,
    api_secret: str,
    trunk_path: Path | None,
    dispatch_path: Path | None,
    dry_run: bool,
    out: Any,
) -> list[Change]:
    """Plan, print the plan to ``out``, then apply it unless ``dry_run``."""
    lkapi = api.LiveKitAPI(url=url, api_key=api_key, api_secret=api_secret)
    try:
        changes = await plan_changes(lkapi, trunk_path, dispatch_path)
        for change in changes:
            for line in change.describe():
                print(line, file=out)
        pending = [c for c in changes if c.action != "unchanged"]
        if dry_run:
            print(f"dry run: {len(pending)} change(s) not applied", file=out)
            return changes
        await apply_changes(lkapi, changes)
        for change in pending:
            print(f"{change.action}d {change.kind} {change.name!r}: {change.applied_id}", file=out)
        if not pending:
            print("nothing to change", file=out)
        return changes
    finally:
        await lkapi.aclose()
