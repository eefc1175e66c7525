"""Responses, dialogs (RFC 3261 §12) and the UAS 2xx retransmission on a virtual clock."""

from __future__ import annotations

import re

import pytest

from byeline.sip.dialog import (
    REASONS,
    AckTimedOut,
    AnswerRetransmitter,
    Dialog,
    make_response,
    name_addr_uri,
    new_branch,
    new_tag,
)
from byeline.sip.message import Headers, Request, Response, parse_message
from byeline.sip.transaction import TimerConfig, Transmit

VIA1 = "SIP/2.0/UDP sbc.five9.example:5060;branch=z9hG4bK-sbc;received=198.51.100.7"
VIA2 = "SIP/2.0/TCP 10.0.0.5;branch=z9hG4bK-a, SIP/2.0/UDP 10.0.0.6;branch=z9hG4bK-b"
FROM = '"Five9, IVR" <sip:+15551230000@five9.example;user=phone>;tag=f9-from'
TO = "Agent <sip:agent@byeline.example>"
CALL_ID = "dlg-1@198.51.100.7"
CONTACT = '"Doe, <J>" <sip:ivr@198.51.100.7:5070;transport=udp>;expires=60, <sip:other@x>'


def invite(*extra: str, uri: str = "sip:agent@byeline.example", to: str = TO) -> Request:
    data = "\r\n".join(
        [
            f"INVITE {uri} SIP/2.0",
            f"Via: {VIA1}",
            f"v: {VIA2}",
            "Max-Forwards: 69",
            f"From: {FROM}",
            f"To: {to}",
            f"Call-ID: {CALL_ID}",
            "CSeq: 314 INVITE",
            *extra,
            "Content-Length: 0",
            "",
            "",
        ]
    ).encode()
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


# -- make_response ---------------------------------------------------------------------------


def test_make_response_copies_headers_exactly_and_adds_to_tag() -> None:
    req = invite(f"Contact: {CONTACT}", "Timestamp: 54")
    r = make_response(req, 486, to_tag="ours", headers=[("Server", "byeline")])
    assert (r.status, r.reason, r.body) == (486, "Busy Here", b"")
    assert (
        r.serialize()
        == (
            "SIP/2.0 486 Busy Here\r\n"
            f"Via: {VIA1}\r\n"
            f"Via: {VIA2}\r\n"
            f"From: {FROM}\r\n"
            f"To: {TO};tag=ours\r\n"
            f"Call-ID: {CALL_ID}\r\n"
            "CSeq: 314 INVITE\r\n"
            "Server: byeline\r\n"
            "Content-Length: 0\r\n"
            "\r\n"
        ).encode()
    )


def test_make_response_100_has_no_to_tag_and_echoes_timestamp() -> None:
    req = invite("Timestamp: 54.2 0.1", "Record-Route: <sip:rr.example;lr>")
    r = make_response(req, 100, to_tag="ours")
    assert r.reason == "Trying"
    assert list(r.headers) == [
        ("Via", VIA1),
        ("Via", VIA2),
        ("From", FROM),
        ("To", TO),
        ("Call-ID", CALL_ID),
        ("CSeq", "314 INVITE"),
        ("Timestamp", "54.2 0.1"),
    ]


def test_make_response_keeps_an_existing_to_tag() -> None:
    req = invite(to=f"{TO};tag=existing")
    assert make_response(req, 200, to_tag="ours").headers.get("To") == f"{TO};tag=existing"


def test_make_response_without_to_tag() -> None:
    assert make_response(invite(), 404).headers.get("To") == TO


def test_make_response_reason_and_body() -> None:
    req = invite()
    assert make_response(req, 299).reason == "Unknown"
    assert make_response(req, 603, "Declined").reason == "Declined"
    assert make_response(req, 200, body=b"v=0\r\n").body == b"v=0\r\n"
    assert REASONS[481] == "Call/Transaction Does Not Exist"


def test_make_response_on_a_partial_request_with_missing_headers() -> None:
    # The edge's 400 path: headers it cannot echo come out empty, never raise.
    req = Request(method="OPTIONS", uri="sip:x@y", headers=Headers([("Via", VIA1)]))
    r = make_response(req, 400, to_tag="t")
    assert list(r.headers) == [
        ("Via", VIA1),
        ("From", ""),
        ("To", ";tag=t"),
        ("Call-ID", ""),
        ("CSeq", ""),
    ]


@pytest.mark.parametrize(
    ("status", "copied"), [(100, False), (180, True), (200, True), (486, False)]
)
def test_make_response_copies_record_route_on_dialog_creating_responses(
    status: int, copied: bool
) -> None:
    req = invite(
        "Record-Route: <sip:p1.example;lr>, <sip:p2.example;lr>",
        "Record-Route: <sip:p3.example;lr;ftag=x>",
    )
    r = make_response(req, status, to_tag="ours")
    expected = ["<sip:p1.example;lr>, <sip:p2.example;lr>", "<sip:p3.example;lr;ftag=x>"]
    assert r.headers.getall("Record-Route") == (expected if copied else [])


def test_make_response_to_bye_does_not_copy_record_route() -> None:
    bye = Request(
        method="BYE",
        uri="sip:x@y",
        headers=Headers([("Via", VIA1), ("Record-Route", "<sip:p1;lr>"), ("CSeq", "2 BYE")]),
    )
    assert make_response(bye, 200).headers.getall("Record-Route") == []


def test_new_tag_and_branch() -> None:
    tags = {new_tag() for _ in range(50)}
    assert len(tags) == 50
    assert all(re.fullmatch(r"[0-9a-f]{10}", t) for t in tags)  # 40 random bits ≥ 32
    branch = new_branch()
    assert re.fullmatch(r"z9hG4bK[0-9a-f]{16}", branch)
    assert branch != new_branch()


# -- Dialog as UAS ---------------------------------------------------------------------------


def uas_dialog() -> Dialog:
    req = invite(
        f"Contact: {CONTACT}",
        "Record-Route: <sip:p1.five9.example;lr>, <sip:p2.five9.example;lr>",
        "Record-Route: <sip:p3.five9.example;lr>",
    )
    return Dialog.from_invite(req, "ours")


def test_dialog_from_invite() -> None:
    d = uas_dialog()
    assert d == Dialog(
        call_id=CALL_ID,
        local_tag="ours",
        remote_tag="f9-from",
        local_uri=TO,
        remote_uri='"Five9, IVR" <sip:+15551230000@five9.example;user=phone>',
        remote_target="sip:ivr@198.51.100.7:5070;transport=udp",
        route_set=[
            "<sip:p1.five9.example;lr>",
            "<sip:p2.five9.example;lr>",
            "<sip:p3.five9.example;lr>",
        ],
        local_cseq=1,
        remote_cseq=314,
        secure=False,
    )


def test_dialog_from_invite_without_contact_or_routes() -> None:
    d = Dialog.from_invite(invite(uri="sips:agent@byeline.example"), "ours", local_cseq=10)
    assert d.remote_target == "sips:agent@byeline.example"
    assert d.route_set == []
    assert d.secure
    assert d.local_cseq == 10


def test_dialog_from_invite_addr_spec_contact() -> None:
    d = Dialog.from_invite(invite("m: sip:ivr@198.51.100.7;expires=30"), "ours")
    assert d.remote_target == "sip:ivr@198.51.100.7"


def test_dialog_strips_only_the_tag_parameter() -> None:
    d = Dialog.from_invite(invite(to="<sip:agent@x.example> ; tag = old ; foo=bar;;"), "ours")
    assert d.local_uri == "<sip:agent@x.example>;foo=bar"
    req = invite()
    req.headers.set("From", "sip:ivr@five9.example;TAG=abc")
    d = Dialog.from_invite(req, "ours")
    assert (d.remote_uri, d.remote_tag) == ("sip:ivr@five9.example", "abc")


def test_bye_with_loose_routing() -> None:
    d = uas_dialog()
    bye = d.create_request(
        "BYE",
        via="SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKbye;rport",
        contact="<sip:agent@192.0.2.10>",
        headers=[("X-RouteType", "skill"), ("X-RouteValue", "Sales")],
    )
    assert d.local_cseq == 2
    assert (
        bye.serialize()
        == (
            "BYE sip:ivr@198.51.100.7:5070;transport=udp SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKbye;rport\r\n"
            "Max-Forwards: 70\r\n"
            "Route: <sip:p1.five9.example;lr>\r\n"
            "Route: <sip:p2.five9.example;lr>\r\n"
            "Route: <sip:p3.five9.example;lr>\r\n"
            f"From: {TO};tag=ours\r\n"
            'To: "Five9, IVR" <sip:+15551230000@five9.example;user=phone>;tag=f9-from\r\n'
            f"Call-ID: {CALL_ID}\r\n"
            "CSeq: 2 BYE\r\n"
            "Contact: <sip:agent@192.0.2.10>\r\n"
            "X-RouteType: skill\r\n"
            "X-RouteValue: Sales\r\n"
            "Content-Length: 0\r\n"
            "\r\n"
        ).encode()
    )
    again = parse_message(bye.serialize())
    assert d.matches(again, we_are_uas=False) is False  # our own request is not theirs
    assert (again.from_tag, again.to_tag) == ("ours", "f9-from")


def test_cseq_increments_and_explicit_cseq() -> None:
    d = uas_dialog()
    assert d.create_request("INFO", via="v").cseq == (2, "INFO")
    assert d.create_request("BYE", via="v").cseq == (3, "BYE")
    assert d.create_request("ACK", via="v", cseq=314).cseq == (314, "ACK")
    assert d.local_cseq == 3
    assert d.create_request("BYE", via="v", body=b"x").body == b"x"


@pytest.mark.parametrize(
    "first",
    [
        "<sip:p1.five9.example>",
        "<sip:p1.five9.example;transport=tcp>",
        "<sip:p1.five9.example>;lr",  # lr outside <> is a header param, not the URI's
        "<sip:lr;x@p1.five9.example>",  # lr in the user part
        "<sip:p1.five9.example;lrx>",
    ],
)
def test_bye_with_strict_routing(first: str) -> None:
    d = uas_dialog()
    d.route_set = [first, "<sip:p2.five9.example;lr>"]
    bye = d.create_request("BYE", via="v")
    assert bye.uri == name_addr_uri(first)
    assert bye.headers.getall("Route") == [
        "<sip:p2.five9.example;lr>",
        "<sip:ivr@198.51.100.7:5070;transport=udp>",
    ]


@pytest.mark.parametrize(
    "first",
    [
        "<sip:p1.example;lr>",
        "<sip:p1.example;LR=on;x=y>",
        "<sip:u@p1.example; lr ?h=v>",
        "sip:p1.example;lr",
    ],
)
def test_loose_route_spellings(first: str) -> None:
    d = uas_dialog()
    d.route_set = [first]
    bye = d.create_request("BYE", via="v")
    if first == "sip:p1.example;lr":
        # An addr-spec route: its ;lr is a header parameter, so this is strict.
        assert bye.uri == "sip:p1.example"
    else:
        assert bye.uri == d.remote_target
        assert bye.headers.getall("Route") == [first]


def test_bye_to_an_rfc2543_peer_has_no_empty_tags() -> None:
    req = invite()
    req.headers.set("From", "<sip:+13035551111@ift.example;user=phone>")
    d = Dialog.from_invite(req, "ours")
    assert d.remote_tag == ""
    bye = d.create_request("BYE", via="v")
    assert bye.headers.get("To") == "<sip:+13035551111@ift.example;user=phone>"
    assert bye.headers.get("From") == f"{TO};tag=ours"
    # The peer's in-dialog requests carry no From tag and still match.
    peer_bye = Request(
        method="BYE",
        uri="sip:agent@byeline.example",
        headers=Headers(
            [
                ("From", "<sip:+13035551111@ift.example;user=phone>"),
                ("To", f"{TO};tag=ours"),
                ("Call-ID", CALL_ID),
            ]
        ),
    )
    assert d.matches(peer_bye)


def test_check_remote_cseq() -> None:
    d = uas_dialog()
    assert d.remote_cseq == 314

    def req(method: str, n: int) -> Request:
        return Request(method=method, uri="sip:x", headers=Headers([("CSeq", f"{n} {method}")]))

    assert d.check_remote_cseq(req("INFO", 313)) is False
    assert d.remote_cseq == 314
    assert d.check_remote_cseq(req("INFO", 314)) is True
    assert d.check_remote_cseq(req("BYE", 400)) is True
    assert d.remote_cseq == 400
    assert d.check_remote_cseq(req("ACK", 1)) is True
    assert d.check_remote_cseq(req("CANCEL", 2)) is True
    assert d.remote_cseq == 400
    assert d.check_remote_cseq(req("INFO", 399)) is False
    d.remote_cseq = None
    assert d.check_remote_cseq(req("INFO", 1)) is True
    assert d.remote_cseq == 1


def test_matches() -> None:
    d = uas_dialog()

    def msg(
        cls: type[Request] | type[Response], frm: str, to: str, call_id: str = CALL_ID
    ) -> Request | Response:
        h = Headers([("From", f"<sip:a@b>;tag={frm}"), ("To", f"<sip:c@d>;tag={to}")])
        if call_id:
            h.add("Call-ID", call_id)
        return cls(headers=h)

    assert d.matches(msg(Request, "f9-from", "ours"))
    assert not d.matches(msg(Request, "ours", "f9-from"))
    assert not d.matches(msg(Request, "f9-from", "other"))
    assert not d.matches(msg(Request, "f9-from", "ours", call_id="other"))
    assert not d.matches(msg(Request, "f9-from", "ours", call_id=""))
    assert d.matches(msg(Response, "ours", "f9-from"))
    assert not d.matches(msg(Response, "f9-from", "ours"))


# -- Dialog as UAC ---------------------------------------------------------------------------


def test_dialog_from_response() -> None:
    our_invite = invite()
    our_invite.headers.set("CSeq", "7 INVITE")
    ok = make_response(
        invite(
            "Record-Route: <sip:p1.example;lr>, <sip:p2.example;lr>",
            "Record-Route: <sip:p3.example;lr>",
        ),
        200,
        to_tag="callee",
        headers=[("Contact", "<sip:callee@203.0.113.9:5080>;+sip.instance=x")],
    )
    d = Dialog.from_response(our_invite, ok)
    assert d == Dialog(
        call_id=CALL_ID,
        local_tag="f9-from",
        remote_tag="callee",
        local_uri='"Five9, IVR" <sip:+15551230000@five9.example;user=phone>',
        remote_uri=TO,
        remote_target="sip:callee@203.0.113.9:5080",
        route_set=["<sip:p3.example;lr>", "<sip:p2.example;lr>", "<sip:p1.example;lr>"],
        local_cseq=7,
        remote_cseq=None,
    )
    assert d.create_request("BYE", via="v").cseq == (8, "BYE")
    assert d.matches(ok)


def test_dialog_from_response_without_contact() -> None:
    ok = Response(
        headers=Headers([("To", f"{TO};tag=t"), ("Call-ID", CALL_ID), ("CSeq", "314 INVITE")])
    )
    d = Dialog.from_response(invite(), ok)
    assert d.remote_target == "sip:agent@byeline.example"
    assert d.route_set == []


@pytest.mark.parametrize(
    ("value", "uri"),
    [
        ("<sip:a@b;lr>", "sip:a@b;lr"),
        ('"x <y>, \\"z" <sip:a@b?X=1>;p=1', "sip:a@b?X=1"),
        ("Name < sip:a@b >", "sip:a@b"),
        ("sip:a@b;transport=tcp", "sip:a@b"),
        ("  sip:a@b  ", "sip:a@b"),
        ("<sip:a@b", "sip:a@b"),
        ("", ""),
    ],
)
def test_name_addr_uri(value: str, uri: str) -> None:
    assert name_addr_uri(value) == uri


# -- AnswerRetransmitter ----------------------------------------------------------------------


def run(r: AnswerRetransmitter, until: float) -> list[tuple[float, Transmit | AckTimedOut]]:
    events: list[tuple[float, Transmit | AckTimedOut]] = []
    while (deadline := r.deadline) is not None and deadline <= until:
        events.extend((deadline, out) for out in r.on_timer(deadline))
    return events


OK = b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"


def test_answer_retransmission_schedule_until_ack_timeout() -> None:
    r = AnswerRetransmitter(OK, 0.0)
    assert r.deadline == 0.5
    events = run(r, 100.0)
    times = [t for t, out in events if isinstance(out, Transmit)]
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(
        out == Transmit(OK, retransmission=True) for _, out in events if isinstance(out, Transmit)
    )
    assert [(t, out) for t, out in events if not isinstance(out, Transmit)] == [
        (32.0, AckTimedOut())
    ]
    assert r.deadline is None
    assert r.on_timer(50.0) == []
    assert not r.acked


def test_answer_retransmission_from_a_later_origin_and_custom_timers() -> None:
    r = AnswerRetransmitter(OK, 100.0, TimerConfig(t1=0.25, t2=1.0))
    events = run(r, 1000.0)
    assert [t for t, _ in events] == [
        100.25,
        100.75,
        101.75,
        *(101.75 + k for k in range(1, 15)),
        116.0,
    ]
    assert events[-1][1] == AckTimedOut()


def test_answer_retransmission_stops_on_ack() -> None:
    r = AnswerRetransmitter(OK, 0.0)
    assert [t for t, _ in run(r, 4.0)] == [0.5, 1.5, 3.5]
    assert r.deadline == 7.5
    assert r.retransmit() == Transmit(OK, retransmission=True)  # a retransmitted INVITE
    assert r.deadline == 7.5  # does not disturb the schedule
    r.ack()
    assert r.acked
    assert r.deadline is None
    assert r.on_timer(7.5) == []
    assert r.on_timer(100.0) == []
    assert r.retransmit() is None


def test_answer_retransmission_early_and_late_calls() -> None:
    r = AnswerRetransmitter(OK, 0.0)
    assert r.on_timer(0.49) == []  # early: harmless
    assert r.deadline == 0.5
    assert r.on_timer(0.6) == [Transmit(OK, retransmission=True)]
    assert r.deadline == pytest.approx(1.6)  # re-armed from when it ran
    assert r.on_timer(40.0) == [AckTimedOut()]  # far too late: the ACK wait is over
    assert r.deadline is None
