"""Trunk and dispatch rule files, validated and selected as LiveKit does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from byeline.edge.trunk import (
    DispatchRule,
    DispatchRuleSet,
    Trunk,
    TrunkFileError,
    TrunkMatchResult,
    TrunkSet,
    _addresses_match,
    header_name_problem,
    header_value_problem,
    load_dispatch_rule,
    load_trunk,
    normalize_number,
    parse_dispatch_rule,
    parse_trunk,
    room_name,
    validate_file,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
BAD = ROOT / "tests" / "data" / "trunks"


def write(tmp_path: Path, data: Any, name: str = "trunk.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def problems_of(tmp_path: Path, data: Any) -> list[str]:
    return validate_file(write(tmp_path, data))


def trunk(name: str, **fields: Any) -> Trunk:
    return parse_trunk({"trunk": {"name": name, **fields}}, source=f"{name}.json")


def rule(name: str, **fields: Any) -> DispatchRule:
    fields.setdefault("rule", {"dispatch_rule_individual": {"room_prefix": name}})
    return parse_dispatch_rule({"dispatch_rule": {"name": name, **fields}}, source=name)


# -- examples ------------------------------------------------------------------------------


def test_example_files_are_valid() -> None:
    assert validate_file(EXAMPLES / "five9-trunk.json", routes_path=EXAMPLES / "routes.yaml") == []
    assert validate_file(EXAMPLES / "five9-dispatch.json") == []


def test_example_trunk_fields() -> None:
    t = load_trunk(EXAMPLES / "five9-trunk.json")
    assert t.name == "Five9"
    assert t.numbers == ["+18005550100"]
    assert t.headers_to_attributes["X-CallID"] == "five9.call_id"
    assert t.attributes_to_headers["five9.route_type"] == "X-RouteType"
    assert t.include_headers == 1  # SIP_X_HEADERS
    assert t.id.startswith("ST_") and t.id == t.trunk_id == t.info.sip_trunk_id
    assert not t.needs_auth
    # The id is derived from the name, so it is stable across loads.
    assert load_trunk(EXAMPLES / "five9-trunk.json").id == t.id


def test_example_dispatch_rule() -> None:
    r = load_dispatch_rule(EXAMPLES / "five9-dispatch.json")
    assert r.kind == "individual"
    assert r.agents == ["five9-router"]
    assert r.attributes == {"five9.entry": "ivr"}
    assert r.id.startswith("SDR_") and r.rule_id == r.id


# -- protojson parsing ---------------------------------------------------------------------


def test_snake_case_and_lower_camel_are_the_same(tmp_path: Path) -> None:
    snake = {
        "trunk": {
            "name": "a",
            "numbers": ["+1"],
            "allowed_addresses": ["10.0.0.1"],
            "include_headers": "SIP_ALL_HEADERS",
            "headers_to_attributes": {"X-A": "a"},
            "ringing_timeout": "30s",
            "max_call_duration": "3600s",
        }
    }
    camel = {
        "trunk": {
            "name": "a",
            "numbers": ["+1"],
            "allowedAddresses": ["10.0.0.1"],
            "includeHeaders": 2,
            "headersToAttributes": {"X-A": "a"},
            "ringingTimeout": "30s",
            "maxCallDuration": "3600s",
        }
    }
    a = load_trunk(write(tmp_path, snake, "a.json"))
    b = load_trunk(write(tmp_path, camel, "b.json"))
    assert a.info == b.info
    assert a.include_headers == 2
    assert a.info.ringing_timeout.seconds == 30


def test_enum_by_number_and_name(tmp_path: Path) -> None:
    by_name = trunk("x", numbers=["+1"], include_headers="SIP_X_HEADERS")
    by_number = trunk("x", numbers=["+1"], include_headers=1)
    assert by_name.include_headers == by_number.include_headers == 1


def test_unknown_fields_are_refused_with_their_path() -> None:
    problems = validate_file(BAD / "unknown-field.json")
    assert any("trunk.nmbers: unknown field" in p for p in problems)
    assert any("trunk.media.codec: unknown field" in p for p in problems)
    assert all(p.startswith(str(BAD / "unknown-field.json") + ": ") for p in problems)


def test_unknown_top_level_key(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, {"trunk": {"numbers": ["+1"]}, "extra": 1})
    assert any("extra: unknown field" in p for p in problems)


def test_bad_enum_names_the_field() -> None:
    (problem,) = validate_file(BAD / "bad-enum.json")
    assert "trunk.include_headers" in problem and "SIP_SOME_HEADERS" in problem


def test_bad_duration(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path, {"trunk": {"numbers": ["+1"], "ringing_timeout": "30"}})
    assert "ringing_timeout" in problem


def test_wrong_json_type(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path, {"trunk": {"numbers": "+1"}})
    assert "numbers" in problem


def test_duplicate_keys_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '{"trunk": {"numbers": ["+1"], "numbers": ["+2"]}}')
    (problem,) = validate_file(path)
    assert "duplicate JSON key 'numbers'" in problem


def test_same_field_under_both_names_refused(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path, {"trunk": {"numbers": ["+1"], "allowedAddresses": [], "allowed_addresses": []}}
    )
    assert any("given twice" in p for p in problems)


def test_array_of_trunks_is_refused_like_lk() -> None:
    (problem,) = validate_file(BAD / "array.json")
    assert "got an array" in problem


def test_invalid_json(tmp_path: Path) -> None:
    (problem,) = validate_file(write(tmp_path, '{"trunk": '))
    assert "invalid JSON" in problem and "line 1" in problem


def test_missing_file(tmp_path: Path) -> None:
    (problem,) = validate_file(tmp_path / "nope.json")
    assert "cannot read" in problem


def test_load_trunk_raises_with_all_problems() -> None:
    with pytest.raises(TrunkFileError) as info:
        load_trunk(BAD / "forbidden-header.json")
    assert len(info.value.problems) == 3
    assert str(info.value).count("\n") == 2


def test_neither_trunk_nor_rule(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path, {"trunks": []})
    assert "neither a trunk file" in problem


# -- LiveKit validation rules ---------------------------------------------------------------


def test_needs_auth_addresses_or_numbers() -> None:
    (problem,) = validate_file(BAD / "no-security.json")
    assert problem.endswith(
        "trunk: for security, one of the fields must be set: "
        "auth_username+auth_password, allowed_addresses or numbers"
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"auth_username": "u", "auth_password": "p"},
        {"allowed_addresses": ["10.0.0.0/8"]},
        {"numbers": ["+18005550100"]},
    ],
)
def test_each_security_field_is_enough(tmp_path: Path, fields: dict[str, Any]) -> None:
    assert problems_of(tmp_path, {"trunk": fields}) == []


def test_half_auth_refused() -> None:
    (problem,) = validate_file(BAD / "half-auth.json")
    assert "trunk.auth_password: must be set together with auth_username" in problem


def test_trunk_id_must_not_be_set() -> None:
    (problem,) = validate_file(BAD / "trunk-id-set.json")
    assert problem.endswith("trunk.sip_trunk_id: trunk id must not be set")


def test_missing_trunk(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path, {"trunk": None})
    assert "missing trunk" in problem


def test_forbidden_static_headers() -> None:
    problems = validate_file(BAD / "forbidden-header.json")
    src = str(BAD / "forbidden-header.json")
    assert (
        f'{src}: trunk.headers["Via"]: header name is reserved (forbidden in static headers'
        in (problems[1])
    )
    assert problems[0] == (
        f'{src}: trunk.headers["Call-ID"]: header name is reserved (forbidden in static headers)'
    )
    assert problems[2].endswith(
        'trunk.headers["v"]: header name is reserved (forbidden in static headers)'
    )


@pytest.mark.parametrize(
    "name",
    [
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Content-Length",
        "Max-Forwards",
        "Route",
        "Record-Route",
        "Refer-To",
        "v",
        "f",
        "t",
        "i",
        "m",
        "l",
        "r",
        "c",
        "k",
        "content-type",
    ],
)
def test_reserved_names(name: str) -> None:
    assert header_name_problem(name, reserved=True) is not None
    assert header_name_problem(name, reserved=False) is None


def test_bad_header_values() -> None:
    problems = validate_file(BAD / "bad-header-value.json")
    assert len(problems) == 3
    assert any('headers["X-Crlf"]' in p and "(CR)" in p for p in problems)
    assert any('headers["X-Del"]' in p and "(DEL)" in p for p in problems)
    assert any('headers["X-Bell"]' in p and "U+0007" in p for p in problems)


def test_header_value_length_is_counted_in_bytes() -> None:
    assert header_value_problem("a" * 1024) is None
    assert header_value_problem("a" * 1025) is not None
    assert header_value_problem("é" * 513) is not None  # 1026 bytes
    assert header_value_problem("tab\tok") is None
    assert header_value_problem("") is None
    assert header_value_problem("café") is None  # LiveKit allows UTF-8


def test_header_name_rules() -> None:
    assert header_name_problem("X-Five9-Call_ID.v2", reserved=True) is None
    assert header_name_problem("", reserved=False) == "header name must not be empty"
    assert "too long" in (header_name_problem("X" * 256, reserved=False) or "")
    assert header_name_problem("X" * 255, reserved=False) is None
    assert "token" in (header_name_problem("X:Y", reserved=False) or "")
    assert "token" in (header_name_problem("X-é", reserved=False) or "")


def test_bad_header_names_in_maps() -> None:
    problems = validate_file(BAD / "bad-header-name.json")
    assert any('attributes_to_headers["five9.route_type"]: "X-Route:Type"' in p for p in problems)
    assert any(
        'attributes_to_headers["five9.route_value"]: "Contact": header name is reserved' in p
        for p in problems
    )
    assert any(
        'headers_to_attributes["X Call"]: header name is not an RFC 3261 token' in p
        for p in problems
    )


def test_headers_to_attributes_may_read_reserved_headers(tmp_path: Path) -> None:
    # Reading From or Contact into an attribute is harmless; LiveKit allows it.
    data = {"trunk": {"numbers": ["+1"], "headers_to_attributes": {"From": "from", "Contact": "c"}}}
    assert problems_of(tmp_path, data) == []


def test_two_attributes_to_one_header_refused(tmp_path: Path) -> None:
    data = {"trunk": {"numbers": ["+1"], "attributes_to_headers": {"a": "X-R", "b": "x-r"}}}
    (problem,) = problems_of(tmp_path, data)
    assert "also mapped from attribute" in problem


def test_allowed_addresses() -> None:
    problems = validate_file(BAD / "bad-address.json")
    assert len(problems) == 3
    assert "allowed_addresses[0]: '10.0.0.0/33': not a valid CIDR prefix" in problems[0]
    assert "allowed_addresses[1]: 'sip://five9.example'" in problems[1]
    assert "allowed_addresses[2]: '192.168.1.300': not a valid IP address" in problems[2]


def test_allowed_address_forms(tmp_path: Path) -> None:
    data = {
        "trunk": {
            "allowed_addresses": [
                "10.0.0.1",
                "10.0.0.0/8",
                "::1",
                "2001:db8::/32",
                "sip.five9.example",
                "[::1]",
            ]
        }
    }
    assert problems_of(tmp_path, data) == []


def test_media_rules() -> None:
    problems = validate_file(BAD / "bad-media.json")
    assert any("media.codecs[0].name: codec name must not contain '/'" in p for p in problems)
    assert any("media.codecs[1].name: missing codec name" in p for p in problems)
    assert any("media.media_timeout: media_timeout must not exceed" in p for p in problems)


def test_numbers_are_not_format_checked_like_livekit(tmp_path: Path) -> None:
    # LiveKit stores numbers as given (SIP user names too) and normalises when matching.
    assert problems_of(tmp_path, {"trunk": {"numbers": ["five9", "1 (800) 555-0100"]}}) == []


# -- dispatch rule files --------------------------------------------------------------------


def test_dispatch_rule_needs_a_rule(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path, {"dispatch_rule": {"name": "x"}})
    assert "dispatch_rule.rule: missing rule" in problem


def test_dispatch_rule_id_must_not_be_set(tmp_path: Path) -> None:
    data = {
        "dispatch_rule": {
            "sip_dispatch_rule_id": "SDR_x",
            "rule": {"dispatch_rule_direct": {"room_name": "r"}},
        }
    }
    (problem,) = problems_of(tmp_path, data)
    assert "rule id must not be set" in problem


def test_flat_dispatch_form(tmp_path: Path) -> None:
    path = write(
        tmp_path, {"rule": {"dispatchRuleCallee": {"roomPrefix": "c"}}, "trunk_ids": ["ST_1"]}
    )
    assert validate_file(path) == []
    r = load_dispatch_rule(path)
    assert r.kind == "callee" and r.trunk_ids == ["ST_1"]


def test_flat_and_nested_mixed_refused(tmp_path: Path) -> None:
    data = {"dispatch_rule": {"rule": {"dispatch_rule_direct": {"room_name": "r"}}}, "name": "x"}
    (problem,) = problems_of(tmp_path, data)
    assert "ignores" in problem


def test_wrong_loader(tmp_path: Path) -> None:
    with pytest.raises(TrunkFileError, match="dispatch rule file"):
        load_trunk(EXAMPLES / "five9-dispatch.json")
    with pytest.raises(TrunkFileError, match="trunk file"):
        load_dispatch_rule(EXAMPLES / "five9-trunk.json")


# -- numbers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("", ""),
        ("+18005550100", "+18005550100"),
        ("18005550100", "+18005550100"),
        ("1 (800) 555-0100", "+18005550100"),
        ("+1-800-555-0100", "+18005550100"),
        ("five9", "five9"),
        ("1800555*", "1800555*"),
        ("١٢٣", "١٢٣"),  # non-ASCII digits are not numbers for Go's \d
    ],
)
def test_normalize_number(given: str, expected: str) -> None:
    assert normalize_number(given) == expected


# -- trunk selection ------------------------------------------------------------------------


def test_match_by_number_and_normalised_number() -> None:
    ts = TrunkSet([trunk("a", numbers=["+18005550100"]), trunk("b", numbers=["+18005550199"])])
    m = ts.match("+18005550100", "+15551230000", "10.0.0.1")
    assert m.result is TrunkMatchResult.MATCHED and m.trunk is not None and m.trunk.name == "a"
    m = ts.match("18005550199", "+15551230000", "10.0.0.1")
    assert m.trunk is not None and m.trunk.name == "b"


def test_no_trunk_for_number() -> None:
    ts = TrunkSet([trunk("a", numbers=["+18005550100"])])
    m = ts.match("+19999999999", "+1555", "10.0.0.1")
    assert m.result is TrunkMatchResult.NO_TRUNK and m.sip_status == 404 and m.trunk is None


def test_empty_set_is_no_trunk() -> None:
    assert TrunkSet([]).match("+1", "+2", "127.0.0.1").result is TrunkMatchResult.NO_TRUNK


def test_default_trunk_matches_any_number_but_specific_wins() -> None:
    ts = TrunkSet([trunk("any", allowed_addresses=["10.0.0.0/8"]), trunk("one", numbers=["+1800"])])
    specific = ts.match("+1800", "+1555", "10.1.2.3")
    assert specific.trunk is not None and specific.trunk.name == "one"
    default = ts.match("+1900", "+1555", "10.1.2.3")
    assert default.trunk is not None and default.trunk.name == "any"


@pytest.mark.parametrize(
    ("source", "allowed"),
    [
        ("10.1.2.3", True),
        ("10.255.0.1", True),
        ("11.0.0.1", False),
        ("192.0.2.7", True),
        ("192.0.2.8", False),
        ("2001:db8::5", True),
        ("2001:db9::5", False),
        ("::1", True),
    ],
)
def test_allowed_addresses_cidr_v4_v6(source: str, allowed: bool) -> None:
    ts = TrunkSet(
        [
            trunk(
                "a",
                numbers=["+1800"],
                allowed_addresses=["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "::1"],
            )
        ]
    )
    m = ts.match("+1800", "+1555", source)
    expected = TrunkMatchResult.MATCHED if allowed else TrunkMatchResult.ADDRESS_NOT_ALLOWED
    assert m.result is expected
    if not allowed:
        assert m.sip_status == 403


def test_allowed_address_by_from_host() -> None:
    ts = TrunkSet([trunk("a", numbers=["+1800"], allowed_addresses=["sip.five9.example"])])
    assert ts.match("+1800", "+1", "10.0.0.1", caller_host="sip.five9.example").trunk is not None
    assert ts.match("+1800", "+1", "10.0.0.1").result is TrunkMatchResult.ADDRESS_NOT_ALLOWED


def test_allowed_numbers() -> None:
    ts = TrunkSet([trunk("a", numbers=["+1800"], allowed_numbers=["+15551230000"])])
    assert ts.match("+1800", "15551230000", "10.0.0.1").result is TrunkMatchResult.MATCHED
    m = ts.match("+1800", "+15559999999", "10.0.0.1")
    assert m.result is TrunkMatchResult.CALLER_NOT_ALLOWED and m.sip_status == 403


def test_caller_checked_before_address_like_livekit() -> None:
    ts = TrunkSet(
        [trunk("a", numbers=["+1800"], allowed_numbers=["+1"], allowed_addresses=["10.0.0.1"])]
    )
    assert ts.match("+1800", "+2", "10.0.0.2").result is TrunkMatchResult.CALLER_NOT_ALLOWED


def test_refusal_only_reported_for_trunks_of_the_called_number() -> None:
    ts = TrunkSet([trunk("a", numbers=["+1800"], allowed_addresses=["10.0.0.1"])])
    assert ts.match("+1900", "+2", "10.0.0.2").result is TrunkMatchResult.NO_TRUNK


def test_needs_auth() -> None:
    ts = TrunkSet([trunk("a", numbers=["+1800"], auth_username="u", auth_password="p")])
    m = ts.match("+1800", "+1", "10.0.0.1")
    assert m.needs_auth and m.trunk is not None and m.trunk.auth_username == "u"


def test_two_specific_trunks_conflict_at_match_time() -> None:
    # Valid as a set (LiveKit's ValidateTrunks passes), ambiguous for caller +2.
    ts = TrunkSet(
        [
            trunk("a", numbers=["+1800"], allowed_numbers=["+2"]),
            trunk("b", numbers=["+1800"], allowed_numbers=["+3"]),
        ]
    )
    assert ts.match("+1800", "+2", "10.0.0.1").trunk is not None
    ts = TrunkSet(
        [
            trunk("a", numbers=["+1800"], allowed_numbers=["+2"]),
            trunk(
                "b",
                numbers=["+1800"],
                allowed_addresses=["10.0.0.0/8"],
                allowed_numbers=["+4", "+5"],
            ),
        ]
    )
    assert ts.match("+1800", "+2", "10.0.0.1").trunk is not None


def test_ambiguous_trunks_conflict() -> None:
    ts = TrunkSet(
        [trunk("a", numbers=["+1800"], allowed_numbers=["+2"]), trunk("b", numbers=["+1800"])]
    )
    m = ts.match("+1800", "+2", "10.0.0.1")
    assert m.result is TrunkMatchResult.CONFLICT and m.sip_status == 503
    ts = TrunkSet(
        [
            trunk("a", allowed_addresses=["10.0.0.0/8"], allowed_numbers=["+2"]),
            trunk("b", allowed_addresses=["10.0.0.0/8"]),
        ]
    )
    assert ts.match("+1800", "+2", "10.0.0.1").result is TrunkMatchResult.CONFLICT


def test_conflicting_trunks_refused_on_load() -> None:
    with pytest.raises(TrunkFileError, match="without allowed_numbers set"):
        TrunkSet([trunk("a", numbers=["+18005550100"]), trunk("b", numbers=["18005550100"])])
    with pytest.raises(TrunkFileError, match="allowed number"):
        TrunkSet(
            [
                trunk("a", numbers=["+1800"], allowed_numbers=["+2"]),
                trunk("b", numbers=["+1800"], allowed_numbers=["2"]),
            ]
        )
    with pytest.raises(TrunkFileError, match="without allowed_numbers"):
        TrunkSet(
            [trunk("a", allowed_addresses=["10.0.0.1"]), trunk("b", allowed_addresses=["10.0.0.2"])]
        )
    with pytest.raises(TrunkFileError, match="also used by"):
        TrunkSet([trunk("a", numbers=["+1"]), trunk("a", numbers=["+2"])])


def test_bad_source_ip_raises() -> None:
    with pytest.raises(ValueError):
        TrunkSet([trunk("a", numbers=["+1"])]).match("+1", "+2", "not-an-ip")


# -- dispatch selection ---------------------------------------------------------------------


def test_rule_for_trunk_wins_over_wildcard() -> None:
    t = trunk("t", numbers=["+1800"])
    rs = DispatchRuleSet([rule("any"), rule("mine", trunk_ids=[t.id])])
    chosen = rs.select(t.id, "+1800", "+1555")
    assert chosen is not None and chosen.name == "mine"
    other = rs.select("ST_other", "+1800", "+1555")
    assert other is not None and other.name == "any"
    none = rs.select(None, "+1800", "+1555")
    assert none is not None and none.name == "any"


def test_rule_only_for_other_trunk_gives_none() -> None:
    rs = DispatchRuleSet([rule("mine", trunk_ids=["ST_a"])])
    assert rs.select("ST_b", "+1800", "+1555") is None
    assert DispatchRuleSet([]).select("ST_a", "+1", "+2") is None


def test_numbers_and_inbound_numbers_compared_verbatim() -> None:
    rs = DispatchRuleSet(
        [rule("called", numbers=["+1800"]), rule("caller", inbound_numbers=["+1555"])]
    )
    r = rs.select(None, "+1800", "+1000")
    assert r is not None and r.name == "called"
    r = rs.select(None, "+1900", "+1555")
    assert r is not None and r.name == "caller"
    assert rs.select(None, "1800", "1555") is None  # no normalisation, as LiveKit


def test_priority_order() -> None:
    rs = DispatchRuleSet(
        [
            rule("callee", rule={"dispatch_rule_callee": {"room_prefix": "c"}}, trunk_ids=["T"]),
            rule(
                "indiv", rule={"dispatch_rule_individual": {"room_prefix": "i"}}, trunk_ids=["T2"]
            ),
            rule("direct", rule={"dispatch_rule_direct": {"room_name": "d"}}, trunk_ids=["T3"]),
        ]
    )
    assert [r.priority for r in rs] == [2102, 2101, 2100]
    # A rule with numbers beats an open one of a better kind.
    rs = DispatchRuleSet(
        [
            rule("direct", rule={"dispatch_rule_direct": {"room_name": "d"}}),
            rule("callee", rule={"dispatch_rule_callee": {"room_prefix": "c"}}, numbers=["+1800"]),
        ]
    )
    chosen = rs.select(None, "+1800", "+1555")
    assert chosen is not None and chosen.name == "callee"


def test_pin_filtering() -> None:
    rs = DispatchRuleSet(
        [
            rule("pin", rule={"dispatch_rule_direct": {"room_name": "p", "pin": "1234"}}),
            rule("open", rule={"dispatch_rule_direct": {"room_name": "o"}}, numbers=["+1"]),
        ]
    )
    first = rs.select(None, "+2", "+3")
    assert first is not None and first.name == "pin"
    no_pin = rs.select(None, "+1", "+3", no_pin=True)
    assert no_pin is not None and no_pin.name == "open"
    assert rs.select(None, "+1", "+3", pin="9999") is None
    with_pin = rs.select(None, "+1", "+3", pin="1234")
    assert with_pin is not None and with_pin.name == "pin"


def test_conflicting_rules_refused() -> None:
    with pytest.raises(TrunkFileError, match="already exists"):
        DispatchRuleSet([rule("a"), rule("b")])


def test_rule_metadata_and_agents() -> None:
    r = rule(
        "a",
        metadata='{"k":1}',
        attributes={"x": "y"},
        room_config={"agents": [{"agent_name": "one"}, {"agentName": "two"}]},
    )
    assert r.metadata == '{"k":1}' and r.attributes == {"x": "y"} and r.agents == ["one", "two"]


# -- room names -----------------------------------------------------------------------------


def test_room_names() -> None:
    indiv = rule("i", rule={"dispatch_rule_individual": {"room_prefix": "five9"}})
    assert room_name(indiv, "+1555", "+1800", "abc") == "five9_+1555_abc"
    fixed = rule("f", rule={"dispatch_rule_individual": {"no_randomness": True}})
    assert room_name(fixed, "+1555", "+1800", "abc") == "+1555"
    hidden = rule(
        "h", rule={"dispatch_rule_individual": {"room_prefix": "p"}}, hide_phone_number=True
    )
    assert room_name(hidden, "+15551234567", "+1800", "x") == "p_4567_x"
    callee = rule("c", rule={"dispatch_rule_callee": {"room_prefix": "c"}})
    assert room_name(callee, "+1555", "+1800", "abc") == "c_+1800"
    rnd = rule("r", rule={"dispatch_rule_callee": {"randomize": True}})
    assert room_name(rnd, "+1555", "+1800", "abc") == "+1800_abc"
    direct = rule("d", rule={"dispatch_rule_direct": {"room_name": "lobby"}})
    assert room_name(direct, "+1555", "+1800", "abc") == "lobby"


# -- the match's precomputed sets against LiveKit's entry-by-entry rules --------------------

_NUMBERS = st.sampled_from(
    ["+18005550100", "1 (800) 555-0100", "18005550100", "five9", "", "+1555"]
)
_ADDRESSES = st.sampled_from(["10.0.0.1", "10.0.0.0/8", "192.0.2.7", "five9.example", "bad;x"])


@given(
    numbers=st.lists(_NUMBERS, max_size=3),
    allowed_numbers=st.lists(_NUMBERS, max_size=3),
    allowed_addresses=st.lists(_ADDRESSES, max_size=3),
    called=_NUMBERS,
    caller=_NUMBERS,
    source=st.sampled_from(["10.0.0.1", "10.9.9.9", "192.0.2.7", "203.0.113.1"]),
    host=st.sampled_from(["", "five9.example", "other.example"]),
)
def test_match_agrees_with_reading_every_entry(
    numbers: list[str],
    allowed_numbers: list[str],
    allowed_addresses: list[str],
    called: str,
    caller: str,
    source: str,
    host: str,
) -> None:
    info = {"numbers": numbers, "allowed_numbers": allowed_numbers}
    info["allowed_addresses"] = allowed_addresses
    try:
        one = trunk("t", **info)
    except TrunkFileError:
        return  # a trunk LiveKit would refuse to create
    match = TrunkSet([one]).match(called, caller, source, caller_host=host)
    # LiveKit's matchNumbers / matchAddrMasks, read entry by entry from the protobuf each time.
    for_number = not numbers or any(
        n == called or normalize_number(n) == normalize_number(called) for n in numbers
    )
    caller_ok = not allowed_numbers or any(
        a == caller or normalize_number(a) == normalize_number(caller) for a in allowed_numbers
    )
    address_ok = _addresses_match(source, host, one.info.allowed_addresses)
    if caller_ok and address_ok and for_number:
        assert match.result is TrunkMatchResult.MATCHED
    elif not for_number:
        assert match.result is TrunkMatchResult.NO_TRUNK
    elif not caller_ok:
        assert match.result is TrunkMatchResult.CALLER_NOT_ALLOWED
    else:
        assert match.result is TrunkMatchResult.ADDRESS_NOT_ALLOWED
