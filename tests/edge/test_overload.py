"""The overload gate and the queue probe it reads."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import time
from pathlib import Path

import pytest

from byeline.edge.overload import OverloadGate, probe_interval
from byeline.edge.server import EdgeConfig, SipEdge
from byeline.edge.trunk import TrunkSet, load_trunk
from byeline.net.sip_transport import Flow, ListenSpec, QueueProbe, SipTransports
from byeline.sip.message import Response, parse_message
from byeline.store import CallStore

EXAMPLES = Path(__file__).resolve().parents[2] / "src/byeline/examples"


def test_the_gate_refuses_past_its_delay_and_zero_turns_it_off() -> None:
    gate = OverloadGate(0.25)
    assert gate.enabled
    assert gate.admit(0.0) and gate.admit(0.25)
    assert not gate.admit(0.26)
    assert gate.refused == 1 and gate.delay == 0.26
    off = OverloadGate(0)
    assert not off.enabled and off.admit(100.0) and off.refused == 0
    with pytest.raises(ValueError, match="max_delay"):
        OverloadGate(-1)


def test_probe_interval_is_a_fifth_of_the_delay_within_10_to_50_ms() -> None:
    assert probe_interval(0.25) == 0.05
    assert probe_interval(0.1) == pytest.approx(0.02)
    assert probe_interval(0.01) == 0.01
    assert probe_interval(5) == 0.05


def test_probe_wait_is_the_last_read_or_the_oldest_unread_age() -> None:
    probe = QueueProbe()
    assert probe.delay(10.0) == 0.0
    first = probe.stamp(10.0)
    second = probe.stamp(10.05)
    assert probe.delay(10.3) == pytest.approx(0.3)  # nothing read yet: the oldest's age
    probe.read(10.32, first)
    assert probe.last == pytest.approx(0.32)
    assert probe.delay(10.33) == pytest.approx(0.32)  # the second is younger than that
    assert probe.delay(10.5) == pytest.approx(0.45)  # and then older
    probe.read(10.5, second)
    assert probe.delay(10.6) == pytest.approx(0.45)
    third = probe.stamp(10.6)
    probe.read(10.601, third)
    assert probe.delay(10.7) == pytest.approx(0.001)


def test_a_lost_probe_is_forgotten_when_a_later_one_is_read() -> None:
    probe = QueueProbe()
    probe.stamp(1.0)  # lost on the way
    later = probe.stamp(1.05)
    probe.read(1.06, later)
    assert probe.delay(5.0) == pytest.approx(0.01)
    probe.read(5.0, b"short")  # not a probe's payload: ignored
    assert probe.read_count == 1


class _Sink:
    def __init__(self) -> None:
        self.messages = 0

    def receive(self, data: bytes, flow: Flow) -> None:
        self.messages += 1
        time.sleep(0.002)  # 2 ms of work a message


async def test_probes_measure_the_wait_of_a_real_queue() -> None:
    sink = _Sink()
    transports = SipTransports(sink)
    bound = await transports.listen(ListenSpec("UDP", "127.0.0.1", 0))
    loop = asyncio.get_running_loop()
    try:
        transports.start_probes(0.01)
        await asyncio.sleep(0.1)
        idle = transports.queue_delay(loop.time())
        assert idle < 0.02, idle
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            # 100 messages at 2 ms each: the probes behind them wait up to 0.2 s.
            for _ in range(100):
                peer.sendto(b"OPTIONS sip:x SIP/2.0\r\n\r\n", ("127.0.0.1", bound.port))
            worst = 0.0
            for _ in range(100):
                await asyncio.sleep(0.005)
                worst = max(worst, transports.queue_delay(loop.time()))
                if sink.messages == 100:
                    break
        assert sink.messages == 100  # the probes never reach the sink
        assert 0.08 < worst < 1.0, worst
        await asyncio.sleep(0.1)
        assert transports.queue_delay(loop.time()) < 0.02
    finally:
        await transports.close()
    assert transports.queue_delay(loop.time()) == 0.0  # probes stopped with the listener


def test_the_gate_refuses_past_its_record_backlog_too() -> None:
    gate = OverloadGate(0, max_records=100)
    assert gate.active and not gate.enabled  # no probes: only the store is asked
    assert gate.admit(5.0, 100)
    assert not gate.admit(0.0, 101)
    assert gate.refused == 1 and gate.records == 101
    assert not OverloadGate(0).active
    with pytest.raises(ValueError, match="max_records"):
        OverloadGate(0.25, -1)


SDP = (
    "v=0\r\no=five9 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def _invite(n: int) -> bytes:
    return (
        "INVITE sip:+18005550100@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-gate-{n};rport\r\n"
        f"From: <sip:+15555550100@127.0.0.1:5090>;tag=f{n}\r\n"
        "To: <sip:+18005550100@127.0.0.1:5060>\r\n"
        f"Call-ID: gate-{n}@five9\r\nCSeq: 1 INVITE\r\n"
        "Contact: <sip:five9@127.0.0.1:5090>\r\nMax-Forwards: 70\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(SDP)}\r\n\r\n{SDP}"
    ).encode()


async def test_calls_are_refused_while_their_records_cannot_be_written(tmp_path: Path) -> None:
    """A real store whose database another connection holds locked: its writes pile up, new
    INVITEs get 503 past ``overload_records``; once the lock goes and the writer catches up,
    calls are taken again, and the records of every call taken are there."""
    db = tmp_path / "calls.db"
    store = CallStore.open(str(db), spool=False)
    edge = SipEdge(
        EdgeConfig(
            rtp_ports=(41000, 41998), overload_delay=0, overload_records=12, shutdown_grace=0.2
        ),
        TrunkSet([load_trunk(EXAMPLES / "five9-trunk.json")]),
        store=store,
    )
    edge._loop = edge.timers.loop = asyncio.get_running_loop()
    sent: list[bytes] = []
    flow = Flow("UDP", ("127.0.0.1", 5060), ("127.0.0.1", 5090), lambda d, to: sent.append(d))

    def final(n: int) -> int:
        sent.clear()
        edge.receive(_invite(n), flow)
        return next(
            m.status
            for m in map(parse_message, sent)
            if isinstance(m, Response) and m.status >= 200
        )

    lock = sqlite3.connect(db, timeout=0)
    try:
        lock.execute("BEGIN IMMEDIATE")  # what another writer (a backup, a script) would do
        statuses = [final(n) for n in range(10)]
        taken = statuses.index(503)
        assert taken >= 2 and set(statuses[:taken]) == {200}, statuses
        assert set(statuses[taken:]) == {503}, statuses
        assert edge.stats["overloaded"] == 10 - taken
        lock.rollback()
        assert store.flush(30)
        assert final(99) == 200  # the writer caught up: calls are taken again
        assert store.flush(30)
        assert store.count_calls() == taken + 1 and store.stats.lost_rows == 0
    finally:
        lock.close()
        await edge.shutdown()
        store.close()


def test_config_overload_delay() -> None:
    from byeline.config import ConfigError, load_config

    assert load_config(None, {}, {}).overload_delay == 0.25
    assert load_config(None, {}, {"BYELINE_OVERLOAD_DELAY": "0"}).overload_delay == 0.0
    with pytest.raises(ConfigError, match="overload_delay"):
        load_config(None, {"overload_delay": -1}, {})
    assert load_config(None, {}, {}).overload_records == 50_000
    assert load_config(None, {}, {"BYELINE_OVERLOAD_RECORDS": "0"}).overload_records == 0
    with pytest.raises(ConfigError, match="overload_records"):
        load_config(None, {"overload_records": -5}, {})
