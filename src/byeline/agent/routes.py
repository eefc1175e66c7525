"""The routes file: where the agent may send a Five9 call, and the attributes that say so.

A routes file is YAML (read with ``yaml.safe_load``)::

    result_attributes:            # optional; these are the defaults
      reason: five9.route_reason
      type: five9.route_type
      value: five9.route_value
      metadata: five9.metadata
    greeting:
      text: "Thanks for calling. Press 1 for billing, 2 for sales, 0 for an agent."
      prompt: prompts/greeting.wav          # optional WAV played instead of speaking text
    no_input_timeout: 8                      # seconds without input before asking again
    max_attempts: 3                          # questions before the fallback route
    routes:
      - name: billing
        dtmf: "1"
        phrases: [billing, invoice, my bill]
        type: skill_transfer
        value: Billing
        reason: caller asked for billing
        goodbye: "Connecting you to billing."   # optional
        prompt: prompts/billing.wav             # optional
    fallback: general            # a route name, or a route mapping without dtmf/phrases
    on_shutdown: general         # optional; defaults to the fallback

Route ``type`` values name the Five9 IVR branches they drive, and are sent as they are in the
``type`` result attribute (so the IVR compares ``X-RouteType`` with these strings):

``skill_transfer``   queue to the skill named by ``value``
``phone_transfer``   transfer to the number in ``value``
``agent_transfer``   transfer to the agent (or agent queue) in ``value``
``hangup``           end the call; ``value`` is usually empty
``disposition_only`` set the disposition in ``value`` and let the IVR carry on

The result attributes become BYE headers through the trunk's ``attributes_to_headers``
(see :func:`check_routes_against_trunk`), so every string that ends up in one of them
(``reason``, ``value``) must be a valid header value: checked at load time.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from byeline.edge.trunk import MAX_HEADER_VALUE_BYTES, Trunk, header_value_problem

__all__ = [
    "DTMF_DIGITS",
    "Greeting",
    "InputMode",
    "ResultAttributes",
    "Route",
    "RouteDecision",
    "RouteType",
    "Routes",
    "RoutesFileError",
    "check_routes_against_trunk",
    "load_routes",
    "parse_routes",
]

DTMF_DIGITS = frozenset("0123456789*#")
DEFAULT_NO_INPUT_TIMEOUT = 8.0
DEFAULT_MAX_ATTEMPTS = 3
#: Five9 takes header lines of about 1 KB; the metadata JSON is kept within this many bytes.
MAX_METADATA_BYTES = MAX_HEADER_VALUE_BYTES


class RoutesFileError(ValueError):
    """A routes file byeline refuses; ``problems`` lists every problem, one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class RouteType(enum.StrEnum):
    """Five9 route types (see the module docstring for their meaning)."""

    SKILL_TRANSFER = "skill_transfer"
    PHONE_TRANSFER = "phone_transfer"
    AGENT_TRANSFER = "agent_transfer"
    HANGUP = "hangup"
    DISPOSITION_ONLY = "disposition_only"


class InputMode(enum.StrEnum):
    """How the caller chose the route."""

    DTMF = "dtmf"
    SPEECH = "speech"
    NONE = "none"


@dataclass(frozen=True)
class ResultAttributes:
    """Participant attribute names that carry the routing result."""

    reason: str = "five9.route_reason"
    type: str = "five9.route_type"
    value: str = "five9.route_value"
    metadata: str = "five9.metadata"

    def names(self) -> tuple[str, str, str, str]:
        """All four attribute names: reason, type, value, metadata."""
        return (self.reason, self.type, self.value, self.metadata)


@dataclass(frozen=True)
class Greeting:
    """What the agent says first: ``text``, or the WAV at ``prompt`` when given."""

    text: str
    prompt: Path | None = None


@dataclass(frozen=True)
class Route:
    """One destination the agent can choose."""

    name: str
    type: RouteType
    value: str = ""
    reason: str = ""
    dtmf: str | None = None
    phrases: tuple[str, ...] = ()
    goodbye: str | None = None
    prompt: Path | None = None


@dataclass(frozen=True)
class Routes:
    """A validated routes file."""

    greeting: Greeting
    routes: tuple[Route, ...]
    fallback: Route
    on_shutdown: Route
    no_input_timeout: float = DEFAULT_NO_INPUT_TIMEOUT
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    result_attributes: ResultAttributes = field(default_factory=ResultAttributes)
    source: str = "<memory>"
    confirm: bool = False
    """Ask "is that right?" before handing back on a spoken intent (keys need no confirming)."""

    def by_dtmf(self, digit: str) -> Route | None:
        """The route chosen by this DTMF digit, if any."""
        return next((r for r in self.routes if r.dtmf == digit), None)

    def by_name(self, name: str) -> Route | None:
        """The route (or fallback / on_shutdown route) with this name, if any."""
        for route in (*self.routes, self.fallback, self.on_shutdown):
            if route.name == name:
                return route
        return None


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

_TOP_KEYS = frozenset(
    {
        "result_attributes",
        "greeting",
        "routes",
        "fallback",
        "on_shutdown",
        "no_input_timeout",
        "max_attempts",
        "confirm",
    }
)
_ROUTE_KEYS = frozenset({"name", "dtmf", "phrases", "type", "value", "reason", "goodbye", "prompt"})
_TRANSFERS = (RouteType.SKILL_TRANSFER, RouteType.PHONE_TRANSFER, RouteType.AGENT_TRANSFER)
_GREETING_KEYS = frozenset({"text", "prompt"})
_RESULT_KEYS = frozenset({"reason", "type", "value", "metadata"})


class _Collector:
    """Collects problems as ``SOURCE: FIELD: PROBLEM`` lines."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def add(self, where: str, problem: str) -> None:
        prefix = f"{self.source}: {where}" if where else self.source
        self.problems.append(f"{prefix}: {problem}")

    def mapping(self, data: Any, where: str, allowed: frozenset[str]) -> dict[str, Any] | None:
        if not isinstance(data, dict):
            self.add(where, f"must be a mapping; got {_kind(data)}")
            return None
        for key in data:
            if not isinstance(key, str) or key not in allowed:
                self.add(
                    f"{where}.{key}" if where else str(key),
                    f"unknown key (allowed: {', '.join(sorted(allowed))})",
                )
        return data

    def string(
        self, data: Mapping[str, Any], key: str, where: str, *, required: bool, header: bool
    ) -> str | None:
        if key not in data or data[key] is None:
            if required:
                self.add(f"{where}.{key}", "is required")
            return None
        value = data[key]
        if not isinstance(value, str):
            self.add(f"{where}.{key}", f"must be a string; got {_kind(value)}")
            return None
        if required and value.strip() == "":
            self.add(f"{where}.{key}", "must not be empty")
            return None
        if header and (problem := header_value_problem(value)):
            self.add(f"{where}.{key}", f"cannot be sent in a header: {problem}")
            return None
        return value


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({json.dumps(value)})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _wav(c: _Collector, data: Mapping[str, Any], where: str, base: Path) -> Path | None:
    text = c.string(data, "prompt", where, required=False, header=False)
    if text is None:
        return None
    if not text.lower().endswith(".wav"):
        c.add(f"{where}.prompt", f"must be a .wav file; got {json.dumps(text)}")
        return None
    path = Path(text)
    # Relative prompts are relative to the routes file, so a bundle of files moves as one.
    return path if path.is_absolute() else base / path


def _route(c: _Collector, data: Any, where: str, base: Path, *, choosable: bool) -> Route | None:
    d = c.mapping(data, where, _ROUTE_KEYS)
    if d is None:
        return None
    before = len(c.problems)
    name = c.string(d, "name", where, required=True, header=False)
    type_text = c.string(d, "type", where, required=True, header=False)
    route_type: RouteType | None = None
    if type_text is not None:
        try:
            route_type = RouteType(type_text)
        except ValueError:
            c.add(
                f"{where}.type",
                f"must be one of {', '.join(t.value for t in RouteType)}; "
                f"got {json.dumps(type_text)}",
            )
    value = c.string(d, "value", where, required=False, header=True) or ""
    if route_type in _TRANSFERS and value.strip() == "":
        if d.get("value") is None:
            c.add(f"{where}.value", f"is required for a {route_type} route")
        elif isinstance(d["value"], str):
            c.add(f"{where}.value", f"must not be empty for a {route_type} route")
    reason = c.string(d, "reason", where, required=False, header=True) or ""
    goodbye = c.string(d, "goodbye", where, required=False, header=False)
    prompt = _wav(c, d, where, base)

    dtmf: str | None = None
    phrases: list[str] = []
    if choosable:
        raw = d.get("dtmf")
        if raw is not None:
            # YAML reads `dtmf: 1` as an int; accept a single digit written either way.
            text = str(raw) if isinstance(raw, int) and not isinstance(raw, bool) else raw
            if not isinstance(text, str) or len(text) != 1 or text not in DTMF_DIGITS:
                shown = json.dumps(text) if isinstance(text, str) else _kind(raw)
                c.add(f"{where}.dtmf", f"must be one of 0-9 * #; got {shown}")
            else:
                dtmf = text
        raw_phrases = d.get("phrases", [])
        if raw_phrases is None:
            raw_phrases = []
        if not isinstance(raw_phrases, list):
            c.add(f"{where}.phrases", f"must be a list of strings; got {_kind(raw_phrases)}")
        else:
            for i, phrase in enumerate(raw_phrases):
                if not isinstance(phrase, str) or phrase.strip() == "":
                    c.add(
                        f"{where}.phrases[{i}]", f"must be a non-empty string; got {_kind(phrase)}"
                    )
                else:
                    phrases.append(phrase)
        if "dtmf" not in d and not phrases:
            c.add(where, "needs a dtmf digit or phrases, or the caller could never choose it")
    else:
        for key in ("dtmf", "phrases"):
            if key in d:
                c.add(
                    f"{where}.{key}",
                    "not allowed here: this route is taken when no route was chosen; "
                    "list a route under routes instead",
                )
    if len(c.problems) != before or name is None or route_type is None:
        return None
    return Route(
        name=name,
        type=route_type,
        value=value,
        reason=reason,
        dtmf=dtmf,
        phrases=tuple(phrases),
        goodbye=goodbye,
        prompt=prompt,
    )


def _named_or_inline(
    c: _Collector, data: Any, where: str, base: Path, routes: list[Route], broken: set[str]
) -> Route | None:
    if isinstance(data, str):
        route = next((r for r in routes if r.name == data), None)
        # A route that is listed but invalid has its own problems reported already.
        if route is None and data not in broken:
            known = ", ".join(r.name for r in routes) or "none"
            c.add(where, f"names no route: {json.dumps(data)} (routes: {known})")
        return route
    return _route(c, data, where, base, choosable=False)


def _number(
    c: _Collector, data: Mapping[str, Any], key: str, default: float, *, integer: bool
) -> float:
    if key not in data:
        return default
    value = data[key]
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or value <= 0:
        what = "a positive whole number" if integer else "a positive number of seconds"
        c.add(key, f"must be {what}; got {_kind(value)}")
        return default
    return float(value)


def parse_routes(data: Any, *, source: str = "<memory>", base: Path | None = None) -> Routes:
    """Build :class:`Routes` from decoded YAML; raise :class:`RoutesFileError` with every
    problem. Relative prompt paths are resolved against ``base``."""
    c = _Collector(source)
    base = base if base is not None else Path(".")
    top = c.mapping(data, "", _TOP_KEYS)
    if top is None:
        raise RoutesFileError(c.problems)

    result = ResultAttributes()
    if "result_attributes" in top:
        ra = c.mapping(top["result_attributes"], "result_attributes", _RESULT_KEYS)
        if ra is not None:
            given = {
                k: c.string(ra, k, "result_attributes", required=False, header=False)
                for k in sorted(_RESULT_KEYS)
            }
            for k, v in given.items():
                if k in ra and v is not None and v.strip() == "":
                    c.add(f"result_attributes.{k}", "must not be empty")
            result = ResultAttributes(
                **{k: v for k, v in given.items() if v}  # missing ones keep their default
            )
            seen: dict[str, str] = {}
            for k, v in zip(("reason", "type", "value", "metadata"), result.names(), strict=True):
                if v in seen:
                    c.add(f"result_attributes.{k}", f"same attribute as {seen[v]}: {json.dumps(v)}")
                seen[v] = k

    greeting: Greeting | None = None
    if "greeting" not in top:
        c.add("greeting", "is required")
    else:
        g = c.mapping(top["greeting"], "greeting", _GREETING_KEYS)
        if g is not None:
            text = c.string(g, "text", "greeting", required=True, header=False)
            prompt = _wav(c, g, "greeting", base)
            if text is not None:
                greeting = Greeting(text=text, prompt=prompt)

    routes: list[Route] = []
    broken: set[str] = set()
    raw_routes = top.get("routes")
    if raw_routes is None:
        c.add("routes", "is required (a list of routes)")
    elif not isinstance(raw_routes, list) or not raw_routes:
        c.add("routes", f"must be a non-empty list; got {_kind(raw_routes)}")
    else:
        names: dict[str, int] = {}
        digits: dict[str, int] = {}
        for i, item in enumerate(raw_routes):
            route = _route(c, item, f"routes[{i}]", base, choosable=True)
            if route is None:
                if isinstance(item, dict) and isinstance(item.get("name"), str):
                    broken.add(item["name"])
                continue
            if route.name in names:
                c.add(
                    f"routes[{i}].name",
                    f"duplicate route name {json.dumps(route.name)} "
                    f"(also routes[{names[route.name]}])",
                )
            names.setdefault(route.name, i)
            if route.dtmf is not None:
                if route.dtmf in digits:
                    c.add(
                        f"routes[{i}].dtmf",
                        f"duplicate digit {json.dumps(route.dtmf)} "
                        f"(also routes[{digits[route.dtmf]}])",
                    )
                digits.setdefault(route.dtmf, i)
            routes.append(route)

    fallback: Route | None = None
    if "fallback" not in top or top["fallback"] is None:
        c.add("fallback", "is required (a route name or a route)")
    else:
        fallback = _named_or_inline(c, top["fallback"], "fallback", base, routes, broken)
    on_shutdown = fallback
    if top.get("on_shutdown") is not None:
        on_shutdown = _named_or_inline(c, top["on_shutdown"], "on_shutdown", base, routes, broken)
    for where, extra in (("fallback", fallback), ("on_shutdown", on_shutdown)):
        if extra is None or extra in routes or where not in top:
            continue
        if any(r.name == extra.name for r in routes):
            c.add(
                f"{where}.name",
                f"{json.dumps(extra.name)} is already a route name; "
                "write the name alone to reuse that route",
            )

    timeout = _number(c, top, "no_input_timeout", DEFAULT_NO_INPUT_TIMEOUT, integer=False)
    attempts = int(_number(c, top, "max_attempts", DEFAULT_MAX_ATTEMPTS, integer=True))
    confirm = top.get("confirm", False)
    if not isinstance(confirm, bool):
        c.add("confirm", f"must be true or false; got {_kind(confirm)}")
        confirm = False

    if c.problems or greeting is None or fallback is None or on_shutdown is None:
        raise RoutesFileError(c.problems or [f"{source}: invalid routes file"])
    return Routes(
        greeting=greeting,
        routes=tuple(routes),
        fallback=fallback,
        on_shutdown=on_shutdown,
        no_input_timeout=timeout,
        max_attempts=attempts,
        result_attributes=result,
        source=source,
        confirm=confirm,
    )


def load_routes(path: str | Path) -> Routes:
    """Read and validate a routes YAML file; raise :class:`RoutesFileError` with every
    problem, each naming the file and the field."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RoutesFileError([f"{source}: cannot read: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise RoutesFileError([f"{source}: not UTF-8 text: {exc.reason}"]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RoutesFileError([f"{source}: invalid YAML{where}: {problem}"]) from exc
    return parse_routes(data, source=source, base=Path(path).parent)


# --------------------------------------------------------------------------------------------
# Decisions
# --------------------------------------------------------------------------------------------

# Where Five9's ids are found in the call attributes, first match wins: the example trunk's
# headers_to_attributes names, then the raw X- headers (include_headers = SIP_X_HEADERS) under
# the names Five9 templates use.
_FIVE9_CALL_ID_KEYS = ("five9.call_id", "sip.h.x-callid", "sip.h.x-five9callid")
_FIVE9_SESSION_ID_KEYS = ("five9.session_id", "sip.h.x-callsessionid", "sip.h.x-five9sessionid")


@dataclass(frozen=True)
class RouteDecision:
    """The agent's decision: a route, how it was chosen, and how sure the agent is."""

    route: Route
    input_mode: InputMode = InputMode.NONE
    attempts: int = 0
    intent: str | None = None
    confidence: float | None = None

    def metadata(self, call_attributes: Mapping[str, str]) -> str:
        """The metadata JSON: compact, ASCII-only, at most 1024 bytes, always valid JSON.

        Fields: ``route``, ``intent``, ``input_mode``, ``attempts``, ``confidence`` and, when the
        call attributes carry them, ``five9_call_id`` and ``five9_session_id``. When too long,
        the longest string fields are cut first, never the JSON syntax.
        """
        doc: dict[str, Any] = {"route": self.route.name}
        if self.intent is not None:
            doc["intent"] = self.intent
        doc["input_mode"] = str(self.input_mode)
        doc["attempts"] = self.attempts
        if self.confidence is not None:
            doc["confidence"] = round(float(self.confidence), 3)
        for key, candidates in (
            ("five9_call_id", _FIVE9_CALL_ID_KEYS),
            ("five9_session_id", _FIVE9_SESSION_ID_KEYS),
        ):
            value = next((call_attributes[k] for k in candidates if call_attributes.get(k)), None)
            if value is not None:
                doc[key] = value
        return _bounded_json(doc, MAX_METADATA_BYTES)

    def attributes(self, routes: Routes, call_attributes: Mapping[str, str]) -> dict[str, str]:
        """The result attributes to set on the call before it is hung up."""
        names = routes.result_attributes
        return {
            names.reason: self.route.reason,
            names.type: str(self.route.type),
            names.value: self.route.value,
            names.metadata: self.metadata(call_attributes),
        }


def _dumps(doc: Mapping[str, Any]) -> str:
    # ASCII keeps the value printable for any SIP peer; non-ASCII becomes \\uXXXX, still JSON.
    return json.dumps(doc, ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def _bounded_json(doc: dict[str, Any], limit: int) -> str:
    text = _dumps(doc)
    while len(text) > limit:
        strings = [(len(_dumps({k: v})), k) for k, v in doc.items() if isinstance(v, str) and v]
        if not strings:
            break
        _, longest = max(strings)
        value: str = doc[longest]
        excess = len(text) - limit
        # Escapes make JSON longer than the string; cut at least the excess, at least half.
        keep = max(0, min(len(value) - excess, len(value) // 2))
        doc[longest] = value[:keep]
        text = _dumps(doc)
    if len(text) > limit:  # only non-strings left: keep the route alone
        text = _dumps({"route": str(doc.get("route", ""))[: limit // 2]})
    return text


def check_routes_against_trunk(routes: Routes, trunk: Trunk) -> list[str]:
    """Each result attribute must be mapped by the trunk's ``attributes_to_headers``.

    An unmapped attribute is set by the agent but never becomes a BYE header, so Five9 would
    never see it: that is a configuration error, reported for every such attribute.
    """
    mapped = trunk.attributes_to_headers
    return [
        f"{routes.source}: result attribute {json.dumps(name)} is not mapped by trunk "
        f"{json.dumps(trunk.name)} attributes_to_headers: its value could never reach Five9 "
        "(use consistent attribute names)"
        for name in routes.result_attributes.names()
        if name not in mapped
    ]
