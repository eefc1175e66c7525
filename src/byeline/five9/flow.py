"""A Five9 IVR script around the transfer, as data: ``five9 call --ivr FLOW.yaml``.

It models the four modules a Five9 IVR uses with a voice agent:

1. Set Variable → the call variables PUT into ToIVA (they become the INVITE's
   ``X-`` headers; ``{ani}``, ``{dnis}``, ``{call_id}``, ``{session_id}`` are filled in);
2. the third-party transfer to the agent's number;
3. ``GET(FromIVA, "X-...")`` of the returned values into IVR variables;
4. a Case on one IVR variable leading to an outcome: queue to a skill,
   transfer to a number or an agent, disconnect, play and hang up, or the
   default branch.

Example (``examples/five9-ivr.yaml`` is shaped like Five9's IVA template)::

    put: {X-CallANI: "{ani}", X-CallID: "{call_id}"}
    transfer: {to: "+18005550100"}
    get: {route_type: X-RouteType, route_value: X-RouteValue, route_reason: X-RouteReason}
    case:
      variable: route_type
      branches:
        skill_transfer: {action: queue_skill, skill: "{route_value}"}
      default: {action: queue_skill, skill: General}
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .variables import FromIVA

ACTIONS = {
    "queue_skill": ("skill",),
    "transfer_number": ("number",),
    "transfer_agent": ("agent",),
    "disconnect": (),
    "play_and_hangup": ("prompt",),
}
_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


class FlowError(ValueError):
    """An IVR flow file that cannot be used; the message names the field."""


@dataclass(frozen=True)
class Branch:
    """What the IVR does on one Case branch."""

    action: str
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class IvrFlow:
    """The IVR script around the transfer."""

    put: dict[str, str]
    transfer_to: str | None
    get: dict[str, str]
    case_variable: str
    branches: dict[str, Branch]
    default: Branch
    name: str = ""

    def call_variables(self, values: dict[str, str]) -> dict[str, str]:
        """The ToIVA headers with placeholders filled in."""
        return {name: _fill(value, values, f"put.{name}") for name, value in self.put.items()}

    def outcome(self, from_iva: FromIVA, *, caller_hung_up: bool = False) -> IvrOutcome:
        """What the IVR does with what came back."""
        if caller_hung_up:
            return IvrOutcome(
                "caller_disconnected",
                {},
                {},
                None,
                "the caller hung up first: the IVR script ends, nothing returned from the agent",
            )
        variables = {var: from_iva.get(header) or "" for var, header in self.get.items()}
        key = variables.get(self.case_variable, "")
        branch = self.branches.get(key)
        matched: str | None = key
        if branch is None:
            branch, matched = self.default, None
        params = {
            k: _fill(v, variables, f"case.{key or 'default'}.{k}", lenient=True)
            for k, v in branch.params.items()
        }
        return IvrOutcome(
            branch.action, params, variables, matched, _describe(branch.action, params)
        )


@dataclass(frozen=True)
class IvrOutcome:
    """The IVR's next step after the agent handed the call back."""

    action: str
    params: dict[str, str]
    variables: dict[str, str]
    branch: str | None  # the Case value that matched, None for the default branch
    description: str

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "action": self.action,
            "params": self.params,
            "variables": self.variables,
            "branch": self.branch if self.branch is not None else "default",
            "description": self.description,
        }


def _describe(action: str, params: dict[str, str]) -> str:
    if action == "queue_skill":
        return f"queue the call to skill {params.get('skill', '?')}"
    if action == "transfer_number":
        return f"transfer the call to {params.get('number', '?')}"
    if action == "transfer_agent":
        return f"transfer the call to agent {params.get('agent', '?')}"
    if action == "play_and_hangup":
        return f"play {params.get('prompt', '?')!r} and hang up"
    return "disconnect the call"


def _fill(text: str, values: dict[str, str], where: str, *, lenient: bool = False) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in values:
            return values[name]
        if lenient:
            return ""
        raise FlowError(
            f"{where}: unknown placeholder {{{name}}}; known: " + ", ".join(sorted(values))
        )

    return _PLACEHOLDER.sub(sub, text)


def _branch(data: Any, where: str) -> Branch:
    if not isinstance(data, dict) or "action" not in data:
        raise FlowError(f"{where}: expected a mapping with an action")
    action = data["action"]
    if action not in ACTIONS:
        raise FlowError(f"{where}.action: {action!r} is not one of {', '.join(ACTIONS)}")
    params = {k: str(v) for k, v in data.items() if k != "action"}
    allowed = set(ACTIONS[action]) | {"disposition"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise FlowError(f"{where}: unknown key(s) {', '.join(unknown)} for {action}")
    missing = [k for k in ACTIONS[action] if k not in params]
    if missing:
        raise FlowError(f"{where}: {action} needs {', '.join(missing)}")
    return Branch(action, params)


def parse_flow(data: Any, *, source: str = "<flow>") -> IvrFlow:
    """An IvrFlow from decoded YAML."""
    if not isinstance(data, dict):
        raise FlowError(f"{source}: expected a mapping")
    unknown = sorted(set(data) - {"name", "put", "transfer", "get", "case"})
    if unknown:
        raise FlowError(f"{source}: unknown key(s) {', '.join(unknown)}")
    put = data.get("put") or {}
    if not isinstance(put, dict) or not all(str(k).lower().startswith("x-") for k in put):
        raise FlowError(f"{source}: put: expected a mapping of X- header names to values")
    get = data.get("get") or {}
    if not isinstance(get, dict) or not get:
        raise FlowError(f"{source}: get: expected a mapping of IVR variables to FromIVA names")
    case = data.get("case")
    if not isinstance(case, dict) or "variable" not in case:
        raise FlowError(f"{source}: case: expected variable, branches and default")
    if case["variable"] not in get:
        raise FlowError(f"{source}: case.variable {case['variable']!r} is not set by get")
    branches_data = case.get("branches") or {}
    if not isinstance(branches_data, dict):
        raise FlowError(f"{source}: case.branches: expected a mapping")
    branches = {
        str(k): _branch(v, f"{source}: case.branches.{k}") for k, v in branches_data.items()
    }
    if "default" not in case:
        raise FlowError(f"{source}: case.default: every Case needs a default branch")
    transfer = data.get("transfer") or {}
    return IvrFlow(
        put={str(k): str(v) for k, v in put.items()},
        transfer_to=str(transfer["to"])
        if isinstance(transfer, dict) and "to" in transfer
        else None,
        get={str(k): str(v) for k, v in get.items()},
        case_variable=str(case["variable"]),
        branches=branches,
        default=_branch(case["default"], f"{source}: case.default"),
        name=str(data.get("name", "")),
    )


def load_flow(path: str | Path) -> IvrFlow:
    """Read an IVR flow file."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text("utf-8"))
    except OSError as exc:
        raise FlowError(f"{p}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise FlowError(f"{p}: not valid YAML ({exc})") from None
    return parse_flow(data, source=str(p))
