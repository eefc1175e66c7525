"""``byeline livekit``: the scale-out mode on a LiveKit deployment.

* ``byeline livekit worker --routes FILE [--trunk FILE] [--agent-name NAME]``: the routing
  agent as a LiveKit Agents worker (:mod:`.worker`).
* ``byeline livekit apply --trunk FILE --dispatch FILE [--dry-run]``: create or update the
  inbound trunk and the dispatch rule, matched by name, showing the difference first
  (:mod:`.apply`).

Both read ``LIVEKIT_URL``, ``LIVEKIT_API_KEY`` and ``LIVEKIT_API_SECRET``. Exit status 0 on
success, 2 with a one-line reason on stderr otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``livekit`` and its sub-commands to the ``byeline`` parser."""
    livekit = sub.add_parser("livekit", help="run on a LiveKit deployment (worker, apply)")
    lsub = livekit.add_subparsers(dest="livekit_command", required=True)

    worker = lsub.add_parser("worker", help="the routing agent as a LiveKit Agents worker")
    worker.add_argument("--routes", required=True, help="routes YAML file")
    worker.add_argument(
        "--trunk",
        help="the deployment's trunk file: lets the header guard check the BYE's headers",
    )
    worker.add_argument(
        "--agent-name",
        default=os.environ.get("LIVEKIT_AGENT_NAME") or None,
        help="the name the dispatch rule's room_config.agents gives (default five9-router)",
    )
    worker.add_argument("--no-input-timeout", type=float, help="override the routes file's")
    worker.add_argument("--log-level", default="info", help="debug, info, warning, error")

    apply = lsub.add_parser(
        "apply", help="create or update the trunk and dispatch rule (idempotent by name)"
    )
    apply.add_argument("--trunk", help="LiveKit inbound trunk JSON ({'trunk': {...}})")
    apply.add_argument("--dispatch", help="LiveKit dispatch rule JSON ({'dispatch_rule': {...}})")
    apply.add_argument("--dry-run", action="store_true", help="show the changes, make none")


def _credentials() -> tuple[str, str, str]:
    from .worker import missing_credentials

    missing = missing_credentials()
    if missing:
        raise ValueError(f"set {', '.join(missing)} (the LiveKit deployment's URL and API key)")
    return (
        os.environ["LIVEKIT_URL"].strip(),
        os.environ["LIVEKIT_API_KEY"].strip(),
        os.environ["LIVEKIT_API_SECRET"].strip(),
    )


def run(args: argparse.Namespace) -> int:
    """Run ``byeline livekit ...``."""
    try:
        if args.livekit_command == "apply":
            return _apply(args)
        return _worker(args)
    except Exception as exc:  # one line, never a traceback, for an operator's command
        print(f"byeline: {' '.join(str(exc).split()) or type(exc).__name__}", file=sys.stderr)
        return 2


def _apply(args: argparse.Namespace) -> int:
    from .apply import run_apply

    if not args.trunk and not args.dispatch:
        raise ValueError("livekit apply: give --trunk FILE, --dispatch FILE or both")
    url, key, secret = _credentials()
    asyncio.run(
        run_apply(
            url=url,
            api_key=key,
            api_secret=secret,
            trunk_path=Path(args.trunk) if args.trunk else None,
            dispatch_path=Path(args.dispatch) if args.dispatch else None,
            dry_run=args.dry_run,
            out=sys.stdout,
        )
    )
    return 0


def _worker(args: argparse.Namespace) -> int:
    from ..agent.routes import load_routes
    from ..edge.trunk import load_trunk
    from .worker import DEFAULT_AGENT_NAME, WorkerSettings, run_worker

    _credentials()
    # Checked here, before any process starts: a bad file stops the worker with its reason.
    load_routes(args.routes)
    if args.trunk:
        load_trunk(args.trunk)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    settings = WorkerSettings(
        routes=Path(args.routes).resolve(),
        trunk=Path(args.trunk).resolve() if args.trunk else None,
        agent_name=args.agent_name or DEFAULT_AGENT_NAME,
        no_input_timeout=args.no_input_timeout,
    )
    return run_worker(settings)
