"""``byeline five9 call``: the simulator's command line.

Exit status: 0 when the call ended with a BYE and every ``--expect`` matched;
1 with a diff when something differs; 2 on a failed call (not answered, 4xx/5xx,
no BYE before the timeout, unreachable target), each with a one-line reason.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from .flow import IvrFlow, load_flow
from .script import load_script
from .simulator import Action, CallFailed, CallOutcome, CallPlan, Play, Press, Say, place_call
from .variables import CAV_STYLES, default_call_variables, merge_call_variables, parse_assignment


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``five9 call`` to the ``byeline`` parser."""
    five9 = sub.add_parser("five9", help="the Five9 simulator")
    fsub = five9.add_subparsers(dest="five9_command", required=True)
    call = fsub.add_parser("call", help="place one call as Five9's IVR would")
    call.add_argument("target", help="SIP URI or HOST:PORT")
    call.add_argument("--transport", default="udp", choices=["udp", "tcp", "tls"])
    call.add_argument("--from", dest="caller", default="+15555550100", help="caller number (ANI)")
    call.add_argument("--to", dest="dnis", default="+18005550100", help="called number (DNIS)")
    call.add_argument("--auth", help="USER:PASSWORD for a 401/407 challenge")
    call.add_argument(
        "--cav",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="call variable as an X- header (repeatable)",
    )
    call.add_argument("--cav-style", default="five9", choices=list(CAV_STYLES))
    call.add_argument("--say", action="append", default=[], help="speak this text")
    call.add_argument("--voice", help="speech voice (festival or espeak-ng voice name)")
    call.add_argument("--audio", action="append", default=[], help="play this WAV file")
    call.add_argument("--dtmf", help="press these keys (RFC 4733)")
    call.add_argument("--script", help="YAML list of wait/press/say/play/hangup steps")
    call.add_argument("--hangup-after", type=float, help="the caller hangs up after SECONDS")
    call.add_argument("--record", help="write what the agent said to this WAV file")
    call.add_argument("--timeout", type=float, default=60.0, help="bound on the whole call")
    call.add_argument(
        "--expect",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="expected FromIVA value (repeatable)",
    )
    call.add_argument("--ivr", help="IVR flow YAML: PUTs, transfer, GETs and the Case")
    call.add_argument("--json", action="store_true", help="machine-readable output")
    call.add_argument("--rtp-ports", default="40000-49999", help="local RTP port range")
    call.add_argument(
        "--srtp", action="store_true", help="offer SRTP (RTP/SAVP with SDES keys, RFC 4568)"
    )
    call.add_argument("--tls-ca", help="trust this CA or self-signed certificate (PEM) for TLS")
    call.add_argument(
        "--tls-no-verify",
        action="store_true",
        help="accept any TLS certificate (test benches only)",
    )

    load = fsub.add_parser("load", help="many calls with a mix of caller behaviours")
    load.add_argument("target", help="SIP URI or HOST:PORT")
    load.add_argument("--calls", type=int, default=20, help="calls in all")
    load.add_argument("--concurrency", type=int, default=10, help="calls at once at most")
    load.add_argument("--rate", type=float, default=5.0, help="new calls per second")
    load.add_argument("--mix", help="YAML list of caller behaviours with weights and expects")
    load.add_argument("--transport", default="udp", choices=["udp", "tcp", "tls"])
    load.add_argument("--auth", help="USER:PASSWORD for a 401/407 challenge")
    load.add_argument("--timeout", type=float, default=60.0, help="bound on each call")
    load.add_argument("--report", default="five9-load.json", help="JSON report path")
    load.add_argument("--html", help="HTML page with the latency plot (default: beside --report)")
    load.add_argument("--rtp-ports", default="40000-49999", help="local RTP port range")
    load.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run ``five9 call`` or ``five9 load``."""
    if args.five9_command == "load":
        return _run_load(args)
    flow = load_flow(args.ivr) if args.ivr else None
    plan = _plan(args, flow)
    expects = [parse_assignment(e, "--expect") for e in args.expect]
    try:
        outcome = asyncio.run(place_call(plan))
    except CallFailed as exc:
        if args.json:
            print(json.dumps({"error": str(exc), "exit": 2}))
        print(f"byeline: {exc}", file=sys.stderr)
        return 2
    diffs = [
        (name, want, outcome.from_iva.get(name))
        for name, want in expects
        if outcome.from_iva.get(name) != want
    ]
    ivr = (
        flow.outcome(outcome.from_iva, caller_hung_up=outcome.hung_up_by == "caller")
        if flow is not None
        else None
    )
    if args.json:
        doc = outcome.to_json()
        doc["expect"] = [{"name": n, "want": w, "got": g} for n, w, g in diffs]
        if ivr is not None:
            doc["ivr"] = ivr.to_json()
        print(json.dumps(doc, indent=2))
    else:
        print(_render(outcome))
        if ivr is not None:
            branch = ivr.branch if ivr.branch is not None else "default"
            case = "" if ivr.action == "caller_disconnected" else f"  (Case {branch})"
            print(f"IVR next: {ivr.description}{case}")
    if outcome.hung_up_by == "timeout":
        print(f"byeline: {outcome.error}", file=sys.stderr)
        return 2
    if diffs:
        for name, want, got in diffs:
            print(f"- {name}: {want}", file=sys.stderr)
            print(f"+ {name}: {got if got is not None else '(absent)'}", file=sys.stderr)
        print(f"byeline: {len(diffs)} FromIVA value(s) differ from --expect", file=sys.stderr)
        return 1
    return 0


def _ports(text: str) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    if not sep or not low.isdigit() or not high.isdigit() or int(low) >= int(high):
        raise ValueError(f"--rtp-ports {text!r}: expected LOW-HIGH")
    return int(low), int(high)


def _auth(text: str | None) -> tuple[str, str] | None:
    if not text:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user:
        raise ValueError("--auth: expected USER:PASSWORD")
    return user, password


def _run_load(args: argparse.Namespace) -> int:
    from .load import DEFAULT_MIX, load_mix, run_load, write_reports

    mix = load_mix(args.mix) if args.mix else DEFAULT_MIX
    report = asyncio.run(
        run_load(
            args.target,
            calls=args.calls,
            concurrency=args.concurrency,
            rate=args.rate,
            mix=mix,
            transport=args.transport,
            timeout=args.timeout,
            auth=_auth(args.auth),
            rtp_ports=_ports(args.rtp_ports),
            progress=not args.quiet,
        )
    )
    json_path = Path(args.report)
    html_path = Path(args.html) if args.html else json_path.with_suffix(".html")
    write_reports(report, json_path, html_path)
    s = report.summary()
    print(
        f"calls {s['calls']}: answered {s['answered']}, handed back {s['handed_back']}, "
        f"caller hung up {s['caller_hung_up']}, no BYE {s['no_bye_timeout']}, "
        f"failed {s['failed']}"
    )
    print(f"expect: {s['expect_matched']}/{s['expect_checked']} matched")
    for key in ("answer_ms", "handback_ms", "rtp_jitter_ms"):
        p = s[key]
        print(f"{key:<14} p50 {p['p50']}  p95 {p['p95']}  p99 {p['p99']}  max {p['max']}")
    print(
        f"RTP loss {s['rtp_loss_pct']} %   {s['calls_per_second']} calls/s over {s['duration_s']} s"
    )
    for error in s["errors"]:
        print(f"error: {error}")
    print(f"report: {json_path}  plot: {html_path}")
    failed = s["failed"] + s["no_bye_timeout"] + (s["expect_checked"] - s["expect_matched"])
    return 1 if failed else 0


def _plan(args: argparse.Namespace, flow: IvrFlow | None = None) -> CallPlan:
    defaults = default_call_variables(ani=args.caller, dnis=args.dnis, style=args.cav_style)
    if flow is not None:
        ids = default_call_variables(ani=args.caller, dnis=args.dnis)
        defaults = flow.call_variables(
            {
                "ani": args.caller,
                "dnis": flow.transfer_to or args.dnis,
                "call_id": ids["X-CallID"],
                "session_id": ids["X-CallSessionID"],
            }
        )
        if flow.transfer_to:
            args.dnis = flow.transfer_to
    cavs = merge_call_variables(defaults, (parse_assignment(c, "--cav") for c in args.cav))
    for name in cavs:
        if not name.lower().startswith("x-"):
            raise ValueError(f"--cav {name}: call variables travel as X- headers; name it X-{name}")
    actions: list[Action] = []
    if args.script:
        actions = load_script(args.script)
    for text in args.say:
        actions.append(Say(text))
    for audio in args.audio:
        actions.append(Play(Path(audio)))
    if args.dtmf:
        actions.append(Press(args.dtmf))
    auth = _auth(args.auth)
    if args.timeout <= 0:
        raise ValueError("--timeout must be positive")
    return CallPlan(
        target=args.target,
        call_variables=cavs,
        caller=args.caller,
        dnis=args.dnis,
        transport=args.transport,
        auth=auth,
        actions=actions,
        hangup_after=args.hangup_after,
        record=Path(args.record) if args.record else None,
        timeout=args.timeout,
        rtp_ports=_ports(args.rtp_ports),
        voice=args.voice,
        tls_ca=Path(args.tls_ca) if args.tls_ca else None,
        tls_verify=not args.tls_no_verify,
        srtp=args.srtp,
    )


def _render(o: CallOutcome) -> str:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f} ms"

    lines = [f"answered: {o.final_code} {o.final_reason}   hung up by: {o.hung_up_by}"]
    if o.from_iva:
        lines.append("FromIVA:")
        for name, value in o.from_iva.pairs:
            lines.append(f'  GET(FromIVA, "{name}") = {value}')
        lines.append(f"TOSTRING(FromIVA) ~ {o.from_iva.tostring()}")
    else:
        lines.append("FromIVA: (empty: no X- headers reached Five9)")
    lines.append(
        f"timings: ringing {ms(o.ringing_ms)}, answer {ms(o.answer_ms)}, "
        f"first agent audio {ms(o.first_agent_audio_ms)}, BYE {ms(o.bye_ms)}"
    )
    lines.append(
        f"RTP from agent: {o.rtp_received} packets, {o.rtp_lost} lost, "
        f"jitter {o.rtp_jitter_ms:.1f} ms"
    )
    return "\n".join(lines)
