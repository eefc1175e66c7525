"""CPU cost of the call-record path (``CallStore``) per call, as the SIP edge drives it.

One call of the signalling benchmark (``bench/scenarios/five9_uac.xml``: INVITE with 9 Five9 X-
headers → 100/180/200 → ACK → BYE from the caller → 200) makes the edge
(``src/byeline/edge/server.py``) call the store nine times, in three bursts:

- INVITE (``_receive_invite``): the 100 Trying is sent before the call exists (``call_id=None``:
  not traced); ``_record_start`` → ``call_started(...)`` with the 24 attributes that the example
  trunk derives from the INVITE, then ``_trace_in`` (INVITE); ``_run_server`` → ``_send`` traces
  the 180 and the 200 OK; ``_answer`` → ``_record(status="active", answered_at, final_code=200)``.
- ACK (``_receive_ack``): ``_trace_in`` (ACK).
- BYE (``_receive_in_dialog``): ``_trace_in`` (BYE), ``respond`` → ``_send`` traces the 200,
  ``_end_leg`` → ``_record(status="ended", ended_at, ended_by="caller", delivery="not_sent",
  delivery_code=None, attributes=..., route={})``.

The bursts of many calls are interleaved as on a loaded server (``--lag`` calls between a call's
INVITE, ACK and BYE bursts) and paced at ``--rate`` calls/s (0: as fast as possible). Every
argument is made before the clock starts except ``time.time()``, evaluated where the edge does.
The measure is the whole process's CPU (``time.process_time``: the calling thread and the writer
thread) from the first call to the end of ``flush()`` (everything committed), divided by the
calls; the calling thread's own CPU (``time.thread_time``, the event-loop side) is shown too.

Each measurement runs in a fresh interpreter. ``--snapshot REF`` also measures ``git archive REF
src`` (imported through ``PYTHONPATH``), alternating with the working tree, and prints both side
by side with the ratio; ``--pg`` adds PostgreSQL on a throwaway cluster
(``tests/store/pg_cluster.py``, Debian's server binaries).

    .venv/bin/python bench/store_cost.py --snapshot HEAD [--pg] [--calls 10000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from snapshot import take_snapshot

ROOT = Path(__file__).resolve().parent.parent

# -- the messages of one call, shaped as SIPp sends them and as byeline answers --------------------

_INVITE = (
    "INVITE sip:+18005550100@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-{pid}-{n}-0;rport"
    ";received=127.0.0.1;rport=5061\r\n"
    'From: "Five9" <sip:+1555{n}@127.0.0.1:5061>;tag={pid}F9Tag{n}\r\n'
    "To: <sip:+18005550100@127.0.0.1:5060>\r\n"
    "Call-ID: {n}-{pid}@127.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:five9@127.0.0.1:5061;transport=UDP>\r\n"
    "Max-Forwards: 70\r\n"
    "User-Agent: Five9-IVR-sim\r\n"
    "X-CallANI: +1555{n}\r\n"
    "X-CallDNIS: +18005550100\r\n"
    "X-CallID: 300000{n}\r\n"
    "X-CallSessionID: F9S{pid}X{n}\r\n"
    "X-CallCampaign: Inbound Support\r\n"
    "X-CallStartTimestamp: 1764200000000\r\n"
    "X-CallDomainID: 131072\r\n"
    "X-five9ani: +1555{n}\r\n"
    "X-five9dnis: +18005550100\r\n"
    "X-five9callid: 300000{n}\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: 213\r\n\r\n"
    "v=0\r\no=five9 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\nm=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
)
_RESPONSE_HEAD = (
    "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-{pid}-{n}-{b};rport=5061;received=127.0.0.1\r\n"
    'From: "Five9" <sip:+1555{n}@127.0.0.1:5061>;tag={pid}F9Tag{n}\r\n'
    "To: <sip:+18005550100@127.0.0.1:5060>;tag=bt{n}\r\n"
    "Call-ID: {n}-{pid}@127.0.0.1\r\n"
    "CSeq: {cseq}\r\n"
    "Server: byeline/0.1\r\n"
)
_RINGING = "SIP/2.0 180 Ringing\r\n" + _RESPONSE_HEAD + "Content-Length: 0\r\n\r\n"
_OK_INVITE = (
    "SIP/2.0 200 OK\r\n" + _RESPONSE_HEAD + "Contact: <sip:byeline@127.0.0.1:5060>\r\n"
    "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE\r\n"
    "Supported: timer\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: 190\r\n\r\n"
    "v=0\r\no=byeline 1 1 IN IP4 127.0.0.1\r\ns=byeline\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 20000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
)
_ACK = (
    "ACK sip:+18005550100@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-{pid}-{n}-1;rport"
    ";received=127.0.0.1;rport=5061\r\n"
    'From: "Five9" <sip:+1555{n}@127.0.0.1:5061>;tag={pid}F9Tag{n}\r\n'
    "To: <sip:+18005550100@127.0.0.1:5060>;tag=bt{n}\r\n"
    "Call-ID: {n}-{pid}@127.0.0.1\r\n"
    "CSeq: 1 ACK\r\n"
    "Contact: <sip:five9@127.0.0.1:5061;transport=UDP>\r\n"
    "Max-Forwards: 70\r\n"
    "Content-Length: 0\r\n\r\n"
)
_BYE = (
    "BYE sip:+18005550100@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-{pid}-{n}-2;rport"
    ";received=127.0.0.1;rport=5061\r\n"
    'From: "Five9" <sip:+1555{n}@127.0.0.1:5061>;tag={pid}F9Tag{n}\r\n'
    "To: <sip:+18005550100@127.0.0.1:5060>;tag=bt{n}\r\n"
    "Call-ID: {n}-{pid}@127.0.0.1\r\n"
    "CSeq: 2 BYE\r\n"
    "Max-Forwards: 70\r\n"
    "Content-Length: 0\r\n\r\n"
)
_OK_BYE = "SIP/2.0 200 OK\r\n" + _RESPONSE_HEAD + "Content-Length: 0\r\n\r\n"


class Call:
    """Everything the edge passes to the store for one call, made before the clock starts."""

    __slots__ = (
        "ack",
        "attributes",
        "bye",
        "call_id",
        "callee",
        "caller",
        "five9_call_id",
        "five9_session_id",
        "invite",
        "ok_bye",
        "ok_invite",
        "ringing",
        "sip_call_id",
    )

    def __init__(self, n: int, pid: int) -> None:
        # The id the edge makes (the code under test's new_call_id: random before 2026-11-27,
        # time-ordered since), so the rows land where they would in production.
        from byeline.edge.call import new_call_id

        self.call_id = new_call_id()
        self.sip_call_id = f"{n}-{pid}@127.0.0.1"
        self.caller = f"+1555{n}"
        self.callee = "+18005550100"
        self.five9_call_id = f"300000{n}"
        self.five9_session_id = f"F9S{pid}X{n}"
        values = {"n": n, "pid": pid}
        self.invite = _INVITE.format(**values).encode()
        self.ringing = _RINGING.format(b=0, cseq="1 INVITE", **values).encode()
        self.ok_invite = _OK_INVITE.format(b=0, cseq="1 INVITE", **values).encode()
        self.ack = _ACK.format(**values).encode()
        self.bye = _BYE.format(**values).encode()
        self.ok_bye = _OK_BYE.format(b=2, cseq="2 BYE", **values).encode()
        # attrs.invite_attributes() for the example trunk (src/byeline/examples/five9-trunk.json)
        self.attributes = {
            "sip.callID": self.call_id,
            "sip.trunkID": "ST_7342136d65d6",
            "sip.phoneNumber": self.caller,
            "sip.hostname": "127.0.0.1",
            "sip.trunkPhoneNumber": self.callee,
            "sip.ruleID": "",
            "sip.h.x-callani": self.caller,
            "sip.h.x-calldnis": self.callee,
            "sip.h.x-callid": self.five9_call_id,
            "sip.h.x-callsessionid": self.five9_session_id,
            "sip.h.x-callcampaign": "Inbound Support",
            "sip.h.x-callstarttimestamp": "1764200000000",
            "sip.h.x-calldomainid": "131072",
            "sip.h.x-five9ani": self.caller,
            "sip.h.x-five9dnis": self.callee,
            "sip.h.x-five9callid": self.five9_call_id,
            "five9.ani": self.caller,
            "five9.campaign": "Inbound Support",
            "five9.dnis": self.callee,
            "five9.call_id": self.five9_call_id,
            "five9.session_id": self.five9_session_id,
            "sip.callTag": f"{pid}F9Tag{n}",
            "sip.callIDFull": self.sip_call_id,
            "sip.callStatus": "ringing",
        }


PEER = "127.0.0.1:5061"


def _invite_burst(store: Any, call: Call) -> None:
    # _record_start: the edge passes call.attributes (a fresh copy of the call's dict).
    store.call_started(
        call.call_id,
        sip_call_id=call.sip_call_id,
        trunk_id="ST_7342136d65d6",
        rule_id=None,
        caller=call.caller,
        callee=call.callee,
        five9_call_id=call.five9_call_id,
        five9_session_id=call.five9_session_id,
        transport="UDP",
        remote=PEER,
        started_at=time.time(),
        status="ringing",
        attributes=dict(call.attributes),
    )
    store.trace(
        call.call_id, at=time.time(), direction="in", transport="UDP", peer=PEER, data=call.invite
    )
    store.trace(
        call.call_id,
        at=time.time(),
        direction="out",
        transport="UDP",
        peer=PEER,
        data=call.ringing,
    )
    store.trace(
        call.call_id,
        at=time.time(),
        direction="out",
        transport="UDP",
        peer=PEER,
        data=call.ok_invite,
    )
    call.attributes["sip.callStatus"] = "active"
    store.call_updated(call.call_id, status="active", answered_at=time.time(), final_code=200)


def _ack_burst(store: Any, call: Call) -> None:
    store.trace(
        call.call_id, at=time.time(), direction="in", transport="UDP", peer=PEER, data=call.ack
    )


def _bye_burst(store: Any, call: Call) -> None:
    store.trace(
        call.call_id, at=time.time(), direction="in", transport="UDP", peer=PEER, data=call.bye
    )
    store.trace(
        call.call_id, at=time.time(), direction="out", transport="UDP", peer=PEER, data=call.ok_bye
    )
    call.attributes["sip.callStatus"] = "hangup"
    store.call_updated(
        call.call_id,
        status="ended",
        ended_at=time.time(),
        ended_by="caller",
        delivery="not_sent",
        delivery_code=None,
        attributes=dict(call.attributes),
        route={},
    )


def drive(store: Any, calls: list[Call], lag: int, rate: float) -> None:
    """Run every call's three bursts, interleaved (``lag`` calls apart) and paced at ``rate``."""
    n = len(calls)
    start = time.monotonic()
    for step in range(n + 2 * lag):
        if rate > 0 and step % 4 == 0:  # a tick every 4 calls (1.6 ms at 2,500 calls/s)
            due = start + step / rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        if step < n:
            _invite_burst(store, calls[step])
        if 0 <= step - lag < n:
            _ack_burst(store, calls[step - lag])
        if 0 <= step - 2 * lag < n:
            _bye_burst(store, calls[step - 2 * lag])


class NullStore:
    """The same calls with nothing behind them: what the bench itself costs."""

    def call_started(self, call_id: str, **fields: object) -> None:
        pass

    def call_updated(self, call_id: str, **fields: object) -> None:
        pass

    def trace(self, call_id: str, **fields: object) -> None:
        pass

    def flush(self) -> bool:
        return True

    def close(self) -> None:
        pass


def child(args: argparse.Namespace) -> None:
    """One measurement in this interpreter; prints one JSON line."""
    import sqlalchemy as sa

    from byeline.store import CallStore

    pid = os.getpid() % 100_000
    warm = [Call(n, pid) for n in range(args.warmup)]
    calls = [Call(n, pid) for n in range(args.warmup, args.warmup + args.calls)]
    options: dict[str, Any] = {}
    if args.commit_interval is not None and args.db != "null":
        options["commit_interval"] = args.commit_interval  # a store that has it (not HEAD's)
    store: Any = (
        NullStore() if args.db == "null" else CallStore.open(args.db, spool=args.spool, **options)
    )
    drive(store, warm, min(args.lag, len(warm)), args.rate)
    store.flush()
    wall0, cpu0, thread0 = time.perf_counter(), time.process_time(), time.thread_time()
    drive(store, calls, args.lag, args.rate)
    committed = store.flush()
    wall1, cpu1, thread1 = time.perf_counter(), time.process_time(), time.thread_time()
    result: dict[str, Any] = {
        "cpu_us": (cpu1 - cpu0) / args.calls * 1e6,
        "loop_us": (thread1 - thread0) / args.calls * 1e6,
        "wall_s": wall1 - wall0,
        "committed": committed,
    }
    if args.db != "null":
        stats = store.stats
        result["batches"] = stats.batches
        result["lost_rows"] = stats.lost_rows
        with store.engine.connect() as connection:
            n_calls = connection.execute(sa.text("SELECT count(*) FROM calls")).scalar_one()
            n_msgs = connection.execute(sa.text("SELECT count(*) FROM sip_messages")).scalar_one()
            ended = connection.execute(
                sa.text("SELECT count(*) FROM calls WHERE status = 'ended'")
            ).scalar_one()
        total = args.warmup + args.calls
        result["rows_ok"] = n_calls == total and ended == total and n_msgs == 6 * total
        store.close()
    print(json.dumps(result), flush=True)


# -- the parent: fresh databases, fresh interpreters, alternating variants -------------------------


def measure(
    args: argparse.Namespace, db: str, spool: Path, pythonpath: str | None
) -> dict[str, Any]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--db",
        db,
        "--spool",
        str(spool),
        "--calls",
        str(args.calls),
        "--warmup",
        str(args.warmup),
        "--lag",
        str(args.lag),
        "--rate",
        str(args.rate),
    ]
    if args.commit_interval is not None and pythonpath == str(ROOT / "src"):
        argv += ["--commit-interval", str(args.commit_interval)]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"measurement failed: {proc.stderr.strip()[-2000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def summary(values: list[float]) -> str:
    return f"{min(values):7.1f} {statistics.median(values):7.1f} {max(values):7.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lag", type=int, default=20, help="calls between a call's bursts")
    parser.add_argument("--rate", type=float, default=2500.0, help="calls/s (0: unpaced)")
    parser.add_argument("--snapshot", metavar="REF", help="also measure git REF's src/")
    parser.add_argument("--pg", action="store_true", help="also PostgreSQL (throwaway cluster)")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    parser.add_argument(
        "--commit-interval",
        type=float,
        metavar="S",
        help="the working tree's CallStore.open(commit_interval=S) (default: the store's own)",
    )
    parser.add_argument("--json", metavar="FILE", help="write every measurement here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--spool", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    work = Path(tempfile.mkdtemp(prefix="byeline-store-cost-"))
    variants: list[tuple[str, str | None]] = []
    if args.snapshot:
        commit, src = take_snapshot(args.snapshot, work)
        variants.append((f"{args.snapshot} ({commit})", str(src)))
    variants.append(("working tree", str(ROOT / "src")))
    backends = [] if args.no_sqlite else ["sqlite"]
    cluster: Any = None
    if args.pg:
        sys.path.insert(0, str(ROOT / "tests" / "store"))
        from pg_cluster import PgCluster, bin_dir  # type: ignore[import-not-found]

        binaries = bin_dir()
        if binaries is None:
            sys.exit("--pg: PostgreSQL server binaries absent (/usr/lib/postgresql/*/bin)")
        cluster = PgCluster(binaries)
        cluster.start()
        backends.append("postgresql")
    print(
        f"store_cost: {args.calls} calls per run after {args.warmup} warm-up, {args.runs} runs, "
        f"rate {args.rate or 'unpaced'} calls/s, lag {args.lag}; CPU µs per call "
        "(process = loop + writer threads; loop = calling thread)",
        flush=True,
    )
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    try:
        null = [
            measure(args, "null", work / "null-spool", str(ROOT / "src")) for _ in range(args.runs)
        ]
        print(f"bench harness alone (no store): {summary([r['cpu_us'] for r in null])} µs/call")
        for backend in backends:
            for run in range(args.runs):
                order = variants if run % 2 == 0 else variants[::-1]
                for name, pythonpath in order:
                    tag = f"{backend}-{run}-{len(results.get((backend, name), []))}-{name[:4]}"
                    tag = "".join(c if c.isalnum() or c == "-" else "_" for c in tag)
                    if backend == "sqlite":
                        db = str(work / f"{tag}.db")
                    else:
                        db = cluster.create_database()
                    r = measure(args, db, work / f"{tag}-spool", pythonpath)
                    results.setdefault((backend, name), []).append(r)
                    print(
                        f"  {backend:10} run {run + 1} {name:24} process {r['cpu_us']:7.1f} "
                        f"loop {r['loop_us']:6.1f} µs/call  wall {r['wall_s']:5.2f} s  "
                        f"batches {r.get('batches')}  rows ok {r.get('rows_ok')}",
                        flush=True,
                    )
    finally:
        if cluster is not None:
            cluster.destroy()
    print()
    print(f"{'backend':10} {'variant':24} {'process min/med/max':>23}   {'loop min/med/max':>23}")
    for (backend, name), rs in results.items():
        print(
            f"{backend:10} {name:24} {summary([r['cpu_us'] for r in rs])}   "
            f"{summary([r['loop_us'] for r in rs])}"
        )
    if args.snapshot:
        for backend in backends:
            before = results[(backend, variants[0][0])]
            after = results[(backend, variants[1][0])]
            for key, label in (("cpu_us", "process"), ("loop_us", "loop")):
                b = statistics.median(r[key] for r in before)
                a = statistics.median(r[key] for r in after)
                print(
                    f"{backend:10} {label:8} median before {b:7.1f} after {a:7.1f} µs/call: "
                    f"{b / a:.2f}x less CPU"
                )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {f"{b}/{n}": rs for (b, n), rs in results.items()} | {"null": null}, indent=1
            )
        )


if __name__ == "__main__":
    main()
