"""The overload gate and the queue probe it reads."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from byeline.edge.overload import OverloadGate, probe_interval
from byeline.net.sip_transport import Flow, ListenSpec, QueueProbe, SipTransports


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


def test_config_overload_delay() -> None:
    from byeline.config import ConfigError, load_config

    assert load_config(None, {}, {}).overload_delay == 0.25
    assert load_config(None, {}, {"BYELINE_OVERLOAD_DELAY": "0"}).overload_delay == 0.0
    with pytest.raises(ConfigError, match="overload_delay"):
        load_config(None, {"overload_delay": -1}, {})
