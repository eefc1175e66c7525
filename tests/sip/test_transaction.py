"""RFC 3261 §17 / RFC 6026 transactions on a virtual clock: exact timer schedules."""

from __future__ import annotations

import pytest

from byeline.sip.message import Headers, Request, Response, parse_message
from byeline.sip.transaction import (
    ClientInviteTransaction,
    ClientTransaction,
    Deliver,
    Output,
    ServerInviteTransaction,
    ServerTransaction,
    State,
    Terminated,
    TimedOut,
    TimerConfig,
    Transaction,
    Transmit,
)

VIA = "SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bK-f9-1;rport"
FROM = '"Five9" <sip:ivr@five9.example>;tag=f9'
TO = "<sip:agent@byeline.example>"


def request(method: str, *, cseq: int = 1, extra: tuple[str, ...] = ()) -> Request:
    data = "\r\n".join(
        [
            f"{method} sip:agent@byeline.example SIP/2.0",
            f"Via: {VIA}",
            "Max-Forwards: 70",
            f"From: {FROM}",
            f"To: {TO}",
            "Call-ID: txn-1@198.51.100.20",
            f"CSeq: {cseq} {method}",
            *extra,
            "Content-Length: 0",
            "",
            "",
        ]
    ).encode()
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


def response(status: int, *, method: str = "INVITE", to_tag: str | None = "uas") -> Response:
    to = f"{TO};tag={to_tag}" if to_tag else TO
    h = Headers(
        [
            ("Via", VIA),
            ("From", FROM),
            ("To", to),
            ("Call-ID", "txn-1@198.51.100.20"),
            ("CSeq", f"1 {method}"),
        ]
    )
    return Response(status=status, reason=f"R{status}", headers=h)


def drive(txn: Transaction, until: float) -> list[tuple[float, Output]]:
    """Fire every timer, at exactly its deadline, up to ``until``."""
    events: list[tuple[float, Output]] = []
    while (deadline := txn.deadline) is not None and deadline <= until:
        events.extend((deadline, out) for out in txn.on_timer(deadline))
    return events


def transmit_times(events: list[tuple[float, Output]]) -> list[float]:
    return [t for t, out in events if isinstance(out, Transmit)]


def others(events: list[tuple[float, Output]]) -> list[tuple[float, Output]]:
    return [(t, out) for t, out in events if not isinstance(out, Transmit)]


def test_timer_config_defaults() -> None:
    c = TimerConfig()
    assert (c.t1, c.t2, c.t4, c.timeout) == (0.5, 4.0, 5.0, 32.0)
    assert TimerConfig(t1=0.1).timeout == pytest.approx(6.4)


def test_base_transaction_has_no_timers_of_its_own() -> None:
    txn = Transaction(reliable=False, config=TimerConfig())
    assert txn.state is State.TRYING and txn.key is None
    assert txn.deadline is None
    assert txn.on_timer(1e9) == []
    with pytest.raises(NotImplementedError):
        txn._fire("X", 0.0)


# -- INVITE server ---------------------------------------------------------------------------


def test_invite_server_100_then_final_and_retransmissions_in_proceeding() -> None:
    invite = request("INVITE")
    txn = ServerInviteTransaction(invite, reliable=False)
    assert txn.state is State.PROCEEDING
    assert txn.receive_request(invite, 0.0) == []  # nothing sent yet: nothing to resend
    trying = response(100, to_tag=None)
    assert txn.respond(trying, 0.0) == [Transmit(trying.serialize())]
    assert txn.deadline is None
    assert txn.receive_request(invite, 0.3) == [Transmit(trying.serialize(), retransmission=True)]
    ringing = response(180)
    assert txn.respond(ringing, 0.4) == [Transmit(ringing.serialize())]
    assert txn.receive_request(invite, 0.5) == [Transmit(ringing.serialize(), retransmission=True)]
    assert txn.state is State.PROCEEDING
    assert txn.on_timer(100.0) == []
    assert txn.request is invite  # kept until the final response


def test_server_transactions_let_go_of_the_request_at_the_final_response() -> None:
    # Accepted, Completed and Confirmed wait 64*T1 on the response's bytes alone: an ended
    # call's transactions hold no parsed message (the edge keeps tens of thousands of them).
    for status in (200, 486):
        invite = request("INVITE")
        txn = ServerInviteTransaction(invite, reliable=False)
        final = response(status)
        txn.respond(final, 0.0)
        assert txn.request is None
        if status >= 300:
            assert txn.receive_request(invite, 0.1) == [
                Transmit(final.serialize(), retransmission=True)
            ]
    bye = request("BYE", cseq=2)
    server = ServerTransaction(bye, reliable=False)
    ok = response(200, method="BYE")
    server.respond(ok, 0.0)
    assert server.request is None
    assert server.receive_request(bye, 1.0) == [Transmit(ok.serialize(), retransmission=True)]
    client = ClientTransaction(request("BYE", cseq=3), reliable=False)
    client.start(0.0)
    client.receive_response(response(200, method="BYE"), 0.1)
    assert client.request.method == "BYE"  # a client transaction keeps its request


def test_invite_server_non_2xx_timer_g_then_h() -> None:
    invite = request("INVITE")
    txn = ServerInviteTransaction(invite, reliable=False)
    busy = response(486)
    assert txn.respond(busy, 1.0) == [Transmit(busy.serialize())]
    assert txn.state is State.COMPLETED
    assert txn.deadline == 1.5
    assert txn.on_timer(1.49) == []  # early: nothing due
    events = drive(txn, 100.0)
    # G: T1, 2T1, 4T1, then capped at T2 = 4 s; H at 64*T1 = 32 s after the response.
    assert transmit_times(events) == [1.5, 2.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5, 32.5]
    assert all(
        out == Transmit(busy.serialize(), retransmission=True)
        for _, out in events
        if isinstance(out, Transmit)
    )
    assert others(events) == [(33.0, TimedOut()), (33.0, Terminated())]
    assert txn.terminated
    assert txn.deadline is None
    assert txn.receive_request(invite, 40.0) == []


def test_invite_server_custom_timers() -> None:
    txn = ServerInviteTransaction(
        request("INVITE"), reliable=False, config=TimerConfig(t1=0.25, t2=1.0, t4=2.0)
    )
    txn.respond(response(503), 0.0)
    events = drive(txn, 100.0)
    assert transmit_times(events) == [
        0.25,
        0.75,
        1.75,
        2.75,
        3.75,
        4.75,
        5.75,
        6.75,
        7.75,
        8.75,
        9.75,
        10.75,
        11.75,
        12.75,
        13.75,
        14.75,
        15.75,
    ]
    assert others(events) == [(16.0, TimedOut()), (16.0, Terminated())]


def test_invite_server_retransmitted_invite_in_completed_resends_final() -> None:
    invite = request("INVITE")
    txn = ServerInviteTransaction(invite, reliable=False)
    txn.respond(response(100, to_tag=None), 0.0)
    final = response(404)
    txn.respond(final, 0.1)
    assert txn.receive_request(invite, 0.2) == [Transmit(final.serialize(), retransmission=True)]
    with pytest.raises(RuntimeError, match="cannot respond in state completed"):
        txn.respond(response(200), 0.3)


def test_invite_server_ack_confirms_then_timer_i() -> None:
    invite = request("INVITE")
    ack = request("ACK")
    txn = ServerInviteTransaction(invite, reliable=False)
    final = response(486)
    txn.respond(final, 0.0)
    assert transmit_times(drive(txn, 2.0)) == [0.5, 1.5]
    assert txn.receive_request(ack, 2.0) == []
    assert txn.state is State.CONFIRMED
    assert txn.deadline == 7.0  # I = T4
    assert txn.receive_request(invite, 3.0) == []  # absorbed
    assert txn.receive_request(ack, 3.0) == []  # absorbed
    assert drive(txn, 100.0) == [(7.0, Terminated())]
    assert txn.terminated


def test_invite_server_ack_in_proceeding_is_ignored() -> None:
    txn = ServerInviteTransaction(request("INVITE"), reliable=False)
    assert txn.receive_request(request("ACK"), 0.0) == []
    assert txn.state is State.PROCEEDING


def test_invite_server_2xx_accepted_then_timer_l() -> None:
    invite = request("INVITE")
    txn = ServerInviteTransaction(invite, reliable=False)
    ok = response(200)
    assert txn.respond(ok, 2.0) == [Transmit(ok.serialize())]
    assert txn.state is State.ACCEPTED
    assert txn.deadline == 34.0
    # RFC 6026: retransmitted INVITEs and the ACK are absorbed here (the UAS core
    # retransmits the 2xx and takes the ACK).
    assert txn.receive_request(invite, 3.0) == []
    assert txn.receive_request(request("ACK"), 3.0) == []
    assert txn.state is State.ACCEPTED
    with pytest.raises(RuntimeError, match="cannot respond in state accepted"):
        txn.respond(response(200), 4.0)
    assert drive(txn, 100.0) == [(34.0, Terminated())]


def test_invite_server_reliable_has_no_g_and_i_is_zero() -> None:
    invite = request("INVITE")
    txn = ServerInviteTransaction(invite, reliable=True)
    final = response(486)
    assert txn.respond(final, 0.0) == [Transmit(final.serialize())]
    assert txn.deadline == 32.0  # H only
    assert txn.receive_request(invite, 1.0) == [Transmit(final.serialize(), retransmission=True)]
    assert txn.receive_request(request("ACK"), 1.0) == [Terminated()]
    assert txn.terminated
    assert txn.deadline is None


def test_invite_server_reliable_timeout_without_ack() -> None:
    txn = ServerInviteTransaction(request("INVITE"), reliable=True)
    txn.respond(response(480), 0.0)
    assert drive(txn, 100.0) == [(32.0, TimedOut()), (32.0, Terminated())]


def test_invite_server_late_timer_call_fires_everything_due_in_order() -> None:
    txn = ServerInviteTransaction(request("INVITE"), reliable=False)
    final = response(486)
    txn.respond(final, 0.0)
    assert txn.on_timer(40.0) == [
        Transmit(final.serialize(), retransmission=True),
        TimedOut(),
        Terminated(),
    ]


# -- non-INVITE server -----------------------------------------------------------------------


def test_non_invite_server_trying_absorbs_then_final_then_j() -> None:
    bye = request("BYE", cseq=2)
    txn = ServerTransaction(bye, reliable=False)
    assert txn.receive_request(bye, 0.1) == []  # absorbed in Trying
    assert txn.state.value == "trying"
    ok = response(200, method="BYE")
    assert txn.respond(ok, 0.2) == [Transmit(ok.serialize())]
    assert txn.state is State.COMPLETED
    assert txn.deadline == 32.2
    assert txn.receive_request(bye, 5.0) == [Transmit(ok.serialize(), retransmission=True)]
    with pytest.raises(RuntimeError, match="cannot respond in state completed"):
        txn.respond(ok, 6.0)
    assert drive(txn, 100.0) == [(32.2, Terminated())]


def test_non_invite_server_proceeding_resends_provisional() -> None:
    req = request("OPTIONS")
    txn = ServerTransaction(req, reliable=False)
    trying = response(100, method="OPTIONS", to_tag=None)
    assert txn.respond(trying, 0.0) == [Transmit(trying.serialize())]
    assert txn.state is State.PROCEEDING
    assert txn.deadline is None
    assert txn.receive_request(req, 0.5) == [Transmit(trying.serialize(), retransmission=True)]
    final = response(404, method="OPTIONS")
    txn.respond(final, 1.0)
    assert txn.receive_request(req, 1.5) == [Transmit(final.serialize(), retransmission=True)]


def test_non_invite_server_reliable_terminates_at_once() -> None:
    txn = ServerTransaction(request("BYE"), reliable=True)
    ok = response(200, method="BYE")
    assert txn.respond(ok, 0.0) == [Transmit(ok.serialize()), Terminated()]
    assert txn.terminated
    assert txn.deadline is None


# -- non-INVITE client -----------------------------------------------------------------------


def test_non_invite_client_timer_e_schedule_then_f() -> None:
    bye = request("BYE", cseq=2)
    txn = ClientTransaction(bye, reliable=False)
    assert txn.start(0.0) == [Transmit(bye.serialize())]
    assert txn.deadline == 0.5
    events = drive(txn, 100.0)
    assert transmit_times(events) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(
        out == Transmit(bye.serialize(), retransmission=True)
        for _, out in events
        if isinstance(out, Transmit)
    )
    assert others(events) == [(32.0, TimedOut()), (32.0, Terminated())]
    assert txn.receive_response(response(200, method="BYE"), 33.0) == []


def test_non_invite_client_proceeding_uses_t2() -> None:
    txn = ClientTransaction(request("BYE"), reliable=False)
    txn.start(0.0)
    assert transmit_times(drive(txn, 1.0)) == [0.5]  # next E at 1.5
    trying = response(100, method="BYE", to_tag=None)
    assert txn.receive_response(trying, 1.0) == [Deliver(trying)]
    assert txn.state is State.PROCEEDING
    events = drive(txn, 100.0)
    # The pending E still fires at 1.5; from then on every T2.
    assert transmit_times(events) == [1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5]
    assert others(events) == [(32.0, TimedOut()), (32.0, Terminated())]


def test_non_invite_client_final_then_timer_k() -> None:
    txn = ClientTransaction(request("BYE"), reliable=False)
    txn.start(10.0)
    ringing = response(180, method="BYE")
    assert txn.receive_response(ringing, 10.1) == [Deliver(ringing)]
    ok = response(200, method="BYE")
    assert txn.receive_response(ok, 10.2) == [Deliver(ok)]
    assert txn.state is State.COMPLETED
    assert txn.deadline == pytest.approx(15.2)  # K = T4, E and F cancelled
    assert txn.receive_response(ok, 11.0) == []  # retransmitted final absorbed
    events = drive(txn, 100.0)
    assert [type(out) for _, out in events] == [Terminated]
    assert events[0][0] == pytest.approx(15.2)


def test_non_invite_client_reliable_has_no_e_and_no_k() -> None:
    bye = request("BYE")
    txn = ClientTransaction(bye, reliable=True)
    assert txn.start(0.0) == [Transmit(bye.serialize())]
    assert txn.deadline == 32.0  # F only
    ok = response(200, method="BYE")
    assert txn.receive_response(ok, 1.0) == [Deliver(ok), Terminated()]
    assert txn.terminated


def test_non_invite_client_reliable_timeout() -> None:
    txn = ClientTransaction(request("BYE"), reliable=True)
    txn.start(0.0)
    assert drive(txn, 100.0) == [(32.0, TimedOut()), (32.0, Terminated())]


def test_timer_f_first_stops_later_timers_in_a_late_call() -> None:
    txn = ClientTransaction(request("BYE"), reliable=False)
    txn.start(0.0)
    trying = response(100, method="BYE", to_tag=None)
    txn.receive_response(trying, 0.1)
    drive(txn, 31.9)  # E every T2 from 0.5: 28.5 re-armed at 32.5; F at 32
    assert txn.deadline == 32.0
    # Both are due at 40: F comes first and ends the transaction; E must not fire.
    assert txn.on_timer(40.0) == [TimedOut(), Terminated()]


# -- INVITE client ---------------------------------------------------------------------------


def client_invite(*, reliable: bool = False) -> tuple[Request, ClientInviteTransaction]:
    invite = request(
        "INVITE",
        cseq=5,
        extra=("Route: <sip:p1.example;lr>", "Route: <sip:p2.example;lr>", "X-CallANI: 1"),
    )
    return invite, ClientInviteTransaction(invite, reliable=reliable)


def test_invite_client_timer_a_doubles_until_b() -> None:
    invite, txn = client_invite()
    assert txn.state is State.CALLING
    assert txn.start(0.0) == [Transmit(invite.serialize())]
    events = drive(txn, 100.0)
    assert transmit_times(events) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert others(events) == [(32.0, TimedOut()), (32.0, Terminated())]


def test_invite_client_reliable_has_no_timer_a() -> None:
    _, txn = client_invite(reliable=True)
    txn.start(0.0)
    assert drive(txn, 100.0) == [(32.0, TimedOut()), (32.0, Terminated())]


def test_invite_client_provisional_stops_a_and_b() -> None:
    _, txn = client_invite()
    txn.start(0.0)
    drive(txn, 0.6)
    ringing = response(180)
    assert txn.receive_response(ringing, 0.7) == [Deliver(ringing)]
    assert txn.state is State.PROCEEDING
    assert txn.deadline is None
    assert txn.on_timer(1000.0) == []


def test_invite_client_non_2xx_generates_ack() -> None:
    _, txn = client_invite()
    txn.start(0.0)
    busy = response(486, to_tag="busy-tag")
    out = txn.receive_response(busy, 1.0)
    ack = (
        "ACK sip:agent@byeline.example SIP/2.0\r\n"
        f"Via: {VIA}\r\n"
        "Route: <sip:p1.example;lr>\r\n"
        "Route: <sip:p2.example;lr>\r\n"
        f"From: {FROM}\r\n"
        f"To: {TO};tag=busy-tag\r\n"
        "Call-ID: txn-1@198.51.100.20\r\n"
        "CSeq: 5 ACK\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Length: 0\r\n"
        "\r\n"
    ).encode()
    assert out == [Transmit(ack), Deliver(busy)]
    assert txn.state is State.COMPLETED
    assert txn.deadline == 33.0  # D = 32 s
    assert parse_message(ack).cseq == (5, "ACK")
    # A retransmitted final gets the same ACK; a stray 2xx is ignored.
    assert txn.receive_response(busy, 2.0) == [Transmit(ack, retransmission=True)]
    assert txn.receive_response(response(200), 2.0) == []
    assert drive(txn, 100.0) == [(33.0, Terminated())]
    assert txn.receive_response(busy, 40.0) == []


def test_invite_client_non_2xx_after_provisional_reliable_d_is_zero() -> None:
    _, txn = client_invite(reliable=True)
    txn.start(0.0)
    txn.receive_response(response(183), 0.2)
    out = txn.receive_response(response(603), 0.4)
    assert [type(o) for o in out] == [Transmit, Deliver]
    assert txn.deadline == 0.4
    assert txn.on_timer(0.4) == [Terminated()]


def test_ack_falls_back_to_invite_headers_when_response_lacks_them() -> None:
    invite = Request(
        method="INVITE",
        uri="sip:x@y.example",
        headers=Headers([("Via", VIA), ("To", TO), ("Call-ID", "c"), ("CSeq", "3 INVITE")]),
    )
    txn = ClientInviteTransaction(invite, reliable=True)
    txn.start(0.0)
    out = txn.receive_response(Response(status=500, reason="Oops"), 0.1)
    assert out[0] == Transmit(
        (
            "ACK sip:x@y.example SIP/2.0\r\n"
            f"Via: {VIA}\r\nFrom: \r\nTo: {TO}\r\nCall-ID: c\r\nCSeq: 3 ACK\r\n"
            "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )


def test_invite_client_2xx_accepted_redelivers_then_timer_m() -> None:
    _, txn = client_invite()
    txn.start(0.0)
    drive(txn, 2.0)
    ok = response(200)
    assert txn.receive_response(ok, 2.0) == [Deliver(ok)]  # no ACK: the TU sends it
    assert txn.state is State.ACCEPTED
    assert txn.deadline == 34.0
    ok2 = response(200, to_tag="forked")
    assert txn.receive_response(ok2, 3.0) == [Deliver(ok2)]
    assert txn.receive_response(response(486), 3.0) == []
    assert txn.receive_response(response(180), 3.0) == []
    assert drive(txn, 100.0) == [(34.0, Terminated())]
    assert txn.receive_response(ok, 40.0) == []
