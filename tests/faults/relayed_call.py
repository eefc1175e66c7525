"""A simulated Five9 call whose SIP and RTP both cross :mod:`relay` (and byeline's BYE too)."""

from __future__ import annotations

import itertools
import os
import socket
from dataclasses import dataclass

from relay import Faults, RelayStats, UdpRelay

from byeline.five9.simulator import Action, CallPlan
from byeline.five9.variables import default_call_variables

SERVICE = "+18005550100"
ROUTE_HEADERS = ("X-RouteReason", "X-RouteType", "X-RouteValue", "X-MetaData")


# byeline's RTP ranges for these tests: 60 pairs each, below the e2e blocks (20000 up) and the
# kernel's ephemeral ports; the base differs between concurrent runs.
_wide_blocks = itertools.count(12000 + (os.getpid() % 8) * 1000, 120)


def wide_rtp_block() -> tuple[int, int]:
    """An RTP range of 60 pairs for one byeline serve (room for many calls at once)."""
    low = next(_wide_blocks)
    return low, low + 119


# The simulator's own RTP pairs: below the wide blocks and the kernel's ephemeral ports, so no
# socket bound to port 0 in the meantime (the relays', the server's) can take one between the
# check below and the simulator's bind.
_pinned_pairs = itertools.cycle(range(10000 + (os.getpid() % 8) * 250, 12000, 2))


def pinned_rtp_port() -> int:
    """An even UDP port, free with port+1, for one simulator call's RTP (the relay's client)."""
    for _ in range(100):
        port = next(_pinned_pairs)
        try:
            for p in (port, port + 1):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.bind(("0.0.0.0", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free RTP port pair")


@dataclass
class RelayedCall:
    """One call's plan and the two relays it goes through."""

    plan: CallPlan
    sip: UdpRelay
    rtp: UdpRelay

    def close(self) -> None:
        """Close both relays."""
        self.sip.close()
        self.rtp.close()

    def stats(self) -> RelayStats:
        """SIP and RTP counters together."""
        total = RelayStats()
        total.add(self.sip.stats)
        total.add(self.rtp.stats)
        return total


async def relayed_call(
    byeline_port: int,
    actions: list[Action],
    *,
    sip_faults: Faults = Faults(),  # noqa: B008 - frozen
    rtp_faults: Faults = Faults(),  # noqa: B008 - frozen
    seed: int = 0,
    sip_t1: float = 0.1,
    timeout: float = 30.0,
    sip_relay: UdpRelay | None = None,
    ani: str = "+15555550123",
) -> RelayedCall:
    """Open the relays and build a plan that advertises them (Via, Contact and SDP)."""
    sip = sip_relay or UdpRelay(
        upstream=("127.0.0.1", byeline_port),
        to_upstream=sip_faults,
        to_client=sip_faults,
        seed=seed,
    )
    await sip.start()
    rtp_port = pinned_rtp_port()
    rtp = UdpRelay(
        client=("127.0.0.1", rtp_port),
        to_upstream=rtp_faults,
        to_client=rtp_faults,
        seed=seed + 1_000_000,
    )
    await rtp.start()
    plan = CallPlan(
        target=sip.hostport,
        call_variables=default_call_variables(ani=ani, dnis=SERVICE),
        caller=ani,
        dnis=SERVICE,
        actions=actions,
        timeout=timeout,
        rtp_ports=(rtp_port, rtp_port + 1),
        advertise=sip.hostport,
        media_relay=rtp.hostport,
        sip_t1=sip_t1,
    )
    return RelayedCall(plan=plan, sip=sip, rtp=rtp)
