"""INVITE → attributes and attributes → headers, as LiveKit maps them, plus header safety."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from byeline.edge.attributes import (
    HeaderRefusal,
    HeaderRefused,
    check_header,
    headers_from_attributes,
    invite_attributes,
    merge_headers,
    outgoing_headers,
    participant_identity,
    participant_name,
)
from byeline.edge.trunk import DispatchRule, Trunk, load_trunk, parse_dispatch_rule, parse_trunk

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

FIVE9_INVITE_HEADERS = [
    ("Via", "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1"),
    ("From", "<sip:+15551234567@five9.example>;tag=abc"),
    ("To", "<sip:+18005550100@byeline>"),
    ("Call-ID", "c1@five9"),
    ("X-CallID", "300000000123"),
    ("x-callsessionid", "SESSION-9"),
    ("X-CallANI", "5551234567"),
    ("X-CallDNIS", "8005550100"),
    ("X-CallCampaign", "Inbound Support"),
    ("X-five9callid", "300000000123"),
    ("Content-Type", "application/sdp"),
]


def make_trunk(**fields: Any) -> Trunk:
    fields.setdefault("numbers", ["+18005550100"])
    return parse_trunk({"trunk": {"name": "t", **fields}})


def make_rule(**fields: Any) -> DispatchRule:
    fields.setdefault("rule", {"dispatch_rule_individual": {"room_prefix": "five9"}})
    return parse_dispatch_rule({"dispatch_rule": {"name": "r", **fields}})


def attrs_for(
    trunk: Trunk, rule: DispatchRule | None, headers: list[tuple[str, str]]
) -> dict[str, str]:
    return invite_attributes(
        trunk,
        rule,
        headers=headers,
        call_id="SCL_abc",
        sip_call_id="c1@five9",
        call_tag="abc",
        caller_number="+15551234567",
        called_number="+18005550100",
        hostname="five9.example",
    )


# -- INVITE → attributes --------------------------------------------------------------------


def test_example_trunk_attributes_exactly() -> None:
    trunk = load_trunk(EXAMPLES / "five9-trunk.json")
    rule = make_rule(attributes={"five9.entry": "ivr"})
    attrs = attrs_for(trunk, rule, FIVE9_INVITE_HEADERS)
    assert attrs == {
        "five9.entry": "ivr",
        "sip.callID": "SCL_abc",
        "sip.trunkID": trunk.id,
        "sip.phoneNumber": "+15551234567",
        "sip.hostname": "five9.example",
        "sip.trunkPhoneNumber": "+18005550100",
        "sip.ruleID": rule.id,
        # SIP_X_HEADERS: every X- header, lower-cased name, and nothing else.
        "sip.h.x-callid": "300000000123",
        "sip.h.x-callsessionid": "SESSION-9",
        "sip.h.x-callani": "5551234567",
        "sip.h.x-calldnis": "8005550100",
        "sip.h.x-callcampaign": "Inbound Support",
        "sip.h.x-five9callid": "300000000123",
        # headers_to_attributes, matched case-insensitively (x-callsessionid).
        "five9.call_id": "300000000123",
        "five9.session_id": "SESSION-9",
        "five9.ani": "5551234567",
        "five9.dnis": "8005550100",
        "five9.campaign": "Inbound Support",
        "sip.callTag": "abc",
        "sip.callIDFull": "c1@five9",
        "sip.callStatus": "ringing",
    }


def test_all_headers_option() -> None:
    attrs = attrs_for(make_trunk(include_headers="SIP_ALL_HEADERS"), None, FIVE9_INVITE_HEADERS)
    assert attrs["sip.h.via"].startswith("SIP/2.0/UDP")
    assert attrs["sip.h.call-id"] == "c1@five9"
    assert attrs["sip.h.content-type"] == "application/sdp"
    assert attrs["sip.h.x-callid"] == "300000000123"


def test_no_headers_option() -> None:
    attrs = attrs_for(make_trunk(), None, FIVE9_INVITE_HEADERS)
    assert not any(k.startswith("sip.h.") for k in attrs)
    assert attrs["sip.ruleID"] == ""


def test_compact_forms_use_full_names() -> None:
    attrs = attrs_for(
        make_trunk(include_headers="SIP_ALL_HEADERS", headers_to_attributes={"From": "from"}),
        None,
        [("f", "<sip:a@b>;tag=1"), ("i", "x@y")],
    )
    assert attrs["sip.h.from"] == "<sip:a@b>;tag=1"
    assert attrs["sip.h.call-id"] == "x@y"
    assert attrs["from"] == "<sip:a@b>;tag=1"


def test_repeated_headers_like_livekit() -> None:
    # include_headers keeps the last value; headers_to_attributes takes the first.
    trunk = make_trunk(include_headers="SIP_X_HEADERS", headers_to_attributes={"X-Tag": "tag"})
    attrs = attrs_for(trunk, None, [("X-Tag", "first"), ("x-tag", "second")])
    assert attrs["sip.h.x-tag"] == "second"
    assert attrs["tag"] == "first"


def test_missing_mapped_header_gives_no_attribute() -> None:
    attrs = attrs_for(make_trunk(headers_to_attributes={"X-Absent": "absent"}), None, [])
    assert "absent" not in attrs


def test_builtin_header_map() -> None:
    attrs = attrs_for(make_trunk(), None, [("X-Twilio-CallSid", "CA1")])
    assert attrs["sip.twilio.callSid"] == "CA1"


def test_header_mapping_overrides_rule_attributes() -> None:
    trunk = make_trunk(headers_to_attributes={"X-Queue": "queue"})
    attrs = attrs_for(trunk, make_rule(attributes={"queue": "default"}), [("X-Queue", "vip")])
    assert attrs["queue"] == "vip"


def test_hide_phone_number() -> None:
    rule = make_rule(hide_phone_number=True)
    attrs = attrs_for(make_trunk(), rule, [])
    for key in ("sip.phoneNumber", "sip.trunkPhoneNumber", "sip.hostname"):
        assert key not in attrs
    assert attrs["sip.ruleID"] == rule.id


def test_participant_identity_and_name() -> None:
    assert participant_identity("+15551234567") == "sip_+15551234567"
    digest = hashlib.sha256(b"+15551234567").hexdigest()[:16]
    assert participant_identity("+15551234567", hide_phone_number=True) == "sip_" + digest
    assert participant_name("+15551234567") == "Phone +15551234567"
    assert participant_name("+15551234567", hide_phone_number=True) == "Phone 4567"


# -- attributes → headers -------------------------------------------------------------------


ROUTE_ATTRS = {
    "five9.route_reason": "caller asked for billing",
    "five9.route_type": "skill_transfer",
    "five9.route_value": "Billing",
    "five9.metadata": '{"intent":"billing"}',
}


def test_bye_headers_from_example_trunk() -> None:
    trunk = load_trunk(EXAMPLES / "five9-trunk.json")
    assert headers_from_attributes(trunk, ROUTE_ATTRS, stage="bye") == [
        ("X-MetaData", '{"intent":"billing"}'),
        ("X-RouteReason", "caller asked for billing"),
        ("X-RouteType", "skill_transfer"),
        ("X-RouteValue", "Billing"),
    ]


def test_absent_or_empty_attribute_gives_no_header() -> None:
    trunk = load_trunk(EXAMPLES / "five9-trunk.json")
    attrs = {"five9.route_type": "hangup", "five9.route_value": ""}
    assert headers_from_attributes(trunk, attrs, stage="bye") == [("X-RouteType", "hangup")]
    assert headers_from_attributes(trunk, {}, stage="final") == []


def test_static_headers_only_on_200() -> None:
    trunk = make_trunk(
        headers={"X-Static": "s", "X-RouteType": "static"},
        attributes_to_headers={"route": "x-routetype"},
    )
    attrs = {"route": "mapped"}
    assert headers_from_attributes(trunk, attrs, stage="200") == [
        ("X-RouteType", "mapped"),  # mapped replaces static in place, case-insensitively
        ("X-Static", "s"),
    ]
    assert headers_from_attributes(trunk, attrs, stage="bye") == [("x-routetype", "mapped")]
    assert headers_from_attributes(trunk, attrs, stage="final") == [("x-routetype", "mapped")]


def test_bad_stage() -> None:
    with pytest.raises(ValueError):
        headers_from_attributes(make_trunk(), {}, stage="180")  # type: ignore[arg-type]


def test_order_is_stable_whatever_the_attribute_order() -> None:
    trunk = load_trunk(EXAMPLES / "five9-trunk.json")
    reversed_attrs = dict(reversed(list(ROUTE_ATTRS.items())))
    assert headers_from_attributes(trunk, reversed_attrs, stage="bye") == headers_from_attributes(
        trunk, ROUTE_ATTRS, stage="bye"
    )


def test_outgoing_headers_drop_injection() -> None:
    trunk = load_trunk(EXAMPLES / "five9-trunk.json")
    attrs = dict(ROUTE_ATTRS, **{"five9.route_value": "Billing\r\nVia: SIP/2.0/UDP evil"})
    headers, refusals = outgoing_headers(trunk, attrs, stage="bye")
    assert ("X-RouteValue", "Billing\r\nVia: SIP/2.0/UDP evil") not in headers
    assert [h for h, _ in headers] == ["X-MetaData", "X-RouteReason", "X-RouteType"]
    assert refusals == [HeaderRefusal("X-RouteValue", "value contains CR")]


# -- header safety --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("X-A", "a\rb", "value contains CR"),
        ("X-A", "a\nb", "value contains LF"),
        ("X-A", "a\x00b", "value contains NUL"),
        ("X-A", "a\x7fb", "value contains control character U+007F"),
        ("X-A", "a\x1bb", "value contains control character U+001B"),
        ("X-A", "a\x85b", "value contains control character U+0085"),
        ("X-A", "a" * 1025, "value is too long (1025 bytes UTF-8, max 1024)"),
        ("X-A", "é" * 513, "value is too long (1026 bytes UTF-8, max 1024)"),
        ("X-A", "\ud800", "value is not valid UTF-8 (lone surrogate)"),
        ("X A", "v", "header name is not an RFC 3261 token (character ' ' not allowed)"),
        ("X-A:", "v", "header name is not an RFC 3261 token (character ':' not allowed)"),
        ("", "v", "header name must not be empty"),
        ("X" * 256, "v", "header name is too long (max 255 characters)"),
    ],
)
def test_check_header_refuses(name: str, value: str, reason: str) -> None:
    with pytest.raises(HeaderRefused) as info:
        check_header(name, value)
    assert info.value.reason == reason
    assert "\n" not in str(info.value) and "\r" not in str(info.value)


@pytest.mark.parametrize(
    "name",
    [
        "Via",
        "via",
        "From",
        "To",
        "Call-ID",
        "i",
        "CSeq",
        "Contact",
        "m",
        "Content-Length",
        "l",
        "Max-Forwards",
        "Route",
        "Record-Route",
        "Refer-To",
        "r",
        "v",
        "f",
        "t",
    ],
)
def test_check_header_refuses_reserved_names(name: str) -> None:
    with pytest.raises(HeaderRefused, match="reserved"):
        check_header(name, "x")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-RouteType", "skill_transfer"),
        ("X-A", "tab\tinside"),
        ("X-A", ""),
        ("X-A", "a" * 1024),
        ("X-A", "café ☎"),
        ("X-Five9.Call_ID!%*+`'~", "ok"),
    ],
)
def test_check_header_accepts(name: str, value: str) -> None:
    check_header(name, value)


@given(
    prefix=st.text(max_size=50),
    bad=st.sampled_from(["\r", "\n", "\x00"]),
    suffix=st.text(max_size=50),
)
def test_no_value_with_cr_lf_nul_ever_passes(prefix: str, bad: str, suffix: str) -> None:
    with pytest.raises(HeaderRefused):
        check_header("X-Value", prefix + bad + suffix)


@given(value=st.text(max_size=300))
def test_accepted_values_are_safe_on_the_wire(value: str) -> None:
    try:
        check_header("X-Value", value)
    except HeaderRefused:
        return
    encoded = value.encode("utf-8")
    assert b"\r" not in encoded and b"\n" not in encoded and b"\x00" not in encoded
    assert len(encoded) <= 1024


@given(name=st.text(max_size=20))
def test_accepted_names_are_tokens(name: str) -> None:
    try:
        check_header(name, "v")
    except HeaderRefused:
        return
    assert name and all(c.isascii() and (c.isalnum() or c in "-.!%*_+`'~") for c in name)


@given(
    mapped=st.lists(st.tuples(st.sampled_from(["X-A", "x-a", "X-B", "Via"]), st.text(max_size=5))),
    explicit=st.lists(st.tuples(st.sampled_from(["X-A", "X-C", "x-c"]), st.text(max_size=5))),
)
def test_merge_headers_properties(
    mapped: list[tuple[str, str]], explicit: list[tuple[str, str]]
) -> None:
    headers, refusals = merge_headers(mapped, explicit)
    names = [n.lower() for n, _ in headers]
    assert len(names) == len(set(names))  # merged
    for name, value in headers:
        check_header(name, value)  # every header that goes out is safe
    assert len(refusals) + len(headers) <= len(mapped) + len(explicit)
    assert merge_headers(mapped, explicit) == (headers, refusals)  # deterministic


def test_merge_headers_explicit_wins_and_order() -> None:
    mapped = [("X-RouteType", "skill_transfer"), ("X-RouteValue", "Billing"), ("x-routetype", "b")]
    explicit = [("X-New", "1"), ("X-ROUTEVALUE", "Sales"), ("Via", "evil"), ("X-Bad", "a\nb")]
    headers, refusals = merge_headers(mapped, explicit)
    assert headers == [("X-RouteType", "b"), ("X-ROUTEVALUE", "Sales"), ("X-New", "1")]
    assert [r.name for r in refusals] == ["Via", "X-Bad"]


def test_refused_explicit_keeps_mapped_value() -> None:
    headers, refusals = merge_headers([("X-A", "good")], [("X-A", "bad\r\n")])
    assert headers == [("X-A", "good")]
    assert refusals == [HeaderRefusal("X-A", "value contains CR")]


def test_keys_pressed_before_the_agent_listens_are_kept() -> None:
    """A key that arrives before the agent subscribes (RTP ahead of the ACK) is not lost."""
    from byeline.edge.call import Call
    from byeline.edge.server import EdgeConfig, SipEdge
    from byeline.edge.trunk import TrunkSet, load_trunk

    examples = Path(__file__).resolve().parents[2] / "src" / "byeline" / "examples"
    edge = SipEdge(EdgeConfig(), TrunkSet([load_trunk(examples / "five9-trunk.json")]))
    call = Call(call_id="SCL_k", identity="sip_1", attributes={}, controller=edge)
    call.emit("dtmf", "1")
    call.emit("dtmf", "2")
    heard: list[str] = []
    call.on("dtmf", heard.append)
    assert heard == ["1", "2"]
    call.emit("dtmf", "3")
    assert heard == ["1", "2", "3"]
