"""The ``byeline`` command.

Sub-commands: ``serve``, ``demo``, ``trunk validate``, ``calls list|show``.
Exit status 0 on success; otherwise non-zero with a one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import signal
import ssl
import sys
import time
from collections.abc import Sequence
from typing import Any

from . import __version__
from .config import ConfigError, ServeConfig, load_config


class CommandError(Exception):
    """A failure to report in one line, with an exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="byeline", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"byeline {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the SIP edge and the agent")
    serve.add_argument("--config", help="TOML configuration file")
    serve.add_argument("--trunk", action="append", default=[], help="LiveKit inbound trunk JSON")
    serve.add_argument("--dispatch", action="append", default=[], help="LiveKit dispatch rule JSON")
    serve.add_argument("--routes", help="routes YAML file")
    serve.add_argument(
        "--sip",
        action="append",
        default=[],
        help="listen address, e.g. udp:127.0.0.1:5060 (repeatable)",
    )
    serve.add_argument("--media-ip", help="IP for RTP and the SDP c= line")
    serve.add_argument("--rtp-ports", help="RTP port range LOW-HIGH")
    serve.add_argument("--db", help="call records database (path or SQLAlchemy URL)")
    serve.add_argument("--http", help="HTTP API address HOST:PORT")
    serve.add_argument("--max-calls", type=int, help="concurrent calls; beyond: 486")
    serve.add_argument("--media-timeout", type=float, help="seconds without RTP before fallback")
    serve.add_argument(
        "--no-input-timeout", type=float, help="override the routes file's no_input_timeout"
    )
    serve.add_argument("--tls-cert", help="certificate (PEM) for tls: listeners")
    serve.add_argument("--tls-key", help="private key (PEM) for tls: listeners")
    serve.add_argument(
        "--answer-delay", type=float, help="seconds of ringing between 180 and 200 (default 0)"
    )
    # Advanced: RFC 3261 T1; 64*T1 bounds the wait for an ACK and a BYE's response.
    serve.add_argument("--sip-t1", type=float, help=argparse.SUPPRESS)
    serve.add_argument(
        "--webhook",
        action="append",
        default=[],
        dest="webhooks",
        help="POST each call's result to this URL (repeatable)",
    )
    serve.add_argument(
        "--retention-days", type=float, help="purge call records and traces older than this"
    )
    serve.add_argument(
        "--vad-sample-rate",
        type=int,
        choices=[8000, 16000],
        help="rate the VAD and STT hear the call at (default 8000)",
    )
    serve.add_argument(
        "--vad-min-silence",
        type=float,
        help="seconds of silence that end a caller's turn (default 0.55)",
    )
    serve.add_argument(
        "--endpointing-delay",
        type=float,
        help="extra wait after the end of a turn before answering (default 0.5)",
    )
    serve.add_argument(
        "--agent-routes",
        action="append",
        default=[],
        dest="agents",
        metavar="NAME=ROUTES_FILE",
        help="an agent a dispatch rule names in room_config.agents (repeatable)",
    )
    serve.add_argument("--recordings", help="record every call as DIR/<call id>.wav (2 channels)")
    serve.add_argument(
        "--record-trunk",
        action="append",
        default=[],
        dest="record_trunks",
        help="record only calls on this trunk (name or id; repeatable)",
    )
    serve.add_argument("--recording-announcement", help="WAV played first on recorded calls")
    serve.add_argument(
        "--agent",
        choices=["voice", "dtmf"],
        help="voice: speech and keys (default); dtmf: the keypad menu only",
    )
    serve.add_argument("--log-level", help="debug, info, warning, error")
    serve.add_argument(
        "--invite-rate",
        type=float,
        help="refused or challenged INVITEs per second per source IP before the rest are "
        "dropped unanswered (default 50; 0: no limit)",
    )
    serve.add_argument(
        "--invite-burst", type=int, help="burst of refused INVITEs per source IP (default 100)"
    )
    serve.add_argument(
        "--overload-delay",
        type=float,
        help="seconds of unread SIP messages past which new INVITEs get 503 with Retry-After "
        "(default 0.25; 0: never)",
    )
    serve.add_argument(
        "--overload-records",
        type=int,
        help="call-record writes waiting for the database past which new INVITEs get 503 with "
        "Retry-After (default 50000, about 5,500 calls; 0: never)",
    )
    serve.add_argument(
        "--drop-user-agents",
        help="comma-separated User-Agent product names whose requests are dropped unanswered "
        '(default: known SIP scanners such as friendly-scanner, sipvicious, sipcli; "" for none)',
    )

    demo = sub.add_parser("demo", help="the whole loop on loopback with the bundled examples")
    demo.add_argument("--keep-db", help="write call records to this database instead of a temp one")

    trunk = sub.add_parser("trunk", help="trunk and dispatch-rule files")
    tsub = trunk.add_subparsers(dest="trunk_command", required=True)
    validate = tsub.add_parser("validate", help="validate a file as LiveKit would")
    validate.add_argument("file", nargs="+")
    validate.add_argument("--routes", help="also check that every result attribute is mapped")

    from .five9 import command as five9_command

    five9_command.add_parser(sub)

    from .livekit import command as livekit_command

    livekit_command.add_parser(sub)

    calls = sub.add_parser("calls", help="call records")
    calls.add_argument("--db", default="./byeline.db")
    csub = calls.add_subparsers(dest="calls_command")
    clist = csub.add_parser("list", help="recent calls")
    clist.add_argument("--limit", type=int, default=20)
    clist.add_argument("--json", action="store_true")
    cshow = csub.add_parser("show", help="one call with its SIP trace")
    cshow.add_argument("call_id")
    cshow.add_argument("--json", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``byeline`` console script."""
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "demo":
            from .demo import run_demo

            return run_demo(keep_db=args.keep_db)
        if args.command == "trunk":
            return _trunk_validate(args.file, args.routes)
        if args.command == "calls":
            return _calls(args)
        if args.command == "five9":
            from .five9 import command as five9_command

            return five9_command.run(args)
        if args.command == "livekit":
            from .livekit import command as livekit_command

            return livekit_command.run(args)
    except CommandError as exc:
        print(f"byeline: {exc}", file=sys.stderr)
        return exc.status
    except (ConfigError, ValueError, OSError) as exc:
        print(f"byeline: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2


def _one_line(text: str) -> str:
    return " ".join(text.split())


# -- trunk validate ----------------------------------------------------------------------


def _trunk_validate(files: list[str], routes: str | None) -> int:
    from .edge.trunk import validate_file

    status = 0
    for path in files:
        problems = validate_file(path, routes_path=routes)
        if problems:
            status = 1
            for p in problems:
                print(p, file=sys.stderr)
        else:
            print(f"{path}: valid")
    return status


# -- calls -------------------------------------------------------------------------------


def _calls(args: argparse.Namespace) -> int:
    from .store import CallStore

    store = CallStore.open(args.db)
    try:
        if args.calls_command == "show":
            record = store.get_call(args.call_id)
            if record is None:
                raise CommandError(f"no call {args.call_id!r} in {args.db}")
            if args.json:
                print(json.dumps(record.to_json(), indent=2))
            else:
                print(_format_call(record))
            return 0
        records = store.list_calls(limit=getattr(args, "limit", 20))
        if getattr(args, "json", False):
            print(json.dumps([r.to_json() for r in records], indent=2))
            return 0
        print(f"{'call':<18} {'started':<19} {'caller':<14} {'ended by':<9} {'delivery':<10} route")
        for r in records:
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started_at or 0))
            route = " ".join(f"{v}" for v in (r.route or {}).values() if not v.startswith("{"))
            print(
                f"{r.call_id:<18} {started:<19} {(r.caller or '')[:14]:<14} "
                f"{r.ended_by or '-':<9} {r.delivery or '-':<10} {route}"
            )
        return 0
    finally:
        store.close()


def _format_call(record: Any) -> str:
    lines = [f"call {record.call_id}  (SIP Call-ID {record.sip_call_id})"]
    for name in (
        "trunk_id",
        "caller",
        "callee",
        "five9_call_id",
        "ended_by",
        "delivery",
        "delivery_code",
    ):
        lines.append(f"  {name:<14} {getattr(record, name)}")
    lines.append("  BYE headers:")
    for name, value in record.bye_headers or []:
        lines.append(f"    {name}: {value}")
    for refusal in record.header_refusals or []:
        lines.append(f"    refused {refusal['name']}: {refusal['reason']}")
    lines.append("  SIP trace:")
    t0 = record.trace[0].at if record.trace else 0.0
    for m in record.trace:
        arrow = "<-" if m.direction == "in" else "->"
        lines.append(f"    {m.at - t0:8.3f} {arrow} {m.peer:<22} {m.first_line}")
    return "\n".join(lines)


# -- serve -------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    flags = {
        "trunk": args.trunk,
        "dispatch": args.dispatch,
        "routes": args.routes,
        "sip": args.sip,
        "media_ip": args.media_ip,
        "rtp_ports": args.rtp_ports,
        "db": args.db,
        "http": args.http,
        "max_calls": args.max_calls,
        "media_timeout": args.media_timeout,
        "no_input_timeout": args.no_input_timeout,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "answer_delay": args.answer_delay,
        "sip_t1": args.sip_t1,
        "agent": args.agent,
        "agents": args.agents,
        "recordings": args.recordings,
        "record_trunks": args.record_trunks,
        "recording_announcement": args.recording_announcement,
        "vad_sample_rate": args.vad_sample_rate,
        "vad_min_silence": args.vad_min_silence,
        "endpointing_delay": args.endpointing_delay,
        "webhooks": args.webhooks,
        "retention_days": args.retention_days,
        "log_level": args.log_level,
        "invite_rate": args.invite_rate,
        "invite_burst": args.invite_burst,
        "overload_delay": args.overload_delay,
        "overload_records": args.overload_records,
        "drop_user_agents": args.drop_user_agents,
    }
    cfg = load_config(args.config, flags)
    logging.basicConfig(
        level=getattr(logging, cfg.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    _use_uvloop()
    return asyncio.run(serve(cfg))


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def serve(
    cfg: ServeConfig, *, ready: asyncio.Event | None = None, stop: asyncio.Event | None = None
) -> int:
    """Run the edge until SIGTERM/SIGINT (or ``stop``); then hand every call back."""
    from .app import build_app

    app = build_app(cfg)
    await app.start()
    settle_heap()
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    live_tls = app.edge.transports.tls_context
    if live_tls is not None and cfg.tls_cert and cfg.tls_key:
        cert, key = cfg.tls_cert, cfg.tls_key
        with contextlib.suppress(NotImplementedError, RuntimeError, AttributeError):
            loop.add_signal_handler(signal.SIGHUP, lambda: reload_tls_context(live_tls, cert, key))
    if ready is not None:
        ready.set()
    print("byeline: ready on " + " ".join(str(b) for b in app.bound), file=sys.stderr, flush=True)
    await stop.wait()
    await app.stop()
    return 0


GC_THRESHOLDS = (20_000, 20, 20)
"""The cyclic collector's thresholds once serving (CPython's default is 700, 10, 10)."""


def settle_heap() -> None:
    """Take the start-up heap out of the cyclic collector's work, and collect less often.

    Everything loaded by now (the agent framework, models, trunks) lives as long as the process:
    ``gc.freeze`` moves it to the permanent generation, so no collection scans it again.  A call
    allocates a few thousand short-lived containers (messages, headers, transactions), freed by
    reference counting; with CPython's default threshold of 700 a young collection ran a few times
    per call and the full ones scanned every call kept for retransmissions: 16 % of the edge's CPU
    at 700 calls/s (bench/profile_edge.py).  Cycles are still collected, in larger batches.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """A server TLS context from PEM files, or None."""
    if not cert and not key:
        return None
    if not cert or not key:
        raise ConfigError("TLS needs both tls_cert and tls_key")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # no SSLv3, TLS 1.0 or 1.1, whatever the OS says
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls_cert/tls_key: {exc}") from None
    return ctx


def reload_tls_context(ctx: ssl.SSLContext, cert: str, key: str) -> bool:
    """Load ``cert``/``key`` again into the live server context (SIGHUP): renewed certificates
    serve every new connection; connections already open keep theirs.

    The pair is tried on a scratch context first, so a half-written or mismatched pair leaves
    the old certificate in service (logged); returns whether the new pair is in use.
    """
    log = logging.getLogger("byeline")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        log.error("TLS certificate reload failed, the previous one stays in use: %s", exc)
        return False
    log.info("TLS certificate reloaded from %s", cert)
    return True


if __name__ == "__main__":
    raise SystemExit(main())
