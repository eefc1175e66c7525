"""Nothing a caller, an agent, an LLM or an operator types can forge a header on the wire.

The BYE is built exactly as ``SipEdge.hangup_call`` builds it: the call's current attributes go
through ``headers_from_attributes`` (the trunk's ``attributes_to_headers``), then
``merge_headers`` with the explicit headers of ``Call.hangup``, then ``Dialog.create_request``;
then it is serialized, re-parsed and re-framed. The properties:

* the header names on the wire are exactly the dialog's own plus the accepted ones;
* every routing value is at most 1024 bytes, with no CR, LF or NUL;
* the bytes are one message: a stream framer reads one message and then the next one sent.

Hostile values come from every source that reaches a header: raw attribute values, the route
file's ``value``/``reason``, the metadata JSON built from what the caller said, an LLM's free
text taken as a route, and (end to end, over UDP) an agent that sets all of them at once.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from byeline.agent.handback import SummarizedRouteDecision
from byeline.agent.routes import InputMode, Route, RouteDecision, RouteType, parse_routes
from byeline.app import build_app
from byeline.config import ServeConfig
from byeline.edge.attributes import check_header, headers_from_attributes, merge_headers
from byeline.edge.call import Call
from byeline.edge.trunk import load_trunk
from byeline.five9.simulator import CallPlan, place_call
from byeline.five9.variables import default_call_variables
from byeline.sip.dialog import Dialog
from byeline.sip.message import Request, StreamFramer, parse_message

ROOT = Path(__file__).resolve().parents[2]
TRUNK = load_trunk(ROOT / "tests" / "data" / "security" / "trunk-torture.json")
ROUTE_ATTRS = ("five9.route_reason", "five9.route_type", "five9.route_value", "five9.metadata")

INVITE = (
    b"INVITE sip:+18005550100@127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKsafety;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:+15555550123@127.0.0.1>;tag=five9\r\n"
    b"To: <sip:+18005550100@127.0.0.1>\r\n"
    b"Call-ID: safety@127.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:five9@127.0.0.1:5070>\r\n"
    b"Record-Route: <sip:proxy.example.com;lr>\r\n"
    b"X-CallID: 300000000001\r\n"
    b"Content-Length: 0\r\n\r\n"
)
DIALOG_HEADERS = ["Via", "Max-Forwards", "Route", "From", "To", "Call-ID", "CSeq", "User-Agent"]

# Text that tries every way out of a header value: line ends (CRLF, bare CR/LF, and the Unicode
# ones a careless splitlines() would honour), NUL and other controls, a smuggled second
# message, folding, and sheer length.
NASTY = [
    "\r\nX-RouteType: hangup",
    "skill\nX-Injected: 1",
    "a\rb",
    "a\x00b",
    "a\x85b\u2028c\u2029d",
    "\r\n\r\nBYE sip:victim@example.com SIP/2.0\r\nContent-Length: 0\r\n\r\n",
    "x\r\n continued",
    "Content-Length: 0",
    "\t tabbed \t",
    "é" * 600,
    "A" * 1025,
    "\x7f\x1b[31m",
]
hostile_text = st.one_of(
    st.sampled_from(NASTY),
    st.text(max_size=64),
    st.text(alphabet=st.sampled_from("\r\n\x00:;, X-abc\t\u2028\x85é"), max_size=40),
    st.text(min_size=1000, max_size=1100),
)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _dialog() -> Dialog:
    invite = parse_message(INVITE)
    assert isinstance(invite, Request)
    return Dialog.from_invite(invite, "edge-tag")


def build_bye(
    attributes: dict[str, str],
    explicit: list[tuple[str, str]] = (),  # type: ignore[assignment]
) -> tuple[bytes, list[tuple[str, str]]]:
    """The BYE bytes as ``SipEdge.hangup_call`` makes them, and the headers it accepted."""
    mapped = headers_from_attributes(TRUNK, attributes, stage="bye")
    safe, _refused = merge_headers(mapped, list(explicit))
    bye = _dialog().create_request(
        "BYE",
        via="SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKbye;rport",
        headers=[("User-Agent", "byeline/0.1"), *safe],
    )
    return bye.serialize(), safe


def assert_safe_on_the_wire(wire: bytes, safe: list[tuple[str, str]]) -> None:
    parsed = parse_message(wire)
    assert isinstance(parsed, Request) and parsed.method == "BYE"
    names = [n for n, _ in parsed.headers]
    assert names == [*DIALOG_HEADERS, *(n for n, _ in safe), "Content-Length"]
    for name, value in parsed.headers:
        if name.lower().startswith("x-"):
            assert len(value.encode()) <= 1024
            assert not re.search(r"[\r\n\x00]", value)
    for (name, value), (wire_name, wire_value) in zip(
        safe, list(parsed.headers)[len(DIALOG_HEADERS) :], strict=False
    ):
        assert (wire_name, wire_value) == (name, value.strip(" \t"))
    # One message on a stream: the framer reads exactly it, then the next one intact.
    follow = b"OPTIONS sip:x@y SIP/2.0\r\nContent-Length: 0\r\n\r\n"
    framer = StreamFramer()
    framer.feed(wire + follow)
    assert list(framer.messages()) == [wire, follow]


# -- raw attribute values ----------------------------------------------------------------------


@SETTINGS
@given(st.fixed_dictionaries({k: hostile_text for k in ROUTE_ATTRS}))
def test_attribute_values_cannot_forge_headers(attributes: dict[str, str]) -> None:
    wire, safe = build_bye(attributes)
    assert_safe_on_the_wire(wire, safe)
    expected = {
        TRUNK.attributes_to_headers[k]
        for k, v in attributes.items()
        if v and not _refused(TRUNK.attributes_to_headers[k], v)
    }
    assert {n for n, _ in safe} == expected


@SETTINGS
@given(st.lists(st.tuples(st.text(max_size=20), hostile_text), max_size=6))
def test_explicit_hangup_headers_cannot_forge_headers(explicit: list[tuple[str, str]]) -> None:
    """``Call.hangup(headers=...)`` names and values, both hostile."""
    wire, safe = build_bye({"five9.route_type": "skill_transfer"}, explicit)
    assert_safe_on_the_wire(wire, safe)
    reserved = {"via", "from", "to", "call-id", "cseq", "contact", "content-length", "route"}
    assert not {n.lower() for n, _ in safe} & reserved


@pytest.mark.parametrize("name", ["a", "b", "y", "Y", "s", "j", "d"])
def test_compact_form_names_are_refused(name: str) -> None:
    """Regression (fuzz/run.py ``header``): "y" passed the guard and went out as "Identity"."""
    wire, safe = build_bye({}, [(name, "forged")])
    assert safe == []
    assert_safe_on_the_wire(wire, safe)
    with pytest.raises(ValueError, match="compact form"):
        check_header(name, "forged")


def _refused(name: str, value: str) -> bool:
    try:
        check_header(name, value)
    except ValueError:
        return True
    return False


# -- route file values, transcript summaries, LLM output -----------------------------------------


@SETTINGS
@given(hostile_text, hostile_text)
def test_route_file_values_are_refused_or_safe(value: str, reason: str) -> None:
    doc = {
        "routes": [{"name": "billing", "type": "skill_transfer", "value": value, "reason": reason}],
        "fallback": "billing",
    }
    try:
        routes = parse_routes(doc)
    except ValueError:
        return  # the loader refused it: it never reaches a call
    decision = RouteDecision(routes.routes[0])
    wire, safe = build_bye(decision.attributes(routes, {}))
    assert_safe_on_the_wire(wire, safe)
    # Whatever the loader accepted is sent in full: no silent loss of routing data.
    assert ("X-RouteValue", value) in safe or not value
    assert ("X-RouteReason", reason) in safe or not reason


@SETTINGS
@given(
    st.lists(hostile_text, max_size=8),
    hostile_text,
    st.floats(allow_nan=False, allow_infinity=False) | st.none(),
    st.dictionaries(
        st.sampled_from(["five9.call_id", "sip.h.x-callid", "five9.session_id"]), hostile_text
    ),
)
def test_transcript_summary_metadata_is_json_within_limits(
    heard: list[str], intent: str, confidence: float | None, call_attrs: dict[str, str]
) -> None:
    route = Route("billing", RouteType.SKILL_TRANSFER, "Billing", "caller asked for billing")
    summary = " / ".join(h.strip() for h in heard if h.strip())[-240:] or None
    decision = SummarizedRouteDecision(
        route, InputMode.SPEECH, 1, intent, confidence, summary=summary
    )
    metadata = decision.metadata(call_attrs)
    assert len(metadata.encode()) <= 1024
    assert metadata.isascii() and metadata.isprintable()
    json.loads(metadata)
    wire, safe = build_bye({"five9.metadata": metadata})
    assert safe == [("X-MetaData", metadata)]
    assert_safe_on_the_wire(wire, safe)


@SETTINGS
@given(hostile_text, hostile_text, hostile_text, hostile_text, st.sampled_from(list(RouteType)))
def test_llm_free_text_as_a_route_cannot_forge_headers(
    name: str, value: str, reason: str, intent: str, kind: RouteType
) -> None:
    """An LLM that answers with any text for every field of its decision."""

    class _Routes:
        class result_attributes:
            reason, type, value, metadata = ROUTE_ATTRS

    decision = RouteDecision(Route(name, kind, value, reason), intent=intent, confidence=0.5)
    attributes = decision.attributes(_Routes(), {})  # type: ignore[arg-type]
    assert len(attributes["five9.metadata"].encode()) <= 1024
    wire, safe = build_bye(attributes)
    assert_safe_on_the_wire(wire, safe)
    assert dict(safe).get("X-MetaData") == attributes["five9.metadata"]


# -- end to end: a hostile agent, a real edge, the Five9 simulator over UDP ------------------------

HOSTILE = {
    "five9.route_type": "skill_transfer\r\nX-RouteType: hangup",
    "five9.route_value": "Billing\r\n\r\nBYE sip:victim@example.com SIP/2.0\r\n\r\n",
    "five9.route_reason": "r" * 1025,
    "five9.metadata": json.dumps({"summary": "ok"}),
}


@pytest.fixture
def rtp_ports() -> Iterator[str]:
    yield "36000-36100"


async def test_hostile_agent_end_to_end_over_udp(tmp_path: Path, rtp_ports: str) -> None:
    cfg = ServeConfig(
        trunk=[str(ROOT / "tests/data/security/trunk-torture.json")],
        sip=["udp:127.0.0.1:0"],
        db=str(tmp_path / "calls.db"),
        rtp_ports=rtp_ports,
        shutdown_grace=1.0,
    )
    app = build_app(cfg)

    async def hostile_agent(call: Call) -> None:
        call.update_attributes(HOSTILE)
        await call.hangup(
            headers=[
                ("X-Extra", "fine"),
                ("X-Evil", "a\nVia: SIP/2.0/UDP evil.example.com"),
                ("y", "forged-identity"),
                ("Via", "SIP/2.0/UDP evil.example.com"),
            ]
        )

    app.edge.agent = hostile_agent
    await app.start()
    try:
        plan = CallPlan(
            target=f"127.0.0.1:{app.bound[0].port}",
            call_variables=default_call_variables(ani="+15555550123", dnis="+18005550100"),
            timeout=10,
            rtp_ports=(36200, 36300),
        )
        outcome = await asyncio.wait_for(place_call(plan), 20)
        assert outcome.hung_up_by == "agent"
        # Five9 reads only the safe headers, each exactly once, and nothing forged.
        assert outcome.from_iva.pairs == [
            ("X-MetaData", HOSTILE["five9.metadata"]),
            ("X-Extra", "fine"),
        ]
        assert app.store is not None
        await app.store.aflush()
        [summary] = app.store.list_calls(limit=1)
        record = app.store.get_call(summary.call_id)
        assert record is not None
        [bye] = [t.raw for t in record.trace if t.direction == "out" and t.first_line[:4] == "BYE "]
        parsed = parse_message(bye)
        names = [n for n, _ in parsed.headers]
        dialog = ["Via", "Max-Forwards", "From", "To", "Call-ID", "CSeq", "User-Agent"]
        assert names == [*dialog, "X-MetaData", "X-Extra", "Content-Length"]
        framer = StreamFramer()
        framer.feed(bye)
        assert list(framer.messages()) == [bye]
        refused = {r["name"] for r in record.header_refusals}
        assert refused == {"X-RouteType", "X-RouteValue", "X-RouteReason", "X-Evil", "y", "Via"}
    finally:
        await app.stop()
