"""The routes file, route decisions and their result attributes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from byeline.agent.routes import (
    InputMode,
    ResultAttributes,
    RouteDecision,
    Routes,
    RoutesFileError,
    RouteType,
    check_routes_against_trunk,
    load_routes,
    parse_routes,
)
from byeline.edge.trunk import load_trunk, parse_trunk, validate_file

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

BASE: dict[str, Any] = {
    "greeting": {"text": "Hello"},
    "routes": [
        {
            "name": "billing",
            "dtmf": "1",
            "phrases": ["billing"],
            "type": "skill_transfer",
            "value": "Billing",
            "reason": "billing",
        },
        {"name": "bye", "dtmf": "#", "type": "hangup"},
    ],
    "fallback": "billing",
}


def parse(data: Any) -> Routes:
    return parse_routes(data, source="routes.yaml")


def problems(data: Any) -> list[str]:
    with pytest.raises(RoutesFileError) as info:
        parse(data)
    return info.value.problems


def with_(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json.dumps(BASE))
    data.update(changes)
    return data


def test_example_routes() -> None:
    routes = load_routes(EXAMPLES / "routes.yaml")
    assert [r.name for r in routes.routes] == ["billing", "sales", "agent"]
    billing = routes.by_dtmf("1")
    assert billing is not None and billing.type is RouteType.SKILL_TRANSFER
    assert billing.value == "Billing"
    agent = routes.by_dtmf("0")
    assert agent is not None and agent.type is RouteType.AGENT_TRANSFER
    assert routes.by_dtmf("9") is None
    assert routes.fallback.value == "General"
    assert routes.on_shutdown.name == "shutdown"
    assert routes.no_input_timeout == 8 and routes.max_attempts == 3
    assert routes.result_attributes == ResultAttributes()
    assert all(r.phrases for r in routes.routes)


def test_defaults() -> None:
    routes = parse(BASE)
    assert routes.on_shutdown is routes.fallback
    assert routes.fallback.name == "billing"
    assert routes.no_input_timeout == 8.0 and routes.max_attempts == 3
    assert routes.result_attributes.names() == (
        "five9.route_reason",
        "five9.route_type",
        "five9.route_value",
        "five9.metadata",
    )


def test_dtmf_written_as_int() -> None:
    data = with_()
    data["routes"][0]["dtmf"] = 1
    assert parse(data).by_dtmf("1") is not None


@pytest.mark.parametrize(
    ("dtmf", "shown"), [("12", '"12"'), ("a", '"a"'), ("", '""'), (True, "a boolean (True)")]
)
def test_bad_dtmf(dtmf: Any, shown: str) -> None:
    data = with_()
    data["routes"][1]["dtmf"] = dtmf
    assert problems(data) == [f"routes.yaml: routes[1].dtmf: must be one of 0-9 * #; got {shown}"]


def test_duplicate_dtmf_and_names() -> None:
    data = with_()
    data["routes"].append({"name": "billing", "dtmf": "1", "type": "hangup"})
    found = problems(data)
    assert 'routes.yaml: routes[2].name: duplicate route name "billing" (also routes[0])' in found
    assert 'routes.yaml: routes[2].dtmf: duplicate digit "1" (also routes[0])' in found


def test_unknown_keys_refused() -> None:
    data = with_(extra=1)
    data["routes"][0]["skill"] = "x"
    data["greeting"]["voice"] = "y"
    found = problems(data)
    assert any(p.startswith("routes.yaml: extra: unknown key") for p in found)
    assert any(p.startswith("routes.yaml: routes[0].skill: unknown key") for p in found)
    assert any(p.startswith("routes.yaml: greeting.voice: unknown key") for p in found)


def test_bad_type() -> None:
    data = with_()
    data["routes"][0]["type"] = "skill"
    (problem,) = problems(data)
    assert problem.startswith("routes.yaml: routes[0].type: must be one of skill_transfer, ")
    assert problem.endswith('got "skill"')


def test_transfer_needs_value() -> None:
    data = with_()
    del data["routes"][0]["value"]
    assert problems(data) == [
        "routes.yaml: routes[0].value: is required for a skill_transfer route"
    ]


def test_values_must_be_header_safe() -> None:
    data = with_()
    data["routes"][0]["reason"] = "a\r\nVia: evil"
    (problem,) = problems(data)
    assert problem.startswith("routes.yaml: routes[0].reason: cannot be sent in a header")


def test_fallback_required_and_resolved() -> None:
    data = with_()
    del data["fallback"]
    assert "routes.yaml: fallback: is required (a route name or a route)" in problems(data)
    assert 'names no route: "nope"' in problems(with_(fallback="nope"))[0]


def test_inline_fallback_cannot_have_dtmf() -> None:
    data = with_(fallback={"name": "general", "type": "hangup", "dtmf": "5"})
    (problem,) = problems(data)
    assert problem.startswith("routes.yaml: fallback.dtmf: not allowed here")


def test_on_shutdown_by_name() -> None:
    routes = parse(with_(on_shutdown="bye"))
    assert routes.on_shutdown.type is RouteType.HANGUP


def test_route_needs_a_way_to_be_chosen() -> None:
    data = with_()
    data["routes"][1].pop("dtmf")
    (problem,) = problems(data)
    assert problem == (
        "routes.yaml: routes[1]: needs a dtmf digit or phrases, or the caller could never choose it"
    )


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        (
            "no_input_timeout",
            0,
            "routes.yaml: no_input_timeout: must be a positive number of seconds; got a number (0)",
        ),
        (
            "no_input_timeout",
            "8",
            "routes.yaml: no_input_timeout: must be a positive number of seconds; "
            'got a string ("8")',
        ),
        (
            "max_attempts",
            2.5,
            "routes.yaml: max_attempts: must be a positive whole number; got a number (2.5)",
        ),
    ],
)
def test_numbers(key: str, value: Any, expected: str) -> None:
    assert problems(with_(**{key: value})) == [expected]


def test_not_a_mapping() -> None:
    assert problems([1, 2]) == ["routes.yaml: must be a mapping; got a list"]
    assert problems(None) == ["routes.yaml: must be a mapping; got nothing"]


def test_prompts_resolved_against_file(tmp_path: Path) -> None:
    data = with_(greeting={"text": "Hi", "prompt": "prompts/hi.wav"})
    path = tmp_path / "routes.yaml"
    path.write_text(yaml.safe_dump(data))
    routes = load_routes(path)
    assert routes.greeting.prompt == tmp_path / "prompts" / "hi.wav"
    data["greeting"]["prompt"] = "hi.mp3"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(RoutesFileError, match=r"greeting.prompt: must be a .wav file"):
        load_routes(path)


def test_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text("routes: [\n")
    with pytest.raises(RoutesFileError, match="invalid YAML"):
        load_routes(path)


def test_custom_result_attributes() -> None:
    routes = parse(with_(result_attributes={"type": "route.type"}))
    assert routes.result_attributes.type == "route.type"
    assert routes.result_attributes.reason == "five9.route_reason"


# -- decisions ------------------------------------------------------------------------------


def test_decision_attributes() -> None:
    routes = load_routes(EXAMPLES / "routes.yaml")
    route = routes.by_dtmf("1")
    assert route is not None
    decision = RouteDecision(route, InputMode.DTMF, attempts=1, intent="billing", confidence=1.0)
    attrs = decision.attributes(
        routes, {"sip.h.x-callid": "300000000123", "five9.session_id": "S9"}
    )
    assert attrs["five9.route_reason"] == "caller asked for billing"
    assert attrs["five9.route_type"] == "skill_transfer"
    assert attrs["five9.route_value"] == "Billing"
    assert json.loads(attrs["five9.metadata"]) == {
        "route": "billing",
        "intent": "billing",
        "input_mode": "dtmf",
        "attempts": 1,
        "confidence": 1.0,
        "five9_call_id": "300000000123",
        "five9_session_id": "S9",
    }


@given(intent=st.text(max_size=3000), call_id=st.text(max_size=3000))
def test_metadata_is_bounded_valid_json(intent: str, call_id: str) -> None:
    routes = parse(BASE)
    decision = RouteDecision(routes.routes[0], InputMode.SPEECH, attempts=2, intent=intent)
    text = decision.metadata({"five9.call_id": call_id})
    assert len(text.encode("utf-8")) <= 1024
    doc = json.loads(text)
    assert doc["route"] == "billing"
    assert text.isascii()


# -- routes vs trunk ------------------------------------------------------------------------


def test_example_routes_match_example_trunk() -> None:
    routes = load_routes(EXAMPLES / "routes.yaml")
    trunk = load_trunk(EXAMPLES / "five9-trunk.json")
    assert check_routes_against_trunk(routes, trunk) == []


def test_unmapped_result_attribute() -> None:
    routes = parse(with_(result_attributes={"type": "five9.routeType"}))
    trunk = load_trunk(EXAMPLES / "five9-trunk.json")
    assert check_routes_against_trunk(routes, trunk) == [
        'routes.yaml: result attribute "five9.routeType" is not mapped by trunk "Five9" '
        "attributes_to_headers: its value could never reach Five9 (use consistent attribute names)"
    ]


def test_validate_file_with_routes(tmp_path: Path) -> None:
    trunk = parse_trunk({"trunk": {"name": "bare", "numbers": ["+1"]}})
    assert trunk.attributes_to_headers == {}
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"trunk": {"name": "bare", "numbers": ["+1"]}}))
    found = validate_file(path, routes_path=EXAMPLES / "routes.yaml")
    assert len(found) == 4 and all('is not mapped by trunk "bare"' in p for p in found)
    bad_routes = tmp_path / "routes.yaml"
    bad_routes.write_text("greeting: {text: hi}\n")
    found = validate_file(EXAMPLES / "five9-trunk.json", routes_path=bad_routes)
    assert any("routes: is required" in p for p in found)
